"""`SineLoraModel`: PEFT's `LoraModel` with sine-LoRA layers, plus checks that run before anything is injected.

Target matching, module replacement, merging, `merge_and_unload`, adapter deletion, saving and
loading are PEFT's LoRA code. This class only swaps the layer factory and refuses, before touching
the model, target layers it cannot adapt and checkpoints that do not fit the base model.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional

from torch import nn

from peft.tuners.lora import LoraModel
from peft.tuners.tuners_utils import BaseTunerLayer

from .layer import SUPPORTED_LAYER_TYPES, SineLoraLinear, dispatch_sine

__all__ = ["SineLoraModel", "check_adapter_weights", "WEIGHTS_NAME", "SINE_KEY_SUFFIX"]

WEIGHTS_NAME = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
# Checkpoint keys of the sine factors end in ".lora_A.sine_weight" / ".lora_B.sine_weight" instead of
# LoRA's ".weight": plain LoRA, even when forced with an explicit LoraConfig, finds none of its keys
# (PEFT then warns "Found missing adapter keys") instead of silently loading sine factors as LoRA.
SINE_KEY_SUFFIX = ".sine_weight"
_FACTOR_PARTS = (".lora_A.", ".lora_B.")
# Keys of the offset start's factors B0, A0 (SineLoraLinear.sine_start_B / sine_start_A buffers).
_START_PART = ".sine_start_"


def check_adapter_weights(directory: str) -> Optional[dict[str, tuple[int, ...]]]:
    """Read every tensor of `directory`/adapter_model.safetensors; return {key: shape}.

    Raises ValueError naming the file when it is corrupt or truncated. Returns None when the
    directory has no safetensors file (PEFT then looks for other formats and reports what is missing).
    """
    path = os.path.join(directory, WEIGHTS_NAME)
    if not os.path.isfile(path):
        return None
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except Exception as exc:  # safetensors raises its own error types for bad headers and short files
        raise ValueError(f"adapter weights {path} are corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    return {key: tuple(value.shape) for key, value in tensors.items()}


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    rows, cols = module.weight.shape  # Conv1D: (in, out)
    return rows, cols


class SineLoraModel(LoraModel):
    """Tuner for `SineLoraConfig`: LoRA's model logic with `SineLoraLinear` layers."""

    prefix: str = "lora_"

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        key = super()._remove_adapter_name_from_key(key, adapter_name)
        if key.endswith(".weight") and any(part in key for part in _FACTOR_PARTS):
            key = key[: -len(".weight")] + SINE_KEY_SUFFIX
        return key

    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str, *args: Any, **kwargs: Any) -> None:
        """Refused: no sine-LoRA adapter computes a weighted sum of sine-LoRA adapters.

        PEFT combines LoRA factors ("cat", "linear", "svd", "ties", ...) because B A is linear in them;
        a sine adapter's update is sin(omega B A) / g * scaling, and sin(omega (B1 A1 + B2 A2)) is not
        sin(omega B1 A1) + sin(omega B2 A2), so every combination type would silently build another
        function ("svd" would even apply the sine to an already-sined delta).
        """
        combination = kwargs.get("combination_type", args[0] if args else "svd")
        raise NotImplementedError(
            f"add_weighted_adapter({list(adapters)!r}, weights={list(weights)!r}, combination_type={combination!r}) "
            "is not supported for sine-LoRA: an adapter's update is sin(omega * B A) / g * scaling, and "
            "sin(omega * (B1 A1 + B2 A2)) != sin(omega * B1 A1) + sin(omega * B2 A2), so no combination of the "
            "factors gives the weighted sum of the adapters' updates (the result would silently be another "
            "function). For the exact sum, activate the adapters together, "
            f"model.base_model.set_adapter({list(adapters)!r}) (a weight w is lora_alpha scaled by w), and merge "
            "them into the base weights with merge_adapter() or merge_and_unload()."
        )

    @staticmethod
    def _create_new_module(lora_config: Any, adapter_name: str, target: nn.Module, **kwargs: Any) -> nn.Module:
        kwargs.pop("device_map", None)
        return dispatch_sine(target, adapter_name, lora_config, **kwargs)

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        config = self.peft_config[adapter_name]
        self._refuse_unsupported_targets(model, config)
        shapes = getattr(config, "_checkpoint_shapes", None)
        if shapes:
            self._check_offset_start(config, shapes)
            self._check_checkpoint_fits(model, shapes)
        super().inject_adapter(model, adapter_name, *args, **kwargs)

    def _refuse_unsupported_targets(self, model: nn.Module, config: Any) -> None:
        """Raise before any replacement when a matched target is not an nn.Linear / Conv1D."""
        if not config.target_modules or isinstance(config.target_modules, str) and config.target_modules == "all-linear":
            return
        supported = SUPPORTED_LAYER_TYPES + (SineLoraLinear,)
        bad = []
        for name, module in model.named_modules():
            if not name or not self._check_target_module_exists(config, name):
                continue
            if not isinstance(module, supported):
                bad.append(f"{name} ({type(module).__name__})")
            elif not isinstance(module, SineLoraLinear):
                self._refuse_rank_above_layer(config, name, module)
        if bad:
            names = ", ".join(t.__name__ for t in SUPPORTED_LAYER_TYPES)
            raise ValueError(
                f"sine-LoRA can only adapt {names} layers, but target_modules={sorted(config.target_modules) if not isinstance(config.target_modules, str) else config.target_modules!r} "
                f"also matches: {', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}. Nothing was changed."
            )

    @staticmethod
    def _refuse_rank_above_layer(config: Any, name: str, module: nn.Module) -> None:
        """r above min(in, out) adds parameters but nothing else: B A (and so sin(omega B A)) ranges over
        the same matrices as at r = min(in, out). PEFT allows it (its own tests use r=8 on 4-wide layers),
        so sinelr warns, naming the layer's shape; the recipes refuse it (sinelr glue --rank)."""
        r = next((v for k, v in (getattr(config, "rank_pattern", None) or {}).items()
                  if name == k or name.endswith("." + k)), config.r)
        n_in, n_out = _in_out(module)
        if r > min(n_in, n_out):
            warnings.warn(f"r={r} is larger than min(out, in) = {min(n_in, n_out)} of the target layer {name} "
                          f"({n_out}x{n_in}): the extra factors add parameters but no expressiveness; r <= "
                          f"{min(n_in, n_out)} gives the same function class", UserWarning, stacklevel=4)

    @staticmethod
    def _check_offset_start(config: Any, shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise before injection when a saved adapter and its config disagree about the offset start: its update
        sin(omega B A) - sin(omega B0 A0) needs the saved B0, A0, and PEFT would drop saved B0, A0 without a word."""
        starts = sorted(k for k in shapes if _START_PART in k)
        rms = getattr(config, "init_argument_rms", None)
        if rms is not None and not starts:
            raise ValueError(
                f"the adapter's config has init_argument_rms={rms!r} (an offset start), but its weight file holds no "
                f"starting factors (keys with {_START_PART!r}), without which its update cannot be rebuilt. "
                "Nothing was changed."
            )
        if rms is None and starts:
            raise ValueError(
                f"the adapter's weight file holds starting factors ({starts[0]}, ...) but its config has no "
                "init_argument_rms: loading it would drop them and give another function. Nothing was changed."
            )

    @staticmethod
    def _check_checkpoint_fits(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise before injection when a saved adapter does not fit `model` (missing module, other shapes)."""
        problems = []
        for key, shape in shapes.items():
            for part, expect in ((".lora_A" + SINE_KEY_SUFFIX, "A"), (".lora_B" + SINE_KEY_SUFFIX, "B")):
                if not key.endswith(part):
                    continue
                module_name = key[: -len(part)].removeprefix(_PEFT_PREFIX)
                try:
                    module = model.get_submodule(module_name)
                except AttributeError:
                    problems.append(f"{module_name}: no such module in the base model")
                    continue
                if not isinstance(module, SUPPORTED_LAYER_TYPES + (SineLoraLinear,)):
                    problems.append(f"{module_name}: {type(module).__name__} is not a supported layer")
                    continue
                fan_in, fan_out = _in_out(module)
                if len(shape) != 2 or (expect == "A" and shape[1] != fan_in) or (expect == "B" and shape[0] != fan_out):
                    problems.append(
                        f"{module_name}: saved lora_{expect} has shape {shape}, the base layer is "
                        f"{fan_out}x{fan_in} (out x in)"
                    )
        if problems:
            raise ValueError(
                "the sine-LoRA adapter does not fit this base model (was it trained on another one?): "
                + "; ".join(problems[:8])
                + (" ..." if len(problems) > 8 else "")
                + ". Nothing was changed."
            )
