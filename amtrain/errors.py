"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""


class AmtrainError(Exception):
    """Base class: the message names the problem and the fix, on one line."""

    exit_code = 2


class ConfigError(AmtrainError):
    """A config value that cannot work (unknown option, incompatible choices)."""


class DataError(AmtrainError):
    """Missing, truncated or corrupt data files."""


class DivergenceError(AmtrainError):
    """The training loss became NaN or infinite."""

    exit_code = 3
