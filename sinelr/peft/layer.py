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

from peft.tuners._buffer_dict import BufferDict
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

    # sine_start_A / sine_start_B: the factors an adapter started from when its config sets init_argument_rms
    # (frozen buffers, saved with the adapter); sine_init_rms: that rms, or None for PEFT's B = 0 start.
    other_param_names = LoraLayer.other_param_names + (
        "sine_omega", "sine_gain", "sine_init_rms", "sine_start_A", "sine_start_B")
    # Reuse delta W across eval-mode calls (see `cached_delta`). It costs one (out x in) fp32 matrix per
    # active adapter and layer; set False on the class or on single layers to trade that memory for time.
    cache_delta_in_eval: bool = True

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: Any, **kwargs: Any) -> None:
        if not hasattr(self, "sine_omega"):
            self.sine_omega: dict[str, float] = {}
            self.sine_gain: dict[str, float] = {}
            self.sine_init_rms: dict[str, Optional[float]] = {}
            self.sine_start_A = BufferDict({}, persistent=True)
            self.sine_start_B = BufferDict({}, persistent=True)
        omega = getattr(config, "omega", None)
        if omega is None:
            raise TypeError(f"SineLoraLinear needs a SineLoraConfig (with omega), got {type(config).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be an integer >= 1, got {r!r}")
        self.sine_omega[adapter_name] = check_omega(omega)
        gain = getattr(config, "gain", None)
        self.sine_gain[adapter_name] = check_gain(gain) if gain is not None else math.sqrt(self.in_features)
        self.sine_init_rms[adapter_name] = getattr(config, "init_argument_rms", None)
        for starts in (self.sine_start_A, self.sine_start_B):
            if adapter_name in starts:
                del starts[adapter_name]
        self._drop_cached_deltas()
        # PEFT's update_layer calls reset_lora_parameters (below: the offset start) before a variant's init
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    def reset_lora_parameters(self, adapter_name: str, init_lora_weights: Any) -> None:
        """PEFT's initialisation (A as nn.Linear, B = 0), or, when the adapter's config sets init_argument_rms = s,
        the offset start: A and B drawn i.i.d. N(0, sigma^2) with omega sigma^2 sqrt(r) = s, so that the argument
        omega B A starts with rms s, and copies B0, A0 kept as frozen buffers; the update is then
        (sin(omega B A) - sin(omega B0 A0)) / g * scaling, zero at the start (docs/peft.md)."""
        super().reset_lora_parameters(adapter_name, init_lora_weights)
        rms = self.sine_init_rms.get(adapter_name)
        if rms is None or adapter_name not in self.lora_A:
            return
        A, B = self.lora_A[adapter_name].weight, self.lora_B[adapter_name].weight
        std = math.sqrt(rms / (self.sine_omega[adapter_name] * math.sqrt(self.r[adapter_name])))
        with torch.no_grad():
            nn.init.normal_(A, std=std)
            nn.init.normal_(B, std=std)
        self.sine_start_A[adapter_name] = A.detach().clone()
        self.sine_start_B[adapter_name] = B.detach().clone()

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
        base = self.offset_base(adapter, self.base_weight_out_in() if with_base else None)
        return sine_lowrank_linear(
            x,
            self.lora_B[adapter].weight,
            self.lora_A[adapter].weight.T,
            bias,
            self.sine_omega[adapter],
            self.sine_gain[adapter],
            base_weight=base,
            scale=self.scaling[adapter],
        )

    def _is_meta(self, adapter: str) -> bool:
        return self.lora_A[adapter].weight.is_meta or self.lora_B[adapter].weight.is_meta

    def _scaled_sine(self, adapter: str, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """sin(omega B A) / g * scaling of the adapter's omega, gain and scaling for factors A, B, (out x in) in at
        least fp32; on the meta device (low_cpu_mem_usage=True) an empty meta tensor of that shape and dtype."""
        if A.is_meta or B.is_meta:
            dtype = torch.promote_types(torch.promote_types(A.dtype, B.dtype), torch.float32)
            return torch.empty((B.shape[0], A.shape[1]), dtype=dtype, device="meta")
        return sine_lowrank_weight(B, A.T, self.sine_omega[adapter], self.sine_gain[adapter]) * self.scaling[adapter]

    def sine_delta_out_in(self, adapter: str) -> torch.Tensor:
        """sin(omega B A) / g * scaling (minus its starting value for an offset start) as (out_features,
        in_features), in at least fp32. On the meta device only the shape and dtype exist: an empty meta tensor.
        """
        delta = self._scaled_sine(adapter, self.lora_A[adapter].weight, self.lora_B[adapter].weight)
        start = None if delta.is_meta else self.sine_start_delta(adapter)
        return delta if start is None else delta - start

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device: Optional[torch.device] = None) -> None:
        # PEFT moves buffers without its meta check (that looks at parameters only): leave meta starting factors
        # (low_cpu_mem_usage=True) where they are, as PEFT leaves meta lora_A / lora_B, until a load assigns them.
        held = {}
        for starts in (getattr(self, "sine_start_A", None), getattr(self, "sine_start_B", None)):
            if starts is not None and adapter_name in starts and starts[adapter_name].is_meta:
                held[id(starts)] = (starts, starts[adapter_name])
                del starts[adapter_name]
        try:
            super()._move_adapter_to_device_of_base_layer(adapter_name, device)
        finally:
            for starts, tensor in held.values():
                starts[adapter_name] = tensor

    def has_offset_start(self, adapter: str) -> bool:
        """Whether the adapter started from non-zero factors B0, A0 (config init_argument_rms) whose update it subtracts."""
        return adapter in self.sine_start_A

    def sine_start_delta(self, adapter: str) -> Optional[torch.Tensor]:
        """sin(omega B0 A0) / g * scaling (out x in, fp32 or wider, no grad) of an offset start, else None."""
        if not self.has_offset_start(adapter):
            return None
        with torch.no_grad():
            return self._scaled_sine(adapter, self.sine_start_A[adapter], self.sine_start_B[adapter])

    def offset_base(self, adapter: str, base: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The frozen matrix the op adds to sin(omega B A) / g * scaling: `base` (W0, or None for the update alone)
        for PEFT's start; W0 - sin(omega B0 A0) / g * scaling (or its negative part alone) for an offset start.

        The offset form is cached per adapter and form (one out x in matrix) until the starting factors, omega, gain,
        scaling, inference mode or the base weight (storage, version, dtype) change, or `_drop_cached_deltas` drops
        it (train(), merge, a device move): a training step then allocates no out x in matrix for it, and what the op
        saves for backward is that cached matrix. A base weight that takes gradients is never cached (its graph is
        per step).
        """
        if not self.has_offset_start(adapter):
            return base
        A0, B0 = self.sine_start_A[adapter], self.sine_start_B[adapter]
        trainable = base is not None and base.requires_grad and torch.is_grad_enabled()
        cacheable = not (trainable or A0.is_meta or B0.is_meta or (base is not None and base.is_meta))
        cache = self.__dict__.setdefault("_sine_start_cache", {})
        if cacheable:
            # inference mode is in the key: a tensor made under it cannot be saved for backward by a later step
            key = self._start_key(adapter) + (A0.dtype, B0.dtype, A0.device, self.sine_omega[adapter],
                                              self.sine_gain[adapter], self.scaling[adapter],
                                              torch.is_inference_mode_enabled())
            if base is not None:
                key += (base.data_ptr(), base._version, base.dtype, base.device, tuple(base.shape), base.stride())
            entry = cache.get((adapter, base is not None))
            if entry is not None and entry[0] == key:
                return entry[1]
        start = self.sine_start_delta(adapter)  # no grad; W0 takes none where cacheable
        value = -start if base is None else base.to(start.dtype) - start
        if cacheable:
            cache[(adapter, base is not None)] = (key, value)
        return value

    def _start_key(self, adapter: str) -> tuple:
        """Identity of an offset start's factors (storage and version: a load writes them in place, which bumps
        the version); () for PEFT's start. Part of both cache keys."""
        if not self.has_offset_start(adapter):
            return ()
        return tuple((t.data_ptr(), t._version) for t in (self.sine_start_A[adapter], self.sine_start_B[adapter]))

    def sine_argument(self, adapter: str) -> torch.Tensor:
        """omega B A, the sine's argument, as (out_features, in_features) in at least fp32."""
        A, B = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        work = torch.promote_types(torch.promote_types(A.dtype, B.dtype), torch.float32)
        return self.sine_omega[adapter] * (B.to(work) @ A.to(work))

    def linearised_delta_weight(self, adapter: str) -> torch.Tensor:
        """The update's first-order expansion around the factors it started from, in the base weight's layout.

        PEFT's start (B0 = 0): omega B A / g * scaling (sin x -> x), the rank-r LoRA update that sine-LoRA
        equals while its argument is small (docs/peft.md). An offset start (B0, A0):
        cos(omega B0 A0) * omega (B A - B0 A0) / g * scaling, elementwise cos.
        """
        arg = self.sine_argument(adapter)
        if self.has_offset_start(adapter):
            A0, B0 = self.sine_start_A[adapter], self.sine_start_B[adapter]
            arg0 = self.sine_omega[adapter] * (B0.to(arg.dtype) @ A0.to(arg.dtype))
            arg = torch.cos(arg0) * (arg - arg0)
        linear = arg / self.sine_gain[adapter] * self.scaling[adapter]
        return transpose(linear, self.fan_in_fan_out)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """sin(omega B A) / g * scaling in the base weight's layout, in at least fp32 (used by merge/unmerge)."""
        return transpose(self.sine_delta_out_in(adapter), self.fan_in_fan_out)

    # -- the eval-mode cache of delta W -------------------------------------------------------------
    def _drop_cached_deltas(self) -> None:
        self.__dict__["_sine_delta_cache"] = {}
        self.__dict__["_sine_start_cache"] = {}

    def _cache_key(self, adapter: str) -> tuple:
        A, B = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        return (
            A.device, A.dtype, B.dtype, self.sine_omega[adapter], self.sine_gain[adapter], self.scaling[adapter],
            torch.is_inference_mode_enabled(), self._start_key(adapter),  # an offset start's factors are in delta W
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
