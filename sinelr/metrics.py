"""Metrics of the paper's experiments: PSNR, SSIM, IoU, GLUE's metrics, and Bjontegaard deltas."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "psnr",
    "ssim",
    "iou",
    "accuracy",
    "matthews_corrcoef",
    "f1_binary",
    "pearson",
    "spearman",
    "bd_rate",
    "bd_psnr",
    "BDFigures",
    "bd_figures",
    "BD_RATE_TOLERANCE",
    "BD_PSNR_TOLERANCE",
]


def psnr(pred: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of images with values in [0, max_value]."""
    if pred.shape != target.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    mse = float(torch.mean((pred.detach().double() - target.detach().double()) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(max_value ** 2 / mse)


def ssim(pred: torch.Tensor, target: torch.Tensor, max_value: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window 11 / 1.5) of (H, W, C) or (H, W) images."""
    if pred.shape != target.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    x, y = pred.detach().double(), target.detach().double()
    if x.dim() == 2:
        x, y = x[..., None], y[..., None]
    x = x.permute(2, 0, 1)[:, None]
    y = y.permute(2, 0, 1)[:, None]
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    blur = lambda t: F.conv2d(t, kernel)  # noqa: E731 - valid padding, as in the reference implementation
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Intersection over union of two boolean occupancy arrays."""
    p, t = torch.as_tensor(pred).bool(), torch.as_tensor(target).bool()
    if p.shape != t.shape:
        raise ValueError(f"iou needs equal shapes, got {tuple(p.shape)} and {tuple(t.shape)}")
    union = int((p | t).sum())
    return float(int((p & t).sum()) / union) if union else 1.0


def accuracy(pred: Sequence, labels: Sequence) -> float:
    p, t = np.asarray(pred), np.asarray(labels)
    return float((p == t).mean()) if len(t) else float("nan")


def matthews_corrcoef(pred: Sequence, labels: Sequence) -> float:
    """MCC for binary labels (CoLA's metric); 0 when a marginal is empty, as scikit-learn does."""
    p, t = np.asarray(pred).astype(bool), np.asarray(labels).astype(bool)
    tp, tn = float(np.sum(p & t)), float(np.sum(~p & ~t))
    fp, fn = float(np.sum(p & ~t)), float(np.sum(~p & t))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def f1_binary(pred: Sequence, labels: Sequence) -> float:
    """F1 of the positive class (MRPC, QQP)."""
    p, t = np.asarray(pred).astype(bool), np.asarray(labels).astype(bool)
    tp = float(np.sum(p & t))
    denom = 2 * tp + float(np.sum(p & ~t)) + float(np.sum(~p & t))
    return 2 * tp / denom if denom else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom else 0.0


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64)))


def _bd_curves(rate_a, dist_a, rate_b, dist_b):
    ra, da, rb, db = (np.asarray(v, dtype=np.float64) for v in (rate_a, dist_a, rate_b, dist_b))
    for name, r, d in (("a", ra, da), ("b", rb, db)):
        if r.shape != d.shape or r.ndim != 1 or len(r) < 2:
            raise ValueError(f"curve {name}: rate and quality must be 1-D of equal length >= 2, got {r.shape} and {d.shape}")
        if np.any(r <= 0) or not np.all(np.isfinite(r)) or not np.all(np.isfinite(d)):
            raise ValueError(f"curve {name}: rates must be positive and finite, qualities finite")
    return ra, da, rb, db


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, interp: str) -> float:
    """Integral of the interpolated curve y(x) over [lo, hi] (x sorted ascending internally)."""
    from scipy.interpolate import Akima1DInterpolator, PchipInterpolator

    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError("BD metrics need distinct values along the integration axis")
    if interp == "akima":
        f = Akima1DInterpolator(x, y) if len(x) > 2 else PchipInterpolator(x, y)
    elif interp == "pchip":
        f = PchipInterpolator(x, y)
    else:
        raise ValueError(f"interp must be 'akima' or 'pchip', got {interp!r}")
    return float(f.integrate(lo, hi))


