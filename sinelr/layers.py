"""Drop-in replacements for nn.Linear: LowRankLinear (W = U V^T) and SineLowRankLinear (W = sin(omega U V^T) / g).

Shapes follow the paper: U is (out_features, rank), V is (in_features, rank). Both layers allocate
their parameters empty and fill them in `reset_parameters()`, so meta-device init, `from_linear` and
`sinelr.convert` share one init path.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import check_gain, check_omega, check_rank, compute_dtype_for, sine_lowrank_linear, sine_lowrank_weight

__all__ = ["LowRankLinear", "SineLowRankLinear", "DEFAULT_OMEGA_FROM_SCRATCH", "DEFAULT_OMEGA"]

# The paper's ViT/NeRF runs use omega in the hundreds with this init (Tab. 5: best 500 at k=1 on
# CIFAR-100). 100 is the value its code uses as a general default; recipes set their own.
# omega of a sine low-rank layer trained from scratch (SineLowRankLinear, sinelr.convert, the models);
# an adapter on a pretrained model has its own default: sinelr.peft.DEFAULT_OMEGA_ADAPTER.
DEFAULT_OMEGA_FROM_SCRATCH = 100.0
DEFAULT_OMEGA = DEFAULT_OMEGA_FROM_SCRATCH  # the older name

InitMode = Literal["fresh", "svd"]


def _init_factors(
    U: torch.Tensor, V: torch.Tensor, bias: Optional[torch.Tensor], in_features: int,
    generator: Optional[torch.Generator] = None,
) -> None:
    """Kaiming-uniform init as in the paper's code: U (out, k) with fan_in = k, V^T (k, in) with fan_in = in.

    `kaiming_uniform_(a=sqrt(5))` gives the bound 1/sqrt(fan_in), so U ~ U(+-1/sqrt(k)) and
    V ~ U(+-1/sqrt(in)): U V^T then has entries of std 1/(3 sqrt(in)), the scale of nn.Linear's init.
    """
    with torch.no_grad():
        nn.init.kaiming_uniform_(U, a=math.sqrt(5), generator=generator)
        bound_v = 1.0 / math.sqrt(in_features)
        V.uniform_(-bound_v, bound_v, generator=generator)
        if bias is not None:
            bias.uniform_(-bound_v, bound_v, generator=generator)


class _FactoredLinear(nn.Module):
    """Shared state of the two factored layers: U, V, bias, shape checks and from_linear plumbing."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = check_rank(rank, in_features, out_features)
        kw = {"device": device, "dtype": dtype}
        self.U = nn.Parameter(torch.empty(out_features, self.rank, **kw))
        self.V = nn.Parameter(torch.empty(in_features, self.rank, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_factors(self.U, self.V, self.bias, self.in_features)

    def _check_input(self, x: torch.Tensor) -> None:
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got dtype {x.dtype}; "
                            f"convert it first, e.g. x.float()")
        # As nn.Linear: outside autocast the input must have the parameters' dtype (no silent up- or down-cast).
        if x.dtype != self.U.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"{type(self).__name__} has {self.U.dtype} parameters but got a {x.dtype} input; "
                            f"cast one of them (x.to({self.U.dtype}) or layer.to({x.dtype}))")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects inputs with last dimension in_features={self.in_features}, "
                f"got shape {tuple(x.shape)}"
            )

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) weight this layer applies, detached."""
        raise NotImplementedError

    def to_linear(self) -> nn.Linear:
        """An nn.Linear with this layer's weight merged in: the same function at dense inference cost."""
        weight = self.dense_weight()
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=weight.device, dtype=self.U.dtype)
        with torch.no_grad():
            lin.weight.copy_(weight)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    @staticmethod
    def _check_linear(linear: nn.Module) -> nn.Linear:
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        return linear

    def _copy_bias_from(self, linear: nn.Linear) -> None:
        if self.bias is not None and linear.bias is not None:
            with torch.no_grad():
                self.bias.copy_(linear.bias)

    def _set_factors_from_svd(self, target: torch.Tensor) -> None:
        """U, V := the best rank-k factorisation of `target` (out, in), split as U sqrt(S), V sqrt(S)."""
        u, s, vh = torch.linalg.svd(target.detach().double(), full_matrices=False)
        k = self.rank
        root = s[:k].sqrt()
        with torch.no_grad():
            self.U.copy_(u[:, :k] * root)
            self.V.copy_(vh[:k].T * root)


