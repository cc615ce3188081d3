"""``amtrain --help [OVERRIDES]``: the groups, and every key with the value this run would use.

Each key's line comes from its schema field (:func:`amtrain.config.key`). Values come from
the config composed for the given overrides, so they are the ones that apply to the
chosen method and model; a value set by a tuned file (``conf/tuned/``) or by a method's
mode defaults (``conf/mode_defaults/``) says so, with the value it replaces.
"""
from __future__ import annotations

from importlib import resources
from typing import Callable, Dict, List

from omegaconf import DictConfig

from amtrain.config import INTERNAL_GROUPS, REQUIRED_GROUPS, help_lines

PUBLIC_GROUPS = REQUIRED_GROUPS + ("experiment",)

HEADER = """\
amtrain: train networks without backprop's chain rule, by online alternating minimization
with auxiliary variables (Choromanska et al., ICML 2019), beside backprop (SGD, Adam) and
the full-batch auxiliary-variable methods (offline AM, Taylor et al.'s ADMM, dlADMM, mDLAM, BCD).

Usage: amtrain [GROUP=OPTION ...] [KEY=VALUE ...]       one run -> runs/<date>/<time>_<what>/
       amtrain -m KEY=A,B ... [name=SWEEP]              a sweep -> multirun/SWEEP/, resumable
       amtrain --help [GROUP=OPTION ...]                this help, for those choices
       amtrain --cfg job [GROUP=OPTION ...]             print the composed config
       amtrain -m --cfg job KEY=A,B ...                 list a sweep's jobs and what each would do"""

FOOTER = """\
Examples:
  amtrain dataset=mnist optim=am_adam                           # one run
  amtrain optim=am_mem mode=paper epochs=5 seed=1               # the paper's equations as written
  amtrain -m optim=am_adam,adam,sgd seed=0,1,2 name=cmp         # -> multirun/cmp/, resumable
  amtrain -m hydra/launcher=joblib hydra.launcher.n_jobs=2 ...  # local processes (submitit_slurm: SLURM)
  amtrain -m experiment=fig2_mnist_epochs                       # a paper figure's sweep
Data root: dataset.root=DIR or the AMTRAIN_DATA environment variable.
Each run writes config.yaml, metrics.csv, train.log and DONE into its folder; a folder
with DONE is skipped if its config.yaml computes the same thing, refused if not
(resume=false reruns it and moves the old outputs aside). A stopped run rerun into its
folder goes on from its checkpoint.pt (checkpoint.every_minutes).
Exit codes: 0 done, 2 bad input, 3 diverged, 75 folder in use elsewhere, 130 Ctrl-C."""


def group_options(group: str) -> List[str]:
    folder = resources.files("amtrain.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _leaves(cfg: DictConfig) -> Dict[str, str]:
    return {k: v for k, v, _ in help_lines(cfg)}


def render(overrides: List[str], compose: Callable[[List[str]], DictConfig]) -> str:
    from amtrain.cli import compose as compose_unchecked

    cfg = compose(overrides)
    choices = cfg.hydra.runtime.choices
    # what the internal groups changed: compose without them (unchecked: that config may be invalid) and compare
    without = {g: _leaves(compose_unchecked(overrides + [f"~{g}"], hydra_node=True)) for g in INTERNAL_GROUPS
               if choices.get(g)}
    lines = [HEADER, "", "Groups (choose one option each; * marks the one in use):"]
    for group in PUBLIC_GROUPS:
        chosen = choices.get(group)
        opts = " ".join(("*" if o == chosen else "") + o for o in group_options(group))
        lines.append(f"  {group:<11} {opts}")
    lines.append("  (" + ", ".join(INTERNAL_GROUPS) + " and local are picked automatically or by hand for a "
                 "cluster: see conf/tuned/README.md)")
    picked = " ".join(f"{g}={choices.get(g)}" for g in PUBLIC_GROUPS if choices.get(g))
    lines += ["", f"Keys for {picked} (override any as KEY=VALUE):"]
    rows = list(help_lines(cfg))
    width = min(max(len(f"{k}={v}") for k, v, _ in rows) + 2, 44)
    for k, v, text in rows:
        notes = []
        for group, values in without.items():
            if values.get(k) != v:
                notes.append(f"[{group}: conf/{group}/{choices.get(group)}.yaml; otherwise {values.get(k)}]")
        if not text and k.endswith(".name") and k.count(".") == 1:
            text = f"the chosen {k.split('.')[0]}"
        entry = f"{k}={v}"
        pad = " " * max(width - len(entry), 1)
        lines.append(f"  {entry}{pad}{' '.join([text] + notes).strip()}")
    lines += ["", FOOTER]
    return "\n".join(lines)
