"""sinelr: sine-activated low-rank matrices, W = sin(omega U V^T) / g (Ji et al., ICLR 2025)."""
from .convert import ParameterReport, convert, parameter_report
from .functional import sine_lowrank_linear, sine_lowrank_weight
from .layers import DEFAULT_OMEGA, LowRankLinear, SineLowRankLinear
from .serialization import from_pretrained, merge, merge_and_unload, save_pretrained

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
    "__version__",
]
