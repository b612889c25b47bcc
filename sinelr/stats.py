"""The one verdict rule of every summary (shared/EVIDENCE.md step 4): paired per-seed differences,
their mean and a 95% t-interval; "better" only when the interval excludes 0.

Pure Python (no scipy): the two-sided 95% quantiles of Student's t are tabulated below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Sequence, Tuple

__all__ = ["t_quantile_975", "mean_std", "PairedComparison", "paired_comparison", "seeds_for_half_width",
           "seed_averages"]

# t_{0.975, df} for df = 1..30 (standard tables); beyond 30 the normal value 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an int >= 1, got {df!r}")
    if df <= len(_T975):
        return _T975[df - 1]
    if df <= 60:  # linear in 1/df between df = 30 (2.042) and 60 (2.000)
        return 2.000 + (2.042 - 2.000) * (1 / df - 1 / 60) / (1 / 30 - 1 / 60)
    return 1.96 + (2.000 - 1.96) * 60 / df


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN for none)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


@dataclass(frozen=True)
class PairedComparison:
    """b - a over the seeds both have: mean, 95% t-interval, and the verdict in words."""

    a_name: str
    b_name: str
    seeds: Tuple[int, ...]
    diffs: Tuple[float, ...]
    mean: float
    low: float
    high: float
    verdict: str

    @property
    def n(self) -> int:
        return len(self.seeds)

    def interval_text(self, fmt: str = "+.2f", unit: str = "seed") -> str:
        """'+1.23 [+0.40, +2.06] (3 seeds)', or the single difference when only one seed is paired; `unit` names
        what was paired where it is not a seed (e.g. 'run')."""
        if self.n == 0:
            return f"n/a (no paired {unit}s)"
        if self.n == 1:
            return f"{format(self.mean, fmt)} (1 {unit}: no interval)"
        return f"{format(self.mean, fmt)} [{format(self.low, fmt)}, {format(self.high, fmt)}] ({self.n} {unit}s)"


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float], a_name: str = "a", b_name: str = "b",
                      higher_is_better: bool = True) -> PairedComparison:
    """Compare method b against method a, paired by seed (the keys of the two mappings).

    The difference is b - a per shared seed. With n >= 2 seeds the 95% interval is
    mean +- t_{0.975, n-1} * sd / sqrt(n). Verdict: "<b> better" when the interval lies on b's side
    of 0 ("better" follows `higher_is_better`), "<a> better" when on the other side, otherwise
    "no difference shown"; with fewer than 2 paired seeds it is always "no difference shown".
    """
    seeds = tuple(sorted(set(a) & set(b)))
    diffs = tuple(float(b[s]) - float(a[s]) for s in seeds)
    if any(not math.isfinite(d) for d in diffs):
        bad = [s for s, d in zip(seeds, diffs) if not math.isfinite(d)]
        raise ValueError(f"paired values must be finite; seeds {bad} give a non-finite difference")
    n = len(diffs)
    if n == 0:
        return PairedComparison(a_name, b_name, seeds, diffs, float("nan"), float("nan"), float("nan"),
                                "no difference shown")
    m, sd = mean_std(diffs)
    if n == 1:
        return PairedComparison(a_name, b_name, seeds, diffs, m, float("nan"), float("nan"), "no difference shown")
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    low, high = m - half, m + half
    sign = 1.0 if higher_is_better else -1.0
    if sign * low > 0 and sign * high > 0:
        verdict = f"{b_name} better"
    elif sign * low < 0 and sign * high < 0:
        verdict = f"{a_name} better"
    else:
        verdict = "no difference shown"
    return PairedComparison(a_name, b_name, seeds, diffs, m, low, high, verdict)


def seeds_for_half_width(sd: float, half_width: float, limit: int = 1000) -> int:
    """The fewest paired seeds n >= 2 whose 95% t-interval, at a per-seed spread `sd`, has half-width
    t_{0.975, n-1} * sd / sqrt(n) <= `half_width` (the resolution a comparison needs to tell an effect of that
    size from 0: at that width a true effect of exactly `half_width` is shown about half the time).
    Returns `limit` + 1 when more than `limit` seeds would be needed."""
    for name, v in (("sd", sd), ("half_width", half_width)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if sd < 0 or half_width <= 0:
        raise ValueError(f"need sd >= 0 and half_width > 0, got sd={sd!r}, half_width={half_width!r}")
    for n in range(2, limit + 1):
        if t_quantile_975(n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return limit + 1


def seed_averages(per_task: Mapping[str, Mapping[int, float]], tasks: Sequence[str]) -> Dict[int, float]:
    """{seed: mean over `tasks`} for the seeds every task has ({} when a task has no values): the per-seed averages a
    verdict on a task average pairs."""
    if not tasks or any(t not in per_task for t in tasks):
        return {}
    common = set.intersection(*(set(per_task[t]) for t in tasks))
    return {s: sum(per_task[t][s] for t in tasks) / len(tasks) for s in sorted(common)}
