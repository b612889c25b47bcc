"""Sine-LoRA and sine-DoRA as a native Hugging Face PEFT method (peft >= 0.21, < 0.22).

    import sinelr.peft                      # registers the method with PEFT (once per process)
    from sinelr.peft import SineLoraConfig
    model = get_peft_model(base, SineLoraConfig(r=4, omega=200.0, target_modules=["query", "value"]))

Only `_registry` touches PEFT internals; see docs/peft.md for the design.
"""
from ._registry import PEFT_TYPE_NAME, STORED_PEFT_TYPE, check_peft_version

check_peft_version()

from .config import DEFAULT_OMEGA, DEFAULT_OMEGA_ADAPTER, SineLoraConfig  # noqa: E402
from .layer import SineLoraLinear  # noqa: E402
from .model import SineLoraModel  # noqa: E402
from .variants import SineDoraLinearVariant  # noqa: E402
from .diagnostics import UpdateStats, adapted_layers, update_stats  # noqa: E402
from . import _registry  # noqa: E402
# Re-exported so that recipes reach PEFT only through sinelr.peft (plain LoRA / DoRA baselines, and the
# high-rank peers of the GLUE comparison).
from peft import HiraConfig, LoraConfig, PeftModel, RandLoraConfig, VeraConfig, get_peft_model  # noqa: E402

_registry.register(SineLoraConfig, SineLoraModel)
_registry.install_load_guard()

__all__ = [
    "SineLoraConfig",
    "SineLoraModel",
    "SineLoraLinear",
    "SineDoraLinearVariant",
    "UpdateStats",
    "update_stats",
    "adapted_layers",
    "DEFAULT_OMEGA",
    "DEFAULT_OMEGA_ADAPTER",
    "PEFT_TYPE_NAME",
    "STORED_PEFT_TYPE",
    "LoraConfig",
    "HiraConfig",
    "RandLoraConfig",
    "VeraConfig",
    "PeftModel",
    "get_peft_model",
]
