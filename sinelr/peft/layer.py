"""The sine-LoRA layer: PEFT's LoRA `Linear` whose update is sin(omega * B A) / g * scaling (+ an optional lora_B bias).

Everything except the update itself is PEFT's: adapter dicts, scaling, dropout, active/disabled
adapters, merge/unmerge bookkeeping (including the lora_B bias of `lora_bias=True`) and the variant
plumbing (`resolve_lora_variant`). Forward, `get_delta_weight` (used by merge and unmerge) and the
sine-DoRA variant all go through `sinelr.functional`, the one place the formula lives. In eval mode
without autograd the update is built once per adapter and reused until anything it depends on changes.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import LoraLayer
from peft.utils.other import transpose

from ..functional import check_gain, check_omega, compute_dtype_for, sine_lowrank_linear, sine_lowrank_weight

__all__ = ["SineLoraLinear", "dispatch_sine", "SUPPORTED_LAYER_TYPES"]

try:  # GPT-2 style Conv1D stores its weight as (in, out): fan_in_fan_out
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is part of the [peft] extra
    Conv1D = None

SUPPORTED_LAYER_TYPES: tuple[type, ...] = (nn.Linear,) + ((Conv1D,) if Conv1D is not None else ())

# kwargs of LoRA variants that PEFT's forward strips before calling the base layer
_VARIANT_KWARGS = ("alora_offsets",)


class SineLoraLinear(LoraLinear):
    """LoRA `Linear` (or GPT-2 `Conv1D`) with the sine update delta W = sin(omega B A) / g * scaling.

    Single active adapter (the common case): ONE GEMM with W0 + delta W through
    `sine_lowrank_linear`, which keeps nothing m x n for backward beyond the frozen base weight.
    With lora_dropout > 0 in training the update sees dropout(x) while the base sees x, so a second
    GEMM is unavoidable there: base(x) + x_drop (sin(omega B A)/g * scaling)^T. Several active
    adapters: base(x) plus each adapter's update.
    """

    other_param_names = LoraLayer.other_param_names + ("sine_omega", "sine_gain")
    # Reuse delta W across eval-mode calls (see `cached_delta`). It costs one (out x in) fp32 matrix per
    # active adapter and layer; set False on the class or on single layers to trade that memory for time.
    cache_delta_in_eval: bool = True

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: Any, **kwargs: Any) -> None:
        if not hasattr(self, "sine_omega"):
            self.sine_omega: dict[str, float] = {}
            self.sine_gain: dict[str, float] = {}
        omega = getattr(config, "omega", None)
        if omega is None:
            raise TypeError(f"SineLoraLinear needs a SineLoraConfig (with omega), got {type(config).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be an integer >= 1, got {r!r}")
        self.sine_omega[adapter_name] = check_omega(omega)
        gain = getattr(config, "gain", None)
        self.sine_gain[adapter_name] = check_gain(gain) if gain is not None else math.sqrt(self.in_features)
        self._drop_cached_deltas()
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    @property
    def lora_variants(self) -> dict:
        from .variants import SineDoraLinearVariant

        return {(): None, ("use_dora",): SineDoraLinearVariant}

    # -- the formula, through sinelr.functional -------------------------------------------------
    def base_weight_out_in(self) -> torch.Tensor:
        """The frozen base weight as (out_features, in_features) (a view for Conv1D)."""
        weight = self.get_base_layer().weight
        return weight.T if self.fan_in_fan_out else weight

    def lora_bias_term(self, adapter: str) -> Optional[torch.Tensor]:
        """scaling * lora_B.bias (lora_bias=True), added outside the sine, as PEFT's LoRA does; else None."""
        bias = self.lora_B[adapter].bias
        return None if bias is None else bias * self.scaling[adapter]

    def sine_update(self, adapter: str, x: torch.Tensor, *, with_base: bool, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x (W0 + delta W)^T + bias when with_base, else x delta W^T + bias (one GEMM either way).

        In eval mode without autograd the cached delta W of `cached_delta` is used (no sine rebuilt).
        """
        delta = self.cached_delta(adapter)
        if delta is not None:
            compute = compute_dtype_for(x)
            with torch.autocast(x.device.type, enabled=False):
                weight = delta if not with_base else self.base_weight_out_in().to(delta.dtype) + delta
                b = None if bias is None else bias.to(compute)
                return F.linear(x.to(compute), weight.to(compute), b)
        return sine_lowrank_linear(
            x,
            self.lora_B[adapter].weight,
            self.lora_A[adapter].weight.T,
            bias,
            self.sine_omega[adapter],
            self.sine_gain[adapter],
            base_weight=self.base_weight_out_in() if with_base else None,
            scale=self.scaling[adapter],
        )

    def _is_meta(self, adapter: str) -> bool:
        return self.lora_A[adapter].weight.is_meta or self.lora_B[adapter].weight.is_meta

    def sine_delta_out_in(self, adapter: str) -> torch.Tensor:
        """sin(omega B A) / g * scaling as (out_features, in_features), in at least fp32.

        On the meta device (low_cpu_mem_usage=True) only the shape and dtype exist: an empty meta tensor.
        """
        A, B = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        if self._is_meta(adapter):
            dtype = torch.promote_types(torch.promote_types(A.dtype, B.dtype), torch.float32)
            return torch.empty((B.shape[0], A.shape[1]), dtype=dtype, device="meta")
        delta = sine_lowrank_weight(B, A.T, self.sine_omega[adapter], self.sine_gain[adapter])
        return delta * self.scaling[adapter]

    def sine_argument(self, adapter: str) -> torch.Tensor:
        """omega B A, the sine's argument, as (out_features, in_features) in at least fp32."""
        A, B = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        work = torch.promote_types(torch.promote_types(A.dtype, B.dtype), torch.float32)
        return self.sine_omega[adapter] * (B.to(work) @ A.to(work))

    def linearised_delta_weight(self, adapter: str) -> torch.Tensor:
        """The update's linear part omega B A / g * scaling (sin x -> x), in the base weight's layout: the rank-r
        LoRA update that sine-LoRA equals while its argument is small (docs/peft.md)."""
        linear = self.sine_argument(adapter) / self.sine_gain[adapter] * self.scaling[adapter]
        return transpose(linear, self.fan_in_fan_out)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """sin(omega B A) / g * scaling in the base weight's layout, in at least fp32 (used by merge/unmerge)."""
        return transpose(self.sine_delta_out_in(adapter), self.fan_in_fan_out)

    # -- the eval-mode cache of delta W -------------------------------------------------------------
    def _drop_cached_deltas(self) -> None:
        self.__dict__["_sine_delta_cache"] = {}

    def _cache_key(self, adapter: str) -> tuple:
        A, B = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        return (
            A.device, A.dtype, B.dtype, self.sine_omega[adapter], self.sine_gain[adapter], self.scaling[adapter],
            torch.is_inference_mode_enabled(),
        )

    def cached_delta(self, adapter: str) -> Optional[torch.Tensor]:
        """delta W (out x in, fp32 or wider) reused across calls in eval mode, or None when it must be rebuilt.

        Used only when the layer is in eval mode and no gradient can flow to the factors (grad mode off,
        or A and B frozen). The cache holds copies of A and B (r x (in + out) numbers) and is reused only
        while the live factors equal them exactly, so in-place updates (also through `.data`) and
        reassigned parameters invalidate it; omega, gain, scaling, dtype, device and inference mode are
        part of its key. train(), merge/unmerge, set_adapter, update/delete of an adapter and every
        device or dtype move (`_apply`) drop it.
        """
        if self.training or not self.cache_delta_in_eval or self._is_meta(adapter):
            return None
        A, B = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        if torch.is_grad_enabled() and (A.requires_grad or B.requires_grad):
            return None
        cache = self.__dict__.setdefault("_sine_delta_cache", {})
        key = self._cache_key(adapter)
        entry = cache.get(adapter)
        if entry is not None:
            old_key, A_copy, B_copy, delta = entry
            if old_key == key and torch.equal(A_copy, A) and torch.equal(B_copy, B):
                return delta
        with torch.no_grad():
            delta = self.sine_delta_out_in(adapter)
            cache[adapter] = (key, A.detach().clone(), B.detach().clone(), delta)
        return delta

    def train(self, mode: bool = True) -> "SineLoraLinear":
        self._drop_cached_deltas()
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> "SineLoraLinear":
        self._drop_cached_deltas()
        return super()._apply(fn, recurse)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        self._drop_cached_deltas()
        super().merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def unmerge(self) -> None:
        self._drop_cached_deltas()
        super().unmerge()

    def set_adapter(self, adapter_names: Union[str, list[str]], inference_mode: bool = False) -> None:
        self._drop_cached_deltas()
        super().set_adapter(adapter_names, inference_mode=inference_mode)

    def delete_adapter(self, adapter_name: str) -> None:
        self._drop_cached_deltas()
        super().delete_adapter(adapter_name)

    def _fusable(self, args: tuple, kwargs: dict) -> bool:
        base = self.get_base_layer()
        return (
            not args
            and not kwargs
            and type(base) in SUPPORTED_LAYER_TYPES
            and getattr(base, "_hf_hook", None) is None
            and not base._forward_hooks
            and not base._forward_pre_hooks
        )

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        if kwargs.pop("adapter_names", None) is not None:
            raise ValueError("sine-LoRA does not support mixed-adapter batches (adapter_names=...)")
        for key in _VARIANT_KWARGS:
            kwargs.pop(key, None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        active = [name for name in self.active_adapters if name in self.lora_A]
        if not active:
            return self.base_layer(x, *args, **kwargs)
        if len(active) == 1 and self._fusable(args, kwargs):
            name = active[0]
            if name in self.lora_variant:
                return self.lora_variant[name].forward(self, active_adapter=name, x=x, result=None)
            if isinstance(self.lora_dropout[name], nn.Identity) or not self.training:
                bias = self.get_base_layer().bias
                extra = self.lora_bias_term(name)
                if extra is not None:
                    bias = extra if bias is None else bias + extra.to(bias.dtype)
                return self.sine_update(name, x, with_base=True, bias=bias)
        result = self.base_layer(x, *args, **kwargs)
        for name in active:
            if name in self.lora_variant:
                result = self.lora_variant[name].forward(self, active_adapter=name, x=x, result=result)
            else:
                x_drop = self.lora_dropout[name](x)
                update = self.sine_update(name, x_drop, with_base=False, bias=self.lora_bias_term(name))
                result = result + update.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "sinelr." + super().__repr__()


def dispatch_sine(target: nn.Module, adapter_name: str, config: Any, **kwargs: Any) -> nn.Module:
    """Wrap `target` (nn.Linear or transformers Conv1D) in a SineLoraLinear, or raise for other layer types."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    kwargs.pop("parameter_name", None)
    if isinstance(base, nn.Linear):
        config.fan_in_fan_out = False
        return SineLoraLinear(target, adapter_name, config=config, **kwargs)
    if Conv1D is not None and isinstance(base, Conv1D):
        config.fan_in_fan_out = True
        return SineLoraLinear(target, adapter_name, is_target_conv_1d_layer=True, config=config, **kwargs)
    names = ", ".join(f"{t.__module__}.{t.__name__}" for t in SUPPORTED_LAYER_TYPES)
    raise ValueError(
        f"sine-LoRA cannot adapt a layer of type {type(base).__module__}.{type(base).__name__} "
        f"({kwargs.get('target_name', '?')!r}); supported layer types: {names}. Remove it from target_modules."
    )
