"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""


class AmtrainError(Exception):
    """Base class: the message names the problem and the fix, on one line."""

    exit_code = 2


class ConfigError(AmtrainError):
    """A config value that cannot work (unknown option, out of range, incompatible choices)."""


class DataError(AmtrainError):
    """Missing, truncated or corrupt data files, or data holding NaN or inf."""


class OutputError(AmtrainError):
    """An output path that cannot be written (read-only, a file where a folder should be, ...)."""


class DivergenceError(AmtrainError):
    """The training loss became NaN, infinite, or far above its starting value."""

    exit_code = 3


class FolderBusy(AmtrainError):
    """Another process holds the run folder's lock: that run is in progress elsewhere."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): try again later


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM during a run (a BaseException, like KeyboardInterrupt)."""

    exit_code = 130

    def __init__(self, how: str = "Ctrl-C"):
        super().__init__(how)
        self.how = how


def failure_line(e: BaseException, where=None) -> str:
    """The one-line reason a run ended with ``e`` (FAILED's first line, and the sweep's summary).

    ``where``: ``{"epoch", "step"}`` reached when it stopped; None when it stopped before
    training began (e.g. SLURM's warning signal while the job was still importing torch)."""
    at = f"at epoch {where['epoch']}, step {where['step']}" if where is not None else "before training started"
    # the message's first line only: an exception raised inside OmegaConf (a signal handler's,
    # while the loop read the config) comes back with OmegaConf's key and types on more lines
    message = (str(e).splitlines() or [""])[0]
    if isinstance(e, AmtrainError):
        return message
    if isinstance(e, (KeyboardInterrupt, Interrupted)):
        how = e.how if isinstance(e, Interrupted) else "Ctrl-C"
        return (f"interrupted ({how}) {at}: rerun the same command (a single run: with hydra.run.dir= this "
                "folder) to go on from its last checkpoint, if it wrote one")
    if type(e).__name__ == "UncompletedJobError":  # submitit, on SLURM's warning signal before the time limit
        return f"stopped by SLURM before the end, {at} ({message}): the job needs more than hydra.launcher.timeout_min"
    if isinstance(e, SystemExit):  # submitit requeues a preempted job by exiting; the requeued run resumes
        return f"stopped {at} (exit {e.code}): requeued by the launcher"
    return f"{type(e).__name__}: {message}"
