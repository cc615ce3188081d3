"""Full-batch auxiliary-variable methods: one iteration over every training sample per epoch.

Taylor et al.'s ADMM (2016) and the methods after it: dlADMM (Wang et al., KDD 2019),
mDLAM (Wang, Li, Zhao, Neurocomputing 2022) and BCD (Zeng et al., ICML 2019). They share
:class:`~amtrain.optim.fullbatch.base.FullBatch` (per-sample state kept in chunks) and
the closed forms and solvers in ``steps.py`` and ``solvers.py``.
"""
