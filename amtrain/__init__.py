"""amtrain: online alternating minimization with auxiliary variables (Choromanska et al., ICML 2019)."""

__version__ = "0.1.0"
