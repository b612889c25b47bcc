"""The library's own error types: what the CLI prints as one line (anything else is a bug and shows its traceback).

Every type also subclasses the builtin it refines (ValueError, FileNotFoundError, ...), so
`except ValueError` keeps working. This module imports nothing, so every layer can use it.
"""
from __future__ import annotations

__all__ = ["SinelrError", "ConfigError", "DataError", "DataNotFoundError", "AdapterError", "NonFiniteLossError"]


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