def bd_psnr(rate_a, psnr_a, rate_b, psnr_b, interp: str = "akima") -> float:
    """Bjontegaard delta PSNR of curve b against a: mean vertical gap over the common log-rate range (dB)."""
    ra, da, rb, db = _bd_curves(rate_a, psnr_a, rate_b, psnr_b)
    la, lb = np.log10(ra), np.log10(rb)
    lo, hi = max(la.min(), lb.min()), min(la.max(), lb.max())
    if hi <= lo:
        raise ValueError("the two curves have no overlapping rate range")
    return (_integral(lb, db, lo, hi, interp) - _integral(la, da, lo, hi, interp)) / (hi - lo)


def bd_rate(rate_a, psnr_a, rate_b, psnr_b, interp: str = "akima") -> float:
    """Bjontegaard delta rate of curve b against a in percent (negative: b needs fewer bits/params)."""
    ra, da, rb, db = _bd_curves(rate_a, psnr_a, rate_b, psnr_b)
    la, lb = np.log10(ra), np.log10(rb)
    lo, hi = max(da.min(), db.min()), min(da.max(), db.max())
    if hi <= lo:
        raise ValueError("the two curves have no overlapping quality range")
    mean_diff = (_integral(db, lb, lo, hi, interp) - _integral(da, la, lo, hi, interp)) / (hi - lo)
    return (10.0 ** mean_diff - 1.0) * 100.0


# Akima (the paper's interpolation) and PCHIP (shape-preserving) must agree for a BD figure to be read:
# the figure is flagged when their signs differ or they differ by more than these margins.
BD_RATE_TOLERANCE = 5.0  # percentage points of BD-rate
BD_PSNR_TOLERANCE = 0.2  # dB of BD-PSNR


@dataclass(frozen=True)
class BDFigures:
    """BD-rate (%) and BD-PSNR (dB) of curve b against anchor a with both interpolations.

    `warnings` names every figure whose two interpolations disagree in sign or by more than the
    tolerances (BD_RATE_TOLERANCE points, BD_PSNR_TOLERANCE dB), or that is not finite; such a figure
    is not a measurement. `error` says why nothing could be computed (then every figure is NaN).
    """

    rate_akima: float
    rate_pchip: float
    psnr_akima: float
    psnr_pchip: float
    warnings: Tuple[str, ...] = ()
    error: Optional[str] = None

    def rate_warning(self) -> Optional[str]:
        return next((w for w in self.warnings if w.startswith("BD-rate")), None)

    def psnr_warning(self) -> Optional[str]:
        return next((w for w in self.warnings if w.startswith("BD-PSNR")), None)


def _disagreement(name: str, unit: str, akima: float, pchip: float, tolerance: float) -> Optional[str]:
    if not (math.isfinite(akima) and math.isfinite(pchip)):
        return f"{name} not finite (Akima {akima:.4g}{unit}, PCHIP {pchip:.4g}{unit})"
    if akima * pchip < 0:
        return f"{name}: Akima {akima:+.4g}{unit} and PCHIP {pchip:+.4g}{unit} disagree in sign"
    if abs(akima - pchip) > tolerance:
        return (f"{name}: Akima {akima:+.4g}{unit} and PCHIP {pchip:+.4g}{unit} differ by "
                f"{abs(akima - pchip):.3g}{unit} (> {tolerance:g}{unit})")
    return None


def bd_figures(rate_a, psnr_a, rate_b, psnr_b) -> BDFigures:
    """BD-rate and BD-PSNR of b against a with Akima and PCHIP, and a warning where the two disagree.

    Input errors (too few points, no overlap, ...) give a BDFigures of NaNs whose `error` says why.
    """
    try:
        rates = [float(bd_rate(rate_a, psnr_a, rate_b, psnr_b, interp)) for interp in ("akima", "pchip")]
        psnrs = [float(bd_psnr(rate_a, psnr_a, rate_b, psnr_b, interp)) for interp in ("akima", "pchip")]
    except ValueError as exc:
        nan = float("nan")
        return BDFigures(nan, nan, nan, nan, (), str(exc))
    warnings = [_disagreement("BD-rate", "%", rates[0], rates[1], BD_RATE_TOLERANCE),
                _disagreement("BD-PSNR", " dB", psnrs[0], psnrs[1], BD_PSNR_TOLERANCE)]
    return BDFigures(rates[0], rates[1], psnrs[0], psnrs[1], tuple(w for w in warnings if w))
