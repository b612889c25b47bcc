"""The occupancy coordinate MLP of the paper (after WIRE): Gaussian activations exp(-(s x)^2), with the
hidden width x width layers dense, low-rank or sine low-rank through a `linear_layer` factory."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from ..kinds import DEFAULT_OMEGA_FROM_SCRATCH, linear_factory

__all__ = ["GaussianActivation", "OccupancyMLP", "hidden_linear_factory", "LinearFactory"]

LinearFactory = Callable[[int, int], nn.Module]


class GaussianActivation(nn.Module):
    """exp(-(scale * x)^2): the Gaussian activation of WIRE's Gauss networks; `scale` sets its width."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"Gaussian activation scale must be > 0, got {scale}")
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return torch.exp(-(self.scale * x) ** 2)
        # Inference: one buffer, no temporaries (the activation dominates the cost of a dense grid).
        return (x * self.scale).square_().neg_().exp_()

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


def hidden_linear_factory(kind: str = "dense", rank: Optional[int] = None,
                          omega: float = DEFAULT_OMEGA_FROM_SCRATCH, gain: Optional[float] = None) -> LinearFactory:
    """A factory (in, out) -> layer for the hidden layers: 'dense' (nn.Linear), 'lowrank' or 'sine' at `rank`.

    A thin name for `sinelr.kinds.linear_factory`, the one layer-kind lookup."""
    return linear_factory(kind, rank, omega=omega, gain=gain)


class OccupancyMLP(nn.Module):
    """x (.., 3) -> occupancy logit (..,): Linear(3, W), Gauss, [hidden(W, W), Gauss] x (hidden_layers - 1), Linear(W, 1).

    `hidden_layers` counts the layers of W activations (the paper: 2 of width 256). Only the W x W
    layers come from `linear_layer`; the 3 -> W input layer (rank <= 3 already) and the W -> 1 output
    layer stay dense, so "rank k" means the rank of the hidden weight matrices.
    """

    def __init__(self, in_features: int = 3, hidden_features: int = 256, hidden_layers: int = 2,
                 scale: float = 10.0, linear_layer: LinearFactory = nn.Linear) -> None:
        super().__init__()
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be >= 1, got {hidden_layers}")
        if hidden_features < 1:
            raise ValueError(f"hidden_features must be >= 1, got {hidden_features}")
        layers = [nn.Linear(in_features, hidden_features), GaussianActivation(scale)]
        for _ in range(hidden_layers - 1):
            layers += [linear_layer(hidden_features, hidden_features), GaussianActivation(scale)]
        layers.append(nn.Linear(hidden_features, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)
