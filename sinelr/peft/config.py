"""`SineLoraConfig`: PEFT's `LoraConfig` plus the sine frequency `omega` and the gain `g`.

The adapter update is delta W = sin(omega * B A) / g * scaling (scaling = lora_alpha / r, or
lora_alpha / sqrt(r) with use_rslora), so every LoRA field keeps its meaning.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from peft import LoraConfig

from ..functional import _check_positive_real, check_gain, check_omega
from . import _registry

__all__ = ["SineLoraConfig", "DEFAULT_OMEGA_ADAPTER", "DEFAULT_OMEGA"]

# Ji et al. use omega in the hundreds for LoRA fine-tuning of transformers (the sine argument
# omega * B A is tiny at init because B starts at zero and grows slowly).
# omega of a sine-LoRA / sine-DoRA adapter on a pretrained model (a layer trained from scratch has its
# own default: sinelr.layers.DEFAULT_OMEGA_FROM_SCRATCH).
DEFAULT_OMEGA_ADAPTER = 200.0
DEFAULT_OMEGA = DEFAULT_OMEGA_ADAPTER  # the older name

# LoRA options whose initialisation or forward would bypass the sine update.
_UNSUPPORTED_INITS = ("pissa", "corda", "olora", "loftq", "eva", "mica", "lora_ga", "orthogonal")


@dataclass
class SineLoraConfig(LoraConfig):
    """Configuration of a sine-LoRA (or, with `use_dora=True`, sine-DoRA) adapter.

    Same fields as `peft.LoraConfig` (r, lora_alpha, lora_dropout, target_modules, use_dora,
    modules_to_save, ...) plus:
      omega: frequency of the sine, a finite float > 0.
      gain: divisor g of the sine; None means sqrt(in_features) of each adapted layer (the paper's
        default, which keeps the update's variance independent of the layer width).
      init_argument_rms: None (default) starts as PEFT does, B = 0: the argument omega B A grows from 0, and
        while it is small sine-LoRA trains like LoRA+ (docs/peft.md). A value s > 0 is the offset start:
        A and B drawn so that omega B A starts with rms s, where sin is far from linear and sin(omega B A)
        has rank far above r, and the update is (sin(omega B A) - sin(omega B0 A0)) / g * scaling, zero
        at the start. B0, A0 are saved with the adapter (trainable parameters unchanged).
    """

    omega: float = field(default=DEFAULT_OMEGA_ADAPTER, metadata={"help": "Sine frequency omega (finite, > 0)."})
    gain: Optional[float] = field(
        default=None, metadata={"help": "Sine gain g (> 0); None = sqrt(in_features) of each layer."}
    )
    init_argument_rms: Optional[float] = field(
        default=None,
        metadata={"help": "None: B = 0 start. s > 0: offset start, the argument omega B A starts with rms s and "
                          "the update subtracts its starting value (zero at the start)."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, numbers.Integral):
            raise TypeError(f"r must be an integer >= 1, got {self.r!r} of type {type(self.r).__name__}")
        if self.r < 1:
            raise ValueError(f"r must be an integer >= 1, got {self.r}")
        for key, value in (self.rank_pattern or {}).items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"rank_pattern[{key!r}] must be an integer >= 1, got {value!r}")
        self.omega = check_omega(self.omega)
        if self.gain is not None:
            self.gain = check_gain(self.gain)
        # lora_alpha scales the update (alpha / r): NaN, inf, 0 or a negative value give a broken or inert adapter.
        alpha = _check_positive_real("lora_alpha", self.lora_alpha)
        self.lora_alpha = int(alpha) if isinstance(self.lora_alpha, numbers.Integral) else alpha
        for key, value in (self.alpha_pattern or {}).items():
            _check_positive_real(f"alpha_pattern[{key!r}]", value)
        if (isinstance(self.lora_dropout, bool) or not isinstance(self.lora_dropout, numbers.Real)
                or not 0.0 <= float(self.lora_dropout) < 1.0):
            raise ValueError(f"lora_dropout must be a number in [0, 1), got {self.lora_dropout!r}")
        init = self.init_lora_weights
        if self.init_argument_rms is not None:
            self.init_argument_rms = _check_positive_real("init_argument_rms", self.init_argument_rms)
            if init is not True:
                raise ValueError(
                    f"init_argument_rms={self.init_argument_rms!r} draws A and B itself (the offset start); "
                    f"init_lora_weights must stay True, got {init!r}"
                )
        if isinstance(init, str) and init.lower().startswith(_UNSUPPORTED_INITS):
            raise ValueError(
                f"init_lora_weights={init!r} is not supported by sine-LoRA; use True (B = 0, delta W = 0 at start), "
                "'gaussian' or False"
            )
        if self.target_parameters:
            raise ValueError("target_parameters is not supported by sine-LoRA; use target_modules")
        super().__post_init__()
        self.peft_type = _registry.sine_peft_type()

    def to_dict(self) -> dict[str, Any]:
        """The dict written to adapter_config.json; peft_type is the self-explaining stored string."""
        out = super().to_dict()
        out["peft_type"] = _registry.STORED_PEFT_TYPE
        return out

    def resolved_gain(self, in_features: int) -> float:
        """The gain used for a layer with `in_features` inputs: `gain`, or sqrt(in_features) when None."""
        return float(self.gain) if self.gain is not None else math.sqrt(in_features)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: Optional[str] = None, **kwargs: Any):
        """Load a sine-LoRA config; refuse a directory that holds another PEFT method or a broken weight file.

        For a local directory the adapter weights next to the config are checked before anything is
        built (readable, not truncated), so a failing load leaves the base model untouched.
        """
        path = str(pretrained_model_name_or_path)
        directory = os.path.join(path, subfolder) if subfolder else path
        if os.path.isdir(directory):
            config_file = os.path.join(directory, "adapter_config.json")
            if not os.path.isfile(config_file):
                raise FileNotFoundError(f"no adapter_config.json in {directory}")
            try:
                with open(config_file, encoding="utf-8") as handle:
                    stored = json.load(handle)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{config_file} is not valid JSON: {exc}") from exc
            peft_type = stored.get("peft_type") if isinstance(stored, dict) else None
            if peft_type not in (_registry.STORED_PEFT_TYPE, _registry.PEFT_TYPE_NAME):
                raise ValueError(
                    f"{config_file} describes a {peft_type!r} adapter, not sine-LoRA "
                    f"(expected peft_type {_registry.STORED_PEFT_TYPE!r}); load it with its own config class"
                )
            from .model import check_adapter_weights  # local import: model imports this module

            shapes = check_adapter_weights(directory)
        else:
            shapes = None
        config = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        if not isinstance(config, SineLoraConfig):
            raise ValueError(f"{path} holds a {type(config).__name__}, not a SineLoraConfig")
        # remembered (not a dataclass field, so not saved) for the shape check before injection
        object.__setattr__(config, "_checkpoint_shapes", shapes)
        return config