class LowRankLinear(_FactoredLinear):
    """y = x V U^T + b: a rank-k linear layer with k (in + out) weights, computed as two thin GEMMs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return F.linear(F.linear(x, self.V.T), self.U, self.bias)

    def dense_weight(self) -> torch.Tensor:
        return (self.U @ self.V.T).detach()

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, init: InitMode = "svd") -> "LowRankLinear":
        """A LowRankLinear standing for `linear`: truncated SVD of its weight (init="svd") or a fresh init."""
        linear = cls._check_linear(linear)
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        if init == "svd":
            layer._set_factors_from_svd(linear.weight)
        elif init != "fresh":
            raise ValueError(f"init must be 'svd' or 'fresh', got {init!r}")
        layer._copy_bias_from(linear)
        return layer

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, bias={self.bias is not None}"


class SineLowRankLinear(_FactoredLinear):
    """y = x (sin(omega U V^T) / gain)^T + b: k (in + out) weights, rank up to min(in, out).

    gain defaults to sqrt(in_features), the scaling the authors' code uses: with the Kaiming init of
    `_init_factors`, sin(.) has entries of order 1, and dividing by sqrt(in) gives outputs of the
    same scale as nn.Linear's. Training uses the memory-lean op of `sinelr.functional` (nothing m x n
    is kept for backward). In eval mode without autograd the weight is built once and cached until a
    parameter changes (in-place updates, load_state_dict, .to()) or the layer goes back to train().
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        omega: float = DEFAULT_OMEGA_FROM_SCRATCH,
        gain: Optional[float] = None,
        bias: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        self.omega = check_omega(omega)
        self.gain = math.sqrt(in_features) if gain is None else check_gain(gain)
        super().__init__(in_features, out_features, rank, bias=bias, device=device, dtype=dtype)
        self._cache: Optional[torch.Tensor] = None
        self._cache_key: Optional[tuple] = None

    def _key(self, dtype: torch.dtype) -> tuple:
        U, V = self.U, self.V
        return (U._version, V._version, U.data_ptr(), V.data_ptr(), U.device, dtype, self.omega, self.gain)

    def cached_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight in `dtype`, built once and reused while U, V (and omega, gain) are unchanged."""
        key = self._key(dtype)
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = sine_lowrank_weight(self.U, self.V, self.omega, self.gain).to(dtype)
            self._cache_key = key
        return self._cache

    def train(self, mode: bool = True) -> "SineLowRankLinear":
        self._cache = None
        self._cache_key = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        needs_grad = torch.is_grad_enabled() and (self.U.requires_grad or self.V.requires_grad)
        if not self.training and not needs_grad:
            cd = compute_dtype_for(x)
            bias = None if self.bias is None else self.bias.to(cd)
            return F.linear(x.to(cd), self.cached_weight(cd), bias)
        return sine_lowrank_linear(x, self.U, self.V, self.bias, self.omega, self.gain)

    def dense_weight(self) -> torch.Tensor:
        with torch.no_grad():
            return sine_lowrank_weight(self.U, self.V, self.omega, self.gain).to(self.U.dtype)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        rank: int,
        omega: float = DEFAULT_OMEGA_FROM_SCRATCH,
        gain: Optional[float] = None,
        init: InitMode = "svd",
    ) -> "SineLowRankLinear":
        """A SineLowRankLinear standing for `linear`.

        init="svd": U V^T := truncated SVD of arcsin(clamp(gain * W, -1, 1)) / omega, so that
        sin(omega U V^T) / gain approximates W where |gain * W| <= 1 (exact for rank = full and
        unclipped entries). init="fresh": the paper's Kaiming init; only the bias is copied.
        """
        linear = cls._check_linear(linear)
        layer = cls(linear.in_features, linear.out_features, rank, omega=omega, gain=gain,
                    bias=linear.bias is not None, device=linear.weight.device, dtype=linear.weight.dtype)
        if init == "svd":
            w = linear.weight.detach().double()
            layer._set_factors_from_svd(torch.arcsin((w * layer.gain).clamp(-1.0, 1.0)) / layer.omega)
        elif init != "fresh":
            raise ValueError(f"init must be 'svd' or 'fresh', got {init!r}")
        layer._copy_bias_from(linear)
        return layer

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"omega={self.omega:g}, gain={self.gain:.4g}, bias={self.bias is not None}"
        )
