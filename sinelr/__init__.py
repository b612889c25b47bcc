"""sinelr: sine-activated low-rank matrices, W = sin(omega U V^T) / g (Ji et al., ICLR 2025)."""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .errors import ConfigError, DataError, SinelrError

__version__ = "0.1.0"
__all__ = [
    "sine_lowrank_weight",
    "sine_lowrank_linear",
    "LowRankLinear",
    "SineLowRankLinear",
    "DEFAULT_OMEGA",
    "convert",
    "parameter_report",
    "ParameterReport",
    "save_pretrained",
    "from_pretrained",
    "merge_and_unload",
    "merge",
    "SinelrError",
    "ConfigError",
    "DataError",
    "__version__",
]

# Public names resolved on first access, so `import sinelr.cli` (and `sinelr --help`) does not load torch.
_LAZY = {
    "convert": ".convert", "parameter_report": ".convert", "ParameterReport": ".convert",
    "sine_lowrank_linear": ".functional", "sine_lowrank_weight": ".functional",
    "DEFAULT_OMEGA": ".layers", "LowRankLinear": ".layers", "SineLowRankLinear": ".layers",
    "save_pretrained": ".serialization", "from_pretrained": ".serialization", "merge": ".serialization",
    "merge_and_unload": ".serialization",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sinelr' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`sinelr.convert` is the function, as it was when this file imported it eagerly.

    Importing the submodule `sinelr.convert` sets the package attribute to the module; keep the
    function of the same name there instead.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "convert" and isinstance(value, types.ModuleType):
            value = value.convert
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
