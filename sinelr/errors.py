"""The library's own error types: what the CLI prints as one line (anything else is a bug and shows its traceback).

Every type also subclasses the builtin it refines (ValueError, FileNotFoundError, ...), so
`except ValueError` keeps working. This module imports nothing, so every layer can use it.
"""
from __future__ import annotations

__all__ = ["SinelrError", "ConfigError", "DataError", "DataNotFoundError", "AdapterError", "NonFiniteLossError",
           "StopRequested"]


class SinelrError(Exception):
    """Base of the errors sinelr raises for bad input or a failed run; the message names the bad value or file."""


class ConfigError(SinelrError, ValueError):
    """A config file, option or argument that does not fit what a recipe or layer expects."""


class DataError(SinelrError, ValueError):
    """A data file or folder that exists but holds something unusable (corrupt image, NaN poses, ...)."""


class DataNotFoundError(SinelrError, FileNotFoundError):
    """A dataset file or folder is missing; the message names it and how to get it."""


class AdapterError(SinelrError, ValueError):
    """A PEFT adapter folder or config that cannot be loaded as it is (wrong method, missing or broken files)."""


class NonFiniteLossError(SinelrError, RuntimeError):
    """Training produced a NaN or infinite loss; the message says at which step."""


class StopRequested(KeyboardInterrupt):
    """SIGINT / SIGTERM reached `sinelr.train.train_loop`: it finished the step it was on, saved a checkpoint there
    and stopped. Not a SinelrError (nothing was wrong): a KeyboardInterrupt, so whatever does not catch it stops as
    on Ctrl-C; the CLI prints its message and exits 130."""

    def __init__(self, message: str, step: int, checkpoint_dir: object) -> None:
        super().__init__(message)
        self.step, self.checkpoint_dir = step, checkpoint_dir
