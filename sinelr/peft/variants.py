"""sine-DoRA: DoRA's magnitude/direction split of W0 + sin(omega B A)/g * scaling, as a LoRA variant.

W' = m * (W0 + delta W) / ||W0 + delta W||_row, the norm detached from the graph as in DoRA (and in
PEFT). Merge and unmerge are PEFT's DoRA code, which builds delta W through the layer's
`get_delta_weight` (the sine formula), so training and merged evaluation compute the same function.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from peft.tuners.lora.dora import DoraLinearLayer
from peft.tuners.lora.variants import DoraLinearVariant

__all__ = ["SineDoraLinearVariant"]


class SineDoraLinearVariant(DoraLinearVariant):
    """DoRA variant of `SineLoraLinear` (selected by `use_dora=True`)."""

    def supports_lora_conversion(self) -> bool:
        return False

    @staticmethod
    def weight_norm(module: Any, adapter: str) -> torch.Tensor:
        """||W0 + delta W|| per output row, fp32 or wider, detached (DoRA treats it as a constant).

        On the meta device (low_cpu_mem_usage=True) an empty meta tensor of the right shape. In eval
        mode the layer's cached delta W is reused.
        """
        base = module.base_weight_out_in()
        work = torch.promote_types(base.dtype, torch.float32)
        if module._is_meta(adapter) or base.is_meta:
            return torch.empty(base.shape[0], dtype=work, device="meta")
        with torch.no_grad():
            delta = module.cached_delta(adapter)
            if delta is not None:
                return torch.linalg.vector_norm(base.to(work) + delta, dim=1)
            # W0 (or an offset start's cached W0 - sin(omega B0 A0) / g * scaling) + sin(omega B A) / g * scaling
            shifted = module.offset_base(adapter, base)
            sine = module._scaled_sine(adapter, module.lora_A[adapter].weight, module.lora_B[adapter].weight)
            return torch.linalg.vector_norm(shifted.to(work) + sine, dim=1)

    @staticmethod
    def init(module: Any, adapter_name: str, **kwargs: Any) -> None:
        if not module.lora_magnitude_vector:
            module.adapter_layer_names = module.adapter_layer_names[:] + ("lora_magnitude_vector",)
        dora_layer = DoraLinearLayer(fan_in_fan_out=module.fan_in_fan_out)
        norm = SineDoraLinearVariant.weight_norm(module, adapter_name)
        dora_layer.weight = nn.Parameter(norm.to(module.lora_A[adapter_name].weight.dtype), requires_grad=True)
        module.lora_magnitude_vector[adapter_name] = dora_layer

    @staticmethod
    def forward(
        module: Any, active_adapter: str, x: torch.Tensor, result: Optional[torch.Tensor], **kwargs: Any
    ) -> torch.Tensor:
        """The sine-DoRA output, PEFT's DoRA semantics with the sine update dW and f = m / ||W0 + dW||:

        - result=None (single active adapter, no dropout in training): f * x (W0 + dW)^T + b, ONE GEMM.
        - result given (base output, possibly with earlier adapters), no dropout in training:
          f * (result - b + x dW^T) + b, so several DoRA adapters compose as PEFT merges them.
        - dropout in training: result + (f - 1) x_d W0^T + f x_d dW^T with x_d = dropout(x), as in PEFT.
        """
        magnitude = module.lora_magnitude_vector[active_adapter].weight
        norm = SineDoraLinearVariant.weight_norm(module, active_adapter)
        mag_scale = magnitude / norm
        dropout = module.lora_dropout[active_adapter]
        bias = module.get_base_layer().bias
        if isinstance(dropout, nn.Identity) or not module.training:
            if result is None:
                y = module.sine_update(active_adapter, x, with_base=True, bias=None)
                y = y * mag_scale.to(y.dtype)
            else:
                delta = module.sine_update(active_adapter, x, with_base=False, bias=None)
                unbiased = result if bias is None else result - bias.to(result.dtype)
                y = (unbiased + delta.to(result.dtype)) * mag_scale.to(result.dtype)
            return y if bias is None else y + bias.to(y.dtype)
        if result is None:
            result = module.base_layer(x)
        x_drop = dropout(x)
        full = module.sine_update(active_adapter, x_drop, with_base=True, bias=None)
        base = F.linear(x_drop.to(full.dtype), module.base_weight_out_in().to(full.dtype))
        return result + (full * mag_scale.to(full.dtype) - base).to(result.dtype)
