"""The ``amtrain`` command: a thin Hydra wrapper around :func:`amtrain.train.run`.

Before handing a single run to Hydra, the overrides are composed once with the
Compose API so that a bad option or value is reported as one line (problem and fix)
with a non-zero exit, instead of Hydra's multi-line report.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from amtrain.config import register_configs
from amtrain.errors import AmtrainError

CONFIG_MODULE = "amtrain.conf"
register_configs()


def command() -> List[str]:
    """How to start ``amtrain`` from Python: the console script next to this interpreter,
    else the one on PATH, else ``python -m amtrain``."""
    import shutil

    script = Path(sys.executable).parent / "amtrain"
    if script.exists():
        return [str(script)]
    found = shutil.which("amtrain")
    return [found] if found else [sys.executable, "-m", "amtrain"]


def compose(overrides: List[str], config_name: str = "config") -> DictConfig:
    """The config ``amtrain OVERRIDES`` would run (for tests and tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)


def explain(err: Exception) -> str:
    """One line naming the problem in a composition error, and the fix."""
    text = str(err)
    m = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if m:
        group, option = m.group(1), m.group(2)
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        choices = f"; choose one of: {', '.join(options)}" if options else ""
        return f"unknown {group} '{option}'{choices}"
    m = re.search(r"Key '([^']+)' not in '([^']+)'|Could not override '([^']+)'", text)
    if m:
        key = m.group(3) or (f"{m.group(2)}.{m.group(1)}" if m.group(2) else m.group(1))
        return f"unknown config key '{key}': check the spelling with `amtrain --cfg job`"
    first_line = text.splitlines()[0] if text else type(err).__name__
    for e in (err, err.__cause__):  # OmegaConf's validation errors carry the key and a message
        if e is not None and getattr(e, "full_key", None):
            return f"bad value for '{e.full_key}': {str(getattr(e, 'msg', None) or e).splitlines()[0]}"
    return first_line


def _is_single_run(argv: List[str]) -> bool:
    return not any(a.startswith("-") for a in argv)


def preflight(argv: List[str]) -> Optional[str]:
    """Compose a single run's config; return a one-line error, or None when it is valid."""
    if not _is_single_run(argv):
        return None
    try:
        compose(argv)
    except Exception as e:  # Hydra and OmegaConf raise many types here
        return explain(e)
    return None


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    from amtrain.train import run

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN and cfg.resume and (out_dir / "DONE").exists():
        logging.getLogger("amtrain").info("skipping %s: already finished (DONE; resume=false reruns it)", out_dir)
        return None
    try:
        metrics = run(cfg, out_dir)
    except AmtrainError as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # recorded in the job dir by run(); the sweep goes on
        print(f"amtrain: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    return metrics.get("test/acc")


def main() -> None:
    error = preflight(sys.argv[1:])
    if error:
        print(f"amtrain: error: {error}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
