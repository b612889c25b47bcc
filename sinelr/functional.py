"""The formula, once: W = sin(omega * U V^T) / gain, and a memory-lean linear op built on it.

Every user of the idea (layers, PEFT adapters, merge, spectra, recipes) calls these functions.
The sine argument and the sine are always evaluated in at least fp32, also under autocast.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = [
    "check_omega",
    "check_gain",
    "check_rank",
    "sine_lowrank_weight",
    "sine_lowrank_linear",
    "naive_sine_lowrank_linear",
    "compute_dtype_for",
    "compile_mode",
]


def _check_positive_real(name: str, value: object) -> float:
    """Return `value` as a float, or raise naming `name` if it is not a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number (int or float), got {value!r} of type {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return out


def check_omega(omega: object) -> float:
    """Return omega as a float, or raise if it is not a finite positive real number."""
    return _check_positive_real("omega", omega)


def check_gain(gain: object) -> float:
    """Return gain as a float, or raise if it is not a finite positive real number."""
    return _check_positive_real("gain", gain)


def check_rank(rank: object, in_features: int, out_features: int) -> int:
    """Return rank as an int in [1, min(in, out)], or raise naming the bad value."""
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"rank must be an integer, got {rank!r} of type {type(rank).__name__}")
    limit = min(in_features, out_features)
    if not 1 <= int(rank) <= limit:
        raise ConfigError(
            f"rank must be in [1, min(in_features, out_features)] = [1, {limit}] for a "
            f"{out_features}x{in_features} weight, got {rank}"
        )
    return int(rank)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least fp32: float64 stays float64 (gradcheck), bf16/fp16 are promoted."""
    return torch.promote_types(dtype, torch.float32)


def compute_dtype_for(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer computes in: autocast's dtype when autocast is on, else x's."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.is_floating_point():
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def sine_lowrank_weight(
    U: torch.Tensor, V: torch.Tensor, omega: float, gain: float = 1.0
) -> torch.Tensor:
    """sin(omega * U @ V.T) / gain, U: (m, k), V: (n, k) -> (m, n), in at least fp32.

    Differentiable with plain autograd (this is also the reference the fused op is tested against).
    """
    if U.dim() != 2 or V.dim() != 2 or U.shape[1] != V.shape[1]:
        raise ValueError(f"U must be (m, k) and V (n, k) with the same k, got {tuple(U.shape)} and {tuple(V.shape)}")
    omega, gain = check_omega(omega), check_gain(gain)
    work = _work_dtype(torch.promote_types(U.dtype, V.dtype))
    with torch.autocast(U.device.type, enabled=False):
        return torch.sin((U.to(work) @ V.to(work).T) * omega) / gain


# Elements per row block (16 MiB in fp32) of the CPU paths for large weights: the forward builds the
# weight, and the backward grad_x and dL/dA, one block at a time, so no (m, n) matrix is allocated
# there (fresh large buffers cost page faults on CPU). Blocks are kept large: every elementwise op is
# an OpenMP region, and on a busy machine many small regions cost more than the memory traffic saved.
_GRAD_BLOCK = 1 << 22


def _sweep(a: torch.Tensor, omega: float, c: float, base: Optional[torch.Tensor], fused: bool = False) -> torch.Tensor:
    """In place on the raw product a = U @ V^T (work dtype): a := c * sin(omega * a) (+ base).

    The same elementwise ops in the same order as the formula, so blocks of the weight equal the
    corresponding rows of sin(omega * (U @ V^T)) * c exactly. `fused` runs the chain as one
    compiled pass (see `_elementwise`).
    """
    return _elementwise(a, omega, c, base=base, fused=fused)


# ---- the elementwise chain, eager or fused ---------------------------------------------------------
# Around its GEMMs the op does O(mn) elementwise work: *omega, sin (and cos in backward), *scale/gain,
# +W0, *dL/dW. Eagerly each is a separate pass over an (m, n) buffer (and an OpenMP region on CPU);
# torch.compile (Inductor: C++/OpenMP on CPU, Triton on CUDA) fuses the chain into one pass from the
# same source. Compile is optional and lazy: SINELR_COMPILE=0 (or off) turns it off, =1 (or on) turns
# it on for every size, unset / auto turns it on only for weights of at least _COMPILE_MIN_NUMEL
# elements, where the one-time compile (~10-50 s on a small CPU; cached on disk by Inductor
# afterwards) pays back within a few hundred training steps. If the compiler is missing or compile
# fails, one warning is issued and the eager chain (the same numbers up to float rounding) is used.
_COMPILE_MIN_NUMEL = 1 << 22  # 4M elements, e.g. a 2048 x 2048 weight
_COMPILED: Optional[Callable] = None
_COMPILE_BROKEN = False
_COMPILE_OK_KEYS: set = set()


def compile_mode() -> str:
    """'off', 'on' or 'auto', from the environment variable SINELR_COMPILE (read at every call)."""
    raw = os.environ.get("SINELR_COMPILE", "auto").strip().lower()
    if raw in ("0", "off", "false", "no"):
        return "off"
    if raw in ("1", "on", "true", "yes"):
        return "on"
    if raw in ("", "auto"):
        return "auto"
    raise ValueError(f"SINELR_COMPILE must be one of 0/off, 1/on, auto, got {raw!r}")


def _want_fused(numel: int, device: torch.device) -> bool:
    """Whether the op should use the compiled elementwise chain for a weight of `numel` elements."""
    if _COMPILE_BROKEN or device.type not in ("cpu", "cuda"):
        return False
    mode = compile_mode()
    if mode == "off":
        return False
    if torch.compiler.is_compiling():  # inside a user's torch.compile: Dynamo traces the eager chain
        return False
    return mode == "on" or numel >= _COMPILE_MIN_NUMEL


def _chain(
    a: torch.Tensor, omega: float, c: float, base: Optional[torch.Tensor], w_out: Optional[torch.Tensor],
    gw: Optional[torch.Tensor],
) -> None:
    """The chain written once for the compiler (in place, one pass): see `_elementwise`."""
    t = a * omega
    if gw is None:
        w = torch.sin(t) * c
        a.copy_(w if base is None else w + base)
        return
    if w_out is not None:
        w = torch.sin(t) * c
        w_out.copy_(w if base is None else w + base)
    a.copy_(torch.cos(t) * gw)


def _chain_eager(
    a: torch.Tensor, omega: float, c: float, base: Optional[torch.Tensor], w_out: Optional[torch.Tensor],
    gw: Optional[torch.Tensor],
) -> None:
    """The same chain as in-place eager ops (the reference path, and the fallback)."""
    a.mul_(omega)
    if gw is None:
        a.sin_()
        w = a
    elif w_out is not None:
        w = torch.sin(a, out=w_out)
    else:
        w = None
    if w is not None:
        if c != 1.0:
            w.mul_(c)
        if base is not None:
            w.add_(base)
    if gw is not None:
        a.cos_().mul_(gw)


def _compiled_chain() -> Optional[Callable]:
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(_chain, dynamic=True, fullgraph=True)
    return _COMPILED


def _elementwise(
    a: torch.Tensor, omega: float, c: float, *, base: Optional[torch.Tensor] = None,
    w_out: Optional[torch.Tensor] = None, gw: Optional[torch.Tensor] = None, fused: bool = False,
) -> torch.Tensor:
    """In place on a = U V^T (rows of it, work dtype), one pass when `fused`:

    - gw None (forward):   a := c * sin(omega a) + base;                         returns a
    - gw given (backward): w_out := c * sin(omega a) + base (if w_out is given),
                           a := cos(omega a) * gw (dL/dA / omega, before the thin GEMMs); returns a
    """
    global _COMPILE_BROKEN
    if fused and not _COMPILE_BROKEN:
        fn = _compiled_chain()
        key = (a.device.type, a.dtype, None if base is None else base.dtype, w_out is not None,
               None if gw is None else gw.dtype)
        if key in _COMPILE_OK_KEYS:
            fn(a, omega, c, base, w_out, gw)
            return a
        # First call of this variant: compile on copies, so a failure leaves the inputs untouched.
        a_try, w_try = a.clone(), None if w_out is None else w_out.clone()
        try:
            fn(a_try, omega, c, base, w_try, gw)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: use eager
            _COMPILE_BROKEN = True
            warnings.warn(
                f"sinelr: torch.compile of the fused sine chain failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); using the eager chain (same numbers, "
                "slower). Set SINELR_COMPILE=0 to skip the attempt.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            _COMPILE_OK_KEYS.add(key)
            a.copy_(a_try)
            if w_out is not None:
                w_out.copy_(w_try)
            return a
    _chain_eager(a, omega, c, base, w_out, gw)
    return a


class _SineLowRankLinear(torch.autograd.Function):
    """y = x (W0 + scale * sin(omega U V^T) / gain)^T + b, saving only x, U, V (and W0 by reference).

    Backward rebuilds sin/cos of the argument from U and V; nothing m x n survives between forward
    and backward beyond a frozen base weight that already exists as a parameter. Fresh (m, n) buffers
    are costly on CPU (page faults), so forward allocates one (the weight) and backward one (the weight
    again, for grad_x; dense backward allocates dL/dW instead); dL/dA is formed in row blocks.
    """

    @staticmethod
    def forward(ctx, x, U, V, bias, base_weight, omega, gain, scale, compute_dtype):  # type: ignore[override]
        work = _work_dtype(torch.promote_types(U.dtype, V.dtype))
        m, n = U.shape[0], V.shape[0]
        x_in_dtype = x.dtype
        # Under autocast, save the input as the GEMM used it (e.g. bf16), as nn.Linear does: backward
        # only needs it in that dtype, and saving the fp32 original would keep twice the bytes.
        x = x.detach().to(compute_dtype) if x.dtype != compute_dtype else x
        with torch.autocast(x.device.type, enabled=False):
            base = None if base_weight is None else base_weight.detach()
            b = None if bias is None else bias.to(compute_dtype)
            Uw, Vw = U.detach().to(work), V.detach().to(work)
            fused = _want_fused(m * n, x.device)
            rows = max(1, _GRAD_BLOCK // max(1, n))
            if x.device.type == "cpu" and compute_dtype == work and rows < m:
                # Large weights on CPU: build the weight in 16 MiB row blocks (one reused buffer) and
                # write the matching output columns, instead of allocating the (m, n) weight.
                x2 = x.reshape(-1, n)
                y2 = torch.empty((x2.shape[0], m), dtype=work, device=x.device)
                buf = torch.empty((rows, n), dtype=work, device=x.device)
                for i in range(0, m, rows):
                    r = min(rows, m - i)
                    w = torch.mm(Uw[i:i + r], Vw.T, out=buf[:r])
                    _sweep(w, omega, scale / gain, None if base is None else base[i:i + r], fused)
                    y2[:, i:i + r] = x2 @ w.T
                if b is not None:
                    y2.add_(b)
                y = y2.reshape(*x.shape[:-1], m)
            else:
                weight = Uw @ Vw.T
                _sweep(weight, omega, scale / gain, base, fused)
                weight = weight.to(compute_dtype)
                y = F.linear(x.to(compute_dtype), weight, b)
        ctx.save_for_backward(x, U, V, base_weight)
        ctx.x_dtype = x_in_dtype
        ctx.omega, ctx.gain, ctx.scale, ctx.compute_dtype = omega, gain, scale, compute_dtype
        ctx.has_bias = bias is not None
        ctx.fused = fused
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, U, V, base_weight = ctx.saved_tensors
        omega, gain, scale, cd = ctx.omega, ctx.gain, ctx.scale, ctx.compute_dtype
        need_x, need_U, need_V, need_b, need_W0 = ctx.needs_input_grad[:5]
        need_factors = need_U or need_V
        work = _work_dtype(torch.promote_types(U.dtype, V.dtype))
        m, n = U.shape[0], V.shape[0]
        k = U.shape[1]
        c = scale / gain
        dev = U.device
        fused = ctx.fused and not _COMPILE_BROKEN
        gx = gU = gV = gb = gW0 = None
        with torch.autocast(grad_out.device.type, enabled=False):
            g2 = grad_out.to(cd).reshape(-1, m)
            x2 = x.reshape(-1, n).to(cd)
            Uw, Vw = U.to(work), V.to(work)
            gx2 = None
            # With a lower-precision compute dtype (autocast), grad_x is not accumulated over row blocks:
            # the weight is rebuilt whole, used once in cd, and freed.
            blocked_x = need_x and cd == work
            if need_x and not blocked_x:
                weight = Uw @ Vw.T
                _sweep(weight, omega, c, base_weight, fused)
                gx2 = g2 @ weight.to(cd)
                del weight
            gW = None
            if need_W0:
                gW = g2.T @ x2  # (m, n): dL/dW of the full weight, which is also dL/dW0
                gW0 = gW.to(base_weight.dtype)
            if need_factors or blocked_x:
                # One sweep over row blocks of A = omega U V^T. Each block gives its rows of the weight
                # (grad_x += dY_rows W_rows) and of dL/dA = dL/dW * cos(A) (dU rows = dA_rows V,
                # dV += U_rows^T dA_rows); the scalar omega * scale / gain goes on the thin results.
                # No (m, n) buffer is allocated (dense backward allocates dL/dW).
                rows = m if dev.type != "cpu" else max(1, min(m, _GRAD_BLOCK // max(1, n)))
                buf_a = torch.empty((rows, n), dtype=work, device=dev)
                buf_s = torch.empty((rows, n), dtype=work, device=dev) if blocked_x and need_factors else None
                buf_g = torch.empty((rows, n), dtype=cd, device=dev) if need_factors and gW is None else None
                gUw = torch.empty((m, k), dtype=work, device=dev) if need_factors else None
                gVt = torch.zeros((k, n), dtype=work, device=dev) if need_factors else None
                for i in range(0, m, rows):
                    r = min(rows, m - i)
                    a = torch.mm(Uw[i:i + r], Vw.T, out=buf_a[:r])
                    base_rows = None if base_weight is None else base_weight[i:i + r]
                    gw = None
                    if need_factors:
                        gw = gW[i:i + r] if gW is not None else torch.mm(g2[:, i:i + r].T, x2, out=buf_g[:r])
                    # One pass (fused) or the eager ops: w = c sin(omega a) + W0 rows (if grad_x is
                    # blocked), and a := cos(omega a) * dL/dW rows (if the factors need gradients).
                    w = None
                    if blocked_x and need_factors:
                        w = buf_s[:r]
                        _elementwise(a, omega, c, base=base_rows, w_out=w, gw=gw, fused=fused)
                    elif blocked_x:
                        w = _elementwise(a, omega, c, base=base_rows, fused=fused)
                    else:
                        _elementwise(a, omega, c, w_out=None, gw=gw, fused=fused)
                    if w is not None:
                        if gx2 is None:
                            gx2 = g2[:, i:i + r] @ w
                        else:
                            gx2.addmm_(g2[:, i:i + r], w)
                    if need_factors:
                        torch.mm(a, Vw, out=gUw[i:i + r])
                        gVt.addmm_(Uw[i:i + r].T, a)
                f = omega * c
                if need_U:
                    gU = gUw.mul_(f).to(U.dtype)
                if need_V:
                    gV = gVt.T.mul_(f).contiguous().to(V.dtype)
            if need_x:
                gx = gx2.reshape(*grad_out.shape[:-1], n).to(ctx.x_dtype)
            if need_b and ctx.has_bias:
                gb = g2.sum(0).to(ctx.bias_dtype)
        return gx, gU, gV, gb, gW0, None, None, None, None


def sine_lowrank_linear(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    omega: float = 1.0,
    gain: float = 1.0,
    *,
    base_weight: Optional[torch.Tensor] = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """y = x (base_weight + scale * sin(omega U V^T) / gain)^T + bias with a memory-lean backward.

    U: (out, k), V: (in, k), x: (..., in). `base_weight` (out, in) is optional (sine-LoRA passes the
    frozen pretrained weight so the layer costs one GEMM). Under autocast the sine is computed in
    fp32 and the GEMM runs in autocast's dtype.
    """
    if not x.is_floating_point():
        raise TypeError(f"sine_lowrank_linear expects a floating-point input, got dtype {x.dtype}")
    if x.shape[-1] != V.shape[0]:
        raise ValueError(f"input has {x.shape[-1]} features, expected in_features={V.shape[0]}")
    omega, gain = check_omega(omega), check_gain(gain)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite real number, got {scale!r}")
    if base_weight is not None and tuple(base_weight.shape) != (U.shape[0], V.shape[0]):
        raise ValueError(f"base_weight must be {(U.shape[0], V.shape[0])}, got {tuple(base_weight.shape)}")
    return _SineLowRankLinear.apply(
        x, U, V, bias, base_weight, float(omega), float(gain), float(scale), compute_dtype_for(x)
    )


def naive_sine_lowrank_linear(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    omega: float = 1.0,
    gain: float = 1.0,
) -> torch.Tensor:
    """The textbook formula with plain autograd: F.linear(x, sin(omega U V^T) / gain, bias).

    Keeps the m x n argument and weight for backward; the reference for tests and benchmarks.
    """
    return F.linear(x, torch.sin(omega * (U @ V.T)) / gain, bias)
