"""Spectral tools: singular values, numerical / stable / effective rank, Proposition 1 of the paper (as printed
and corrected) and an empirical search for the omega_0 of Theorem 3.1.

Prop. 1 as printed (Ji et al.): for a matrix A with smallest non-zero absolute entry A_min0 and
0 < omega <= pi / (3 A_min0), rank(sin(omega A)) >= omega * (A_min0 / ||sqrt(|A|)||_op)^2 (sqrt entry-wise).
What the supplement's two lemmas prove is the stable-rank form with a factor 1/4:
||sin(omega A)||_F^2 / ||sin(omega A)||_op^2 >= omega A_min0^2 / (4 ||sqrt(|A|)||_op^2) (see docs/theory.md).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from .functional import check_omega, sine_lowrank_weight
from .layers import _init_factors

__all__ = [
    "singular_values",
    "numerical_rank",
    "stable_rank",
    "effective_rank",
    "energy_beyond",
    "truncate_rank",
    "min_nonzero_abs",
    "prop1_printed_bound",
    "prop1_stable_rank_bound",
    "prop1_max_omega",
    "kaiming_factors",
    "uniform_factors",
    "sine_matrix",
    "omega0_search",
]


def _as_matrix(A: torch.Tensor) -> torch.Tensor:
    if not isinstance(A, torch.Tensor) or A.dim() != 2:
        raise ValueError(f"expected a 2-D tensor, got {type(A).__name__} with shape {getattr(A, 'shape', None)}")
    return A.detach().double()


def singular_values(A: torch.Tensor) -> torch.Tensor:
    """Singular values of A in descending order (float64)."""
    return torch.linalg.svdvals(_as_matrix(A))


def numerical_rank(A: torch.Tensor, tol: Optional[float] = None, rtol: Optional[float] = None) -> int:
    """Number of singular values above `tol` (absolute) or `rtol * s_max` (relative).

    With neither given, uses numpy's default: s_max * max(m, n) * eps of A's dtype.
    """
    s = singular_values(A)
    if s.numel() == 0 or s[0] == 0:
        return 0
    if tol is None:
        if rtol is None:
            rtol = max(A.shape) * torch.finfo(A.dtype if A.is_floating_point() else torch.float64).eps
        tol = float(rtol) * float(s[0])
    return int((s > tol).sum())


def stable_rank(A: torch.Tensor) -> float:
    """||A||_F^2 / ||A||_op^2, a continuous lower bound of the rank."""
    s = singular_values(A)
    return float((s ** 2).sum() / s[0] ** 2) if s.numel() and s[0] > 0 else 0.0


def effective_rank(A: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank exp(H(p)), p = s / sum(s)."""
    s = singular_values(A)
    s = s[s > 0]
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def _check_rank(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int (a number of singular directions), got {k!r}")
    return k


def energy_beyond(A: torch.Tensor, k: int) -> float:
    """The share of ||A||_F^2 outside A's top k singular directions: sum_{i>k} s_i^2 / sum_i s_i^2.

    0 for a matrix of rank <= k, (n - k) / n for the n x n identity; by Eckart-Young it is the relative squared
    error of the best rank-k approximation (`truncate_rank`). A zero matrix has none (0.0)."""
    k = _check_rank(k)
    s2 = singular_values(A) ** 2
    total = float(s2.sum())
    return float(s2[k:].sum()) / total if total > 0 else 0.0


def truncate_rank(A: torch.Tensor, k: int) -> torch.Tensor:
    """The best rank-k approximation of A in Frobenius and operator norm (truncated SVD), in A's dtype."""
    k = _check_rank(k)
    U, s, Vh = torch.linalg.svd(_as_matrix(A), full_matrices=False)
    return ((U[:, :k] * s[:k]) @ Vh[:k]).to(A.dtype)


def min_nonzero_abs(A: torch.Tensor) -> float:
    """A_min0: the smallest non-zero absolute entry of A."""
    a = _as_matrix(A).abs()
    nz = a[a > 0]
    if nz.numel() == 0:
        raise ValueError("A has no non-zero entry")
    return float(nz.min())


def prop1_max_omega(A: torch.Tensor) -> float:
    """Largest omega for which Prop. 1 holds: pi / (3 A_min0)."""
    return math.pi / (3.0 * min_nonzero_abs(A))


def _prop1_parts(A: torch.Tensor, omega: float, check_range: bool) -> tuple:
    """(omega, A_min0, ||sqrt|A| ||_op^2) after checking omega against Prop. 1's range (0, pi / (3 A_min0)]."""
    omega = check_omega(omega)
    a_min = min_nonzero_abs(A)
    if check_range and omega > math.pi / (3.0 * a_min) * (1 + 1e-12):
        raise ValueError(
            f"Prop. 1 holds for omega <= pi / (3 A_min0) = {math.pi / (3 * a_min):.6g}, got omega={omega}"
        )
    op = float(torch.linalg.matrix_norm(_as_matrix(A).abs().sqrt(), ord=2))
    return omega, a_min, op ** 2


def prop1_printed_bound(A: torch.Tensor, omega: float, check_range: bool = True) -> float:
    """Prop. 1 **as printed** in the paper: omega * A_min0^2 / ||sqrt(|A|)||_op^2, claimed to bound rank(sin(omega A)).

    It is false as stated: a single non-zero entry a at omega = pi / (3a) gives pi/3 > rank 1 (docs/theory.md).
    Kept to document that counterexample; use `prop1_stable_rank_bound` for the statement the proof supports.
    Raises if omega lies outside (0, pi / (3 A_min0)] unless check_range=False.
    """
    omega, a_min, op2 = _prop1_parts(A, omega, check_range)
    return omega * a_min ** 2 / op2


def prop1_stable_rank_bound(A: torch.Tensor, omega: float, check_range: bool = True) -> float:
    """Prop. 1 **corrected**: omega * A_min0^2 / (4 ||sqrt(|A|)||_op^2), a lower bound on the stable rank
    ||S||_F^2 / ||S||_op^2 of S = sin(omega A) (hence on its rank) for 0 < omega <= pi / (3 A_min0).

    Proof (the supplement's lemmas, with the constant kept): on that range sin(omega A_min0) >= omega A_min0 / 2,
    so ||S||_F^2 >= omega^2 A_min0^2 / 4; and |sin t| <= sqrt|t| entry-wise gives ||S||_op^2 <= omega ||sqrt|A| ||_op^2.
    Raises if omega lies outside the range unless check_range=False (the bound is then unproven).
    """
    omega, a_min, op2 = _prop1_parts(A, omega, check_range)
    return omega * a_min ** 2 / (4.0 * op2)


def kaiming_factors(m: int, n: int, k: int, generator: Optional[torch.Generator] = None) -> tuple:
    """U (m, k), V (n, k) drawn as SineLowRankLinear initialises them (Kaiming uniform):
    U ~ U(+-1/sqrt(k)), V ~ U(+-1/sqrt(n)), float64."""
    U = torch.empty(m, k, dtype=torch.float64)
    V = torch.empty(n, k, dtype=torch.float64)
    _init_factors(U, V, None, n, generator=generator)
    return U, V


def sine_matrix(U: torch.Tensor, V: torch.Tensor, omega: float) -> torch.Tensor:
    """sin(omega U V^T) (gain 1), through the one formula."""
    return sine_lowrank_weight(U, V, check_omega(omega), 1.0)


def uniform_factors(m: int, n: int, k: int, bound: float, generator: Optional[torch.Generator] = None) -> tuple:
    """U (m, k), V (n, k) with iid U(-bound, bound) entries, float64 (Thm. 3.1's init uses bound = 1/N).

    Drawn in the same order as `kaiming_factors` (U, then V), so with the same generator state both give
    the same U V^T up to a scale: kaiming's equals this one times 1 / (bound^2 sqrt(k n)). Hence an omega_0
    found for one init converts exactly to the other (omega_0 scales inversely with the entries of U V^T).
    """
    if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a finite number > 0, got {bound!r}")
    U = torch.empty(m, k, dtype=torch.float64).uniform_(-bound, bound, generator=generator)
    V = torch.empty(n, k, dtype=torch.float64).uniform_(-bound, bound, generator=generator)
    return U, V


def omega0_search(U: torch.Tensor, V: torch.Tensor, k: int, rtol: float = 1e-4, x_min: float = 1e-3,
                  x_max: float = 1e3, per_decade: int = 5, precision: float = 0.01) -> dict:
    """Empirical omega_0: the smallest omega at which sin(omega U V^T) has rank > k and stable rank > k.

    omega is searched as x / rms(U V^T) on a log grid of x from x_min to x_max (`per_decade` points a
    decade); for each criterion the first grid point where it holds is refined by log-scale bisection
    against the grid point before it, to a relative width `precision`. The rank is the number of singular
    values > rtol * s_max. Returns, per criterion c in ("rank", "stable_rank"): `omega0_<c>` (nan if it
    never holds up to x_max) and `<c>_at_x_min` (True if it already holds at x_min, so omega0 is only an
    upper bound); plus rms, A_min0 (smallest non-zero |entry| of U V^T), and the largest rank / stable
    rank seen on the grid. This is a first crossing on a grid, not a proof that the criterion keeps holding.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    for name, v in (("rtol", rtol), ("x_min", x_min), ("x_max", x_max), ("precision", precision)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if x_max <= x_min:
        raise ValueError(f"x_max must exceed x_min, got x_min={x_min}, x_max={x_max}")
    if isinstance(per_decade, bool) or not isinstance(per_decade, int) or per_decade < 1:
        raise ValueError(f"per_decade must be an integer >= 1, got {per_decade!r}")
    A = _as_matrix(U) @ _as_matrix(V).T
    rms = float(A.pow(2).mean().sqrt())
    if rms == 0:
        raise ValueError("U V^T is the zero matrix; omega_0 is undefined")

    def holds(x: float) -> Dict[str, bool]:
        s = torch.linalg.svdvals(sine_matrix(U.double(), V.double(), x / rms))
        rank = int((s > rtol * s[0]).sum()) if s[0] > 0 else 0
        stable = float((s ** 2).sum() / s[0] ** 2) if s[0] > 0 else 0.0
        seen["rank"] = max(seen["rank"], rank)
        seen["stable_rank"] = max(seen["stable_rank"], stable)
        return {"rank": rank > k, "stable_rank": stable > k}

    seen: Dict[str, float] = {"rank": 0, "stable_rank": 0.0}
    n_pts = int(math.ceil(round(math.log10(x_max / x_min) * per_decade, 9))) + 1
    grid = [x_min * 10 ** (i / per_decade) for i in range(n_pts)]
    first: Dict[str, Optional[int]] = {"rank": None, "stable_rank": None}
    for i, x in enumerate(grid):
        for c, ok in holds(x).items():
            if ok and first[c] is None:
                first[c] = i
        if all(v is not None for v in first.values()):
            break
    out = {"rms": rms, "a_min0": min_nonzero_abs(A), "max_rank_seen": seen["rank"],
           "max_stable_rank_seen": seen["stable_rank"], "x_min": x_min, "x_max": grid[-1]}
    for c, i in first.items():
        out[f"{c}_at_x_min"] = i == 0
        if i is None:
            out[f"omega0_{c}"] = float("nan")
            continue
        lo, hi = (grid[i - 1], grid[i]) if i > 0 else (grid[0], grid[0])
        while hi / lo > 1 + precision:
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if holds(mid)[c] else (mid, hi)
        out[f"omega0_{c}"] = hi / rms
    return out
