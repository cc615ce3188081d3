"""Argument types the scripts share: a bad value is argparse's one-line usage error (exit 2),
naming the option and what it takes, before any work."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

CONF = Path(__file__).resolve().parents[1] / "conf"


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is below {least}")
    return value


def positive_int(text: str) -> int:
    return _whole(text, 1)


def nonnegative_int(text: str) -> int:
    return _whole(text, 0)


def device_name(text: str) -> str:
    """``cpu`` or ``cuda`` (the latter only where torch sees a CUDA device)."""
    if text not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: choose cpu or cuda")
    if text == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError("cuda: torch sees no CUDA device here; use cpu")
    return text


def options(group: str) -> List[str]:
    """The names a config group offers (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_choices(p: argparse.ArgumentParser, flag: str, given, allowed) -> None:
    """argparse's one-line error for values of ``flag`` outside ``allowed``."""
    bad = [g for g in given if g not in allowed]
    if bad:
        p.error(f"argument {flag}: {', '.join(map(repr, bad))} not among: {', '.join(allowed)}")


def add_malloc_flag(p: argparse.ArgumentParser) -> None:
    """--keep-freed-memory {true,false}: what a run's keep_freed_memory does (amtrain.allocator), so
    that a bench times the steps as training runs them."""
    p.add_argument("--keep-freed-memory", choices=("true", "false"), default="true",
                   help="glibc keeps large freed arrays for the next step, as a run's keep_freed_memory=true "
                        "(default true)")


def apply_malloc_flag(args) -> None:
    if args.keep_freed_memory == "true":
        from amtrain.allocator import keep_freed_memory

        keep_freed_memory()
