"""Does a sine-LoRA adapter work in the sine's nonlinear range, and does its update use rank above r?

    from sinelr.peft import update_stats
    for name, s in update_stats(model).items():      # after (or during) training
        print(name, s.rank, s.arg_rms, s.energy_beyond_rank, s.linear_gap)

From PEFT's start (B = 0) the argument omega B A of a sine-LoRA update begins at 0, where sin x ~ x: there the
update is a rank-r LoRA update (and, under Adam, sine-LoRA trains like LoRA+ with B's rate omega / g times A's;
docs/peft.md). The rank above r that the sine can add needs arguments of order one (docs/theory.md). These numbers
say where a trained adapter is: `arg_rms` and `arg_max` of the argument, `linear_gap`, the relative distance of the
update from its linear part (for an offset start, its expansion around the start), `energy_beyond_rank`, the share of
||delta W||_F^2 outside its top r singular directions (0 for a plain LoRA update, whose rank is r), and
`relative_norm`, ||delta W|| / ||W0||. Plain LoRA layers get the rank measures and the relative norm only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..spectral import energy_beyond, stable_rank

__all__ = ["UpdateStats", "update_stats", "adapted_layers"]


@dataclass(frozen=True)
class UpdateStats:
    """One adapted layer's update delta W (out x in) under one adapter."""

    rank: int
    energy_beyond_rank: float  # share of ||delta W||_F^2 outside the top `rank` singular directions
    stable_rank: float  # ||delta W||_F^2 / ||delta W||_op^2
    arg_rms: Optional[float] = None  # rms of omega B A over its entries (sine layers only)
    arg_max: Optional[float] = None  # max |omega B A|
    linear_gap: Optional[float] = None  # ||delta W - its linear part|| / ||delta W|| (0 for a zero update)
    relative_norm: Optional[float] = None  # ||delta W||_F / ||W0||_F (None while the adapter is merged into W0)


def adapted_layers(model: torch.nn.Module, adapter: str = "default") -> Dict[str, torch.nn.Module]:
    """{module name: layer} of every LoRA-family layer of `model` (a PeftModel or the model inside it) that holds
    `adapter`; the names are those of the modules in the base model when given the PeftModel's base model."""
    return {name: m for name, m in model.named_modules()
            if hasattr(m, "get_delta_weight") and adapter in getattr(m, "lora_A", {})}


def _layer_stats(layer, adapter: str) -> UpdateStats:
    delta = layer.get_delta_weight(adapter).detach().double()
    rank = int(layer.r[adapter])
    stats = dict(rank=rank, energy_beyond_rank=energy_beyond(delta, rank), stable_rank=stable_rank(delta))
    if not getattr(layer, "merged", False):  # merged, the base layer holds W0 + delta W (DoRA: rescaled), not W0
        base = float(layer.get_base_layer().weight.detach().double().norm())
        stats["relative_norm"] = float(delta.norm()) / base if base > 0 else float("inf")
    if hasattr(layer, "sine_argument"):
        arg = layer.sine_argument(adapter).detach().double()
        linear = layer.linearised_delta_weight(adapter).detach().double()
        norm = float(delta.norm())
        stats.update(arg_rms=float(arg.pow(2).mean().sqrt()), arg_max=float(arg.abs().max()),
                     linear_gap=float((delta - linear).norm()) / norm if norm > 0 else 0.0)
    return UpdateStats(**stats)


def update_stats(model: torch.nn.Module, adapter: str = "default") -> Dict[str, UpdateStats]:
    """{module name: UpdateStats} of every layer of `model` that holds `adapter` (sine-LoRA / sine-DoRA and plain
    LoRA / DoRA layers alike). Raises ValueError naming the adapters present when none holds `adapter`."""
    layers = adapted_layers(model, adapter)
    if not layers:
        present = sorted({a for m in model.modules() for a in getattr(m, "lora_A", {})})
        raise ValueError(f"no LoRA-family layer of this model holds an adapter named {adapter!r}"
                         + (f" (adapters present: {present})" if present else " (it has no LoRA-family layer)"))
    with torch.no_grad():
        return {name: _layer_stats(m, adapter) for name, m in layers.items()}
