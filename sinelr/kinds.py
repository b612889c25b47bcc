"""The one layer-kind lookup: "dense", "lowrank", "sine" -> a factory (in, out, bias) -> nn.Module,
re-exporting the from-scratch default omega (sinelr.layers.DEFAULT_OMEGA_FROM_SCRATCH; adapters have
sinelr.peft.DEFAULT_OMEGA_ADAPTER): one default per meaning, each defined once."""
from __future__ import annotations

from typing import Callable, Optional

import torch.nn as nn

from .functional import check_omega
from .layers import DEFAULT_OMEGA_FROM_SCRATCH, LowRankLinear, SineLowRankLinear

__all__ = ["KINDS", "FACTORED_CLASSES", "canonical_kind", "linear_factory", "LinearFactory",
           "DEFAULT_OMEGA_FROM_SCRATCH"]

KINDS = ("dense", "lowrank", "sine")
_ALIASES = {"full": "dense", "dense": "dense", "lowrank": "lowrank", "low-rank": "lowrank", "sine": "sine"}

# The factored kinds and their layer classes (what sinelr.convert swaps in, what save_pretrained records).
FACTORED_CLASSES = {"sine": SineLowRankLinear, "lowrank": LowRankLinear}

LinearFactory = Callable[..., nn.Module]


def canonical_kind(kind: str) -> str:
    """'dense' | 'lowrank' | 'sine' for a kind name ('full' is an alias of 'dense')."""
    if not isinstance(kind, str) or kind not in _ALIASES:
        raise ValueError(f"layer kind must be one of {list(KINDS)} (or 'full' for dense), got {kind!r}")
    return _ALIASES[kind]


def linear_factory(kind: str, rank: Optional[int] = None, omega: float = DEFAULT_OMEGA_FROM_SCRATCH,
                   gain: Optional[float] = None) -> LinearFactory:
    """A factory `(in_features, out_features, bias=True) -> layer` for `kind`.

    dense -> nn.Linear; lowrank -> LowRankLinear(rank); sine -> SineLowRankLinear(rank, omega, gain).
    Models take this factory by injection (timm's `mlp_layer=` style) so one lookup serves all.
    """
    kind = canonical_kind(kind)
    if kind == "dense":
        return lambda i, o, bias=True: nn.Linear(i, o, bias=bias)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"layer kind {kind!r} needs an int rank >= 1, got {rank!r}")
    if kind == "lowrank":
        return lambda i, o, bias=True: LowRankLinear(i, o, rank, bias=bias)
    omega = check_omega(omega)
    return lambda i, o, bias=True: SineLowRankLinear(i, o, rank, omega=omega, gain=gain, bias=bias)
