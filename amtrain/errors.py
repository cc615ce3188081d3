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
