"""Reproduce the paper's theory figures (Figs. 1-3), check Proposition 1 (as printed and corrected) numerically,
and measure an empirical omega_0 for Theorem 3.1.

Writes PNG + CSV under output_dir (default results/theory/, replaced in one step when the run ends): fig1 spectra of a full-rank Kaiming matrix vs
U V^T vs sin(omega U V^T); fig2 ReLU / sigmoid / sine of the same low-rank matrix; fig3 the omega
sweep (numerical and stable rank vs omega for several k) and 128x128 heatmaps; prop1 both bounds of
Proposition 1 beside the measured rank and stable rank over its validity range; omega0 the smallest omega at
which rank and stable rank of sin(omega U V^T) exceed k, over shapes, k and seeds; summary.md.
Everything is float64 on CPU; the figures take seconds, the omega0 table minutes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

__all__ = ["Config", "run"]


@dataclass
class Config:
    size: int = field(default=128, metadata={"help": "matrices are size x size (the paper's heatmaps are 128x128)"})
    ranks: List[int] = field(default_factory=lambda: [1, 2, 4, 8], metadata={"help": "ranks k of U V^T in the omega sweep and Prop. 1 check"})
    fig_rank: int = field(default=4, metadata={"help": "k used in Figs. 1 and 2"})
    fig_omega: float = field(default=100.0, metadata={"help": "omega used in Figs. 1 and 2 (sinelr's default omega)"})
    omegas: List[float] = field(
        default_factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
        metadata={"help": "omega grid of the Fig. 3 sweep"})
    heatmap_omegas: List[float] = field(default_factory=lambda: [10, 100, 1000], metadata={"help": "omegas of the Fig. 3 heatmaps"})
    prop1_points: int = field(default=25, metadata={"help": "omega points (log-spaced) in the Prop. 1 validity range"})
    rtol: float = field(default=0.0, metadata={"help": "relative tolerance of the numerical rank (0 = numpy's default max(m,n)*eps)"})
    seed: int = field(default=0, metadata={"help": "seed of the random factors"})
    # omega_0 table: 256x256 is the NeRF MLP's hidden layer, 384x384 / 384x1536 ViT-S's attention and MLP (fc2: out 384, in 1536)
    omega0_shapes: List[str] = field(default_factory=lambda: ["128x128", "256x256", "384x384", "384x1536"],
                                     metadata={"help": "m x n (out x in) shapes of the omega_0 table, e.g. 384x1536"})
    omega0_ranks: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128],
                                    metadata={"help": "ranks k of the omega_0 table (k >= min(m, n) is skipped)"})
    omega0_seeds: List[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds of the omega_0 table"})
    omega0_rtol: float = field(default=1e-4, metadata={"help": "rank of the omega_0 table: singular values > rtol * s_max"})
    omega0_x_range: List[float] = field(default_factory=lambda: [1e-3, 1e3],
                                        metadata={"help": "searched omega * rms(U V^T), from .. to (log grid)"})
    omega0_per_decade: int = field(default=4, metadata={"help": "grid points per decade of the omega_0 search"})
    omega0_precision: float = field(default=0.02, metadata={"help": "relative width to which omega_0 is bisected"})
    output_dir: str = field(default="results/theory", metadata={"help": "output folder"})


def _check_int_list(name: str, values: List[Any], low: int, high: float = math.inf) -> None:
    if not values:
        raise ValueError(f"{name} must list at least one value")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError(f"every entry of {name} must be an integer in [{low}, {high}], got {v!r}")


def _positive_float(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _parse_shape(text: str) -> Tuple[int, int]:
    """'384x1536' -> (384, 1536); raises naming the bad shape."""
    try:
        m, n = (int(t) for t in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"omega0_shapes entries must read MxN (e.g. 384x1536), got {text!r}") from None
    if m < 2 or n < 2:
        raise ValueError(f"omega0_shapes entries need m, n >= 2, got {text!r}")
    return m, n


def _validate(c: Config) -> None:
    if isinstance(c.size, bool) or not isinstance(c.size, int) or c.size < 2:
        raise ValueError(f"size must be an integer >= 2, got {c.size!r}")
    from sinelr.data import available_memory_bytes

    # A few float64 size x size matrices live at once (the matrix, its SVD factors, a heatmap): refuse
    # before allocating when they would not fit in half of the available memory.
    need, avail = 8 * 4 * c.size ** 2, available_memory_bytes()
    if avail is not None and need > avail // 2:
        raise ValueError(f"size={c.size} needs about {need / 2**30:.1f} GiB for its {c.size}x{c.size} float64 "
                         f"matrices, more than half of the {avail / 2**30:.1f} GiB of available memory; use a smaller size")
    if not c.ranks:
        raise ValueError("ranks must list at least one rank")
    for k in list(c.ranks) + [c.fig_rank]:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= c.size:
            raise ValueError(f"every rank must be an integer in [1, size={c.size}], got {k!r}")
    for name, values in (("omegas", c.omegas), ("heatmap_omegas", c.heatmap_omegas), ("fig_omega", [c.fig_omega])):
        if not values:
            raise ValueError(f"{name} must not be empty")
        for w in values:
            if not _positive_float(w):
                raise ValueError(f"{name} must hold finite numbers > 0, got {w!r}")
    if isinstance(c.prop1_points, bool) or not isinstance(c.prop1_points, int) or c.prop1_points < 2:
        raise ValueError(f"prop1_points must be an integer >= 2, got {c.prop1_points!r}")
    if not math.isfinite(c.rtol) or c.rtol < 0:
        raise ValueError(f"rtol must be >= 0 (0 = numpy's default), got {c.rtol!r}")
    if not c.omega0_shapes:
        raise ValueError("omega0_shapes must list at least one MxN shape")
    for shape in c.omega0_shapes:
        _parse_shape(shape)
    _check_int_list("omega0_ranks", c.omega0_ranks, 1)
    _check_int_list("omega0_seeds", c.omega0_seeds, 0)
    _check_int_list("omega0_per_decade", [c.omega0_per_decade], 1)
    for name in ("omega0_rtol", "omega0_precision"):
        if not _positive_float(getattr(c, name)) or getattr(c, name) >= 1:
            raise ValueError(f"{name} must be a number in (0, 1), got {getattr(c, name)!r}")
    xr = list(c.omega0_x_range)
    if len(xr) != 2 or not all(_positive_float(x) for x in xr) or xr[0] >= xr[1]:
        raise ValueError(f"omega0_x_range must be two numbers 0 < from < to, got {c.omega0_x_range!r}")


def _write_csv(path: Path, rows: List[Dict], columns: List[str]) -> None:
    import csv

    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in columns})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ranks_of(M, rtol) -> Dict[str, float]:
    import sinelr.spectral as sp

    return {"numerical_rank": sp.numerical_rank(M, rtol=rtol), "rank_rtol1e-4": sp.numerical_rank(M, rtol=1e-4),
            "stable_rank": sp.stable_rank(M), "effective_rank": sp.effective_rank(M)}


def _spectra_figure(out: Path, mats: Dict[str, Any], label: str, stem: str, title: str, rtol) -> List[Dict[str, Any]]:
    """Write <stem>.csv (normalised spectra) and <stem>.png for `mats`; return their ranks, one row each."""
    import numpy as np

    import sinelr.spectral as sp

    plt = _pyplot()
    spectra = {name: sp.singular_values(M) for name, M in mats.items()}
    ranks = [{label: name, **_ranks_of(M, rtol)} for name, M in mats.items()]
    n = min(len(s) for s in spectra.values())
    rows = [{"index": i + 1, **{name: float(s[i] / s[0]) for name, s in spectra.items()}} for i in range(n)]
    _write_csv(out / f"{stem}.csv", rows, ["index"] + list(mats))
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, s), r in zip(spectra.items(), ranks):
        ax.semilogy(np.arange(1, n + 1), (s / s[0]).clamp_min(1e-18).numpy(), label=f"{name} (rank {r['numerical_rank']})")
    ax.set(xlabel="index i", ylabel="sigma_i / sigma_1", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)
    return ranks


def _figs_1_2(c: Config, out: Path, gen, rtol) -> Tuple[List[Dict], List[Dict]]:
    """Fig. 1 (full rank vs low rank vs sine low rank at the same k) and Fig. 2 (ReLU / sigmoid / sine)."""
    import torch

    import sinelr.spectral as sp

    n, k, omega = c.size, c.fig_rank, float(c.fig_omega)
    bound = 1.0 / math.sqrt(n)  # nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in))
    full = (torch.rand(n, n, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    U, V = sp.kaiming_factors(n, n, k, generator=gen)
    low = U @ V.T
    sine = sp.sine_matrix(U, V, omega)
    mats1 = {"full_rank_kaiming": full, f"lowrank_k{k}": low, f"sine_k{k}_omega{omega:g}": sine}
    fig1 = _spectra_figure(out, mats1, "matrix", "fig1_spectra", f"Fig. 1: spectra, {n}x{n}, k={k}, omega={omega:g}", rtol)
    arg = omega * low  # Fig. 2 reuses Fig. 1's matrices
    mats2 = {"none (U V^T)": low, "relu": torch.relu(arg), "sigmoid": torch.sigmoid(arg), "sine": sine}
    fig2 = _spectra_figure(out, mats2, "activation", "fig2_activations",
                           f"Fig. 2: phi(omega U V^T), k={k}, omega={omega:g}", rtol)
    return fig1, fig2


def _fig3(c: Config, out: Path, gen, rtol) -> Tuple[Dict[int, Tuple], List[Dict]]:
    """Fig. 3: rank of sin(omega U V^T) vs omega for each k (CSV + plot) and the 128x128 heatmaps."""
    import numpy as np

    import sinelr.spectral as sp

    plt = _pyplot()
    n = c.size
    factors = {kk: sp.kaiming_factors(n, n, kk, generator=gen) for kk in c.ranks}
    sweep = [{"k": kk, "omega": float(w), **_ranks_of(sp.sine_matrix(Uk, Vk, float(w)), rtol)}
             for kk, (Uk, Vk) in factors.items() for w in c.omegas]
    _write_csv(out / "fig3_omega_sweep.csv", sweep, ["k", "omega", "numerical_rank", "rank_rtol1e-4", "stable_rank", "effective_rank"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kk in c.ranks:
        pts = [r for r in sweep if r["k"] == kk]
        axes[0].semilogx([r["omega"] for r in pts], [r["numerical_rank"] for r in pts], "o-", label=f"k={kk}")
        axes[1].loglog([r["omega"] for r in pts], [r["stable_rank"] for r in pts], "o-", label=f"k={kk}")
    axes[0].axhline(n, color="gray", ls=":", lw=1)
    axes[0].set(xlabel="omega", ylabel="numerical rank", title=f"rank of sin(omega U V^T), {n}x{n}")
    axes[1].set(xlabel="omega", ylabel="stable rank ||.||_F^2 / ||.||_2^2", title="stable rank")
    for a in axes:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig3_omega_sweep.png", dpi=110)
    plt.close(fig)

    hk = c.fig_rank
    Uh, Vh = sp.kaiming_factors(128, 128, min(hk, 128), generator=gen)
    panels = [("U V^T", Uh @ Vh.T)] + [(f"sin({w:g} U V^T)", sp.sine_matrix(Uh, Vh, float(w))) for w in c.heatmap_omegas]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for a, (title, M) in zip(np.atleast_1d(axes), panels):
        im = a.imshow(M.numpy(), cmap="RdBu_r")
        a.set_title(f"{title}\nrank {sp.numerical_rank(M, rtol=rtol)}", fontsize=9)
        a.set_xticks([])
        a.set_yticks([])
        fig.colorbar(im, ax=a, fraction=0.046)
    fig.suptitle(f"Fig. 3 heatmaps: 128x128, k={hk}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "fig3_heatmaps.png", dpi=80)
    plt.close(fig)
    return factors, sweep


def _prop1(c: Config, out: Path, factors: Dict[int, Tuple], rtol) -> Tuple[List[Dict], Dict]:
    """Both forms of Prop. 1 beside the measured rank and stable rank over the validity range (CSV + plot)."""
    import numpy as np
    import torch

    import sinelr.spectral as sp

    plt = _pyplot()

    def row(k, A, S, w, w_max):
        return {"k": k, "omega": w, "omega_max": w_max, "prop1_printed_bound": sp.prop1_printed_bound(A, w),
                "prop1_stable_rank_bound": sp.prop1_stable_rank_bound(A, w),
                "numerical_rank": sp.numerical_rank(S, rtol=rtol), "stable_rank": sp.stable_rank(S)}

    prop = []
    for kk, (Uk, Vk) in factors.items():
        A = Uk @ Vk.T
        w_max = sp.prop1_max_omega(A)
        for w in np.geomspace(w_max * 1e-4, w_max, c.prop1_points):
            w = float(min(w, w_max))
            prop.append(row(kk, A, sp.sine_matrix(Uk, Vk, w), w, w_max))
    # The counterexample to the printed statement: one non-zero entry a at omega = pi/(3a) (printed bound pi/3 > rank 1;
    # corrected bound pi/12). See docs/theory.md.
    single = torch.zeros(c.size, c.size, dtype=torch.float64)
    single[0, 0] = 0.5
    w1 = sp.prop1_max_omega(single)
    single_row = {**row("single-entry", single, torch.sin(w1 * single), w1, w1)}
    _write_csv(out / "prop1_bound.csv", prop + [single_row], list(single_row))
    fig, ax = plt.subplots(figsize=(6, 4))
    for kk in c.ranks:
        pts = [r for r in prop if r["k"] == kk]
        x = [r["omega"] / r["omega_max"] for r in pts]
        line, = ax.loglog(x, [r["numerical_rank"] for r in pts], "-", label=f"k={kk}: numerical rank")
        ax.loglog(x, [r["stable_rank"] for r in pts], "--", color=line.get_color(), label=f"k={kk}: stable rank")
        ax.loglog(x, [r["prop1_stable_rank_bound"] for r in pts], ":", color=line.get_color(),
                  label=f"k={kk}: Prop. 1 corrected bound")
    ax.set(xlabel="omega / omega_max (omega_max = pi / (3 A_min0))", ylabel="rank of sin(omega U V^T)",
           title=f"Prop. 1 (corrected, stable rank) vs measured, {c.size}x{c.size}")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "prop1_bound.png", dpi=110)
    plt.close(fig)
    return prop, single_row


def _omega0_seed(seed: int, m: int, n: int, k: int) -> int:
    """The generator seed of one omega_0 draw: crc32 of 'omega0:<m>x<n>:k<k>:seed<seed>'. One plain seed for every
    shape would reuse the same random stream, so a 384x384 U V^T would contain a block of the 256x256 one."""
    import zlib

    return zlib.crc32(f"omega0:{m}x{n}:k{k}:seed{seed}".encode())


def _omega0_seed_rows(c: Config) -> Tuple[List[Dict], List[str]]:
    """One row per (shape, k, seed): omega_0 of sin(omega U V^T) for Kaiming U, V and, by exact rescaling, for
    Thm. 3.1's init U, V ~ U(+-1/N) with N = max(m, n); plus A_min0 and Prop. 1's range for that init."""
    import torch

    import sinelr.spectral as sp

    rows, skipped = [], []
    for shape in c.omega0_shapes:
        m, n = _parse_shape(shape)
        big_n = max(m, n)
        for k in c.omega0_ranks:
            if k >= min(m, n):
                skipped.append(f"{m}x{n} k={k}")
                continue
            for seed in c.omega0_seeds:
                U, V = sp.kaiming_factors(m, n, k, generator=torch.Generator().manual_seed(_omega0_seed(seed, m, n, k)))
                r = sp.omega0_search(U, V, k, rtol=c.omega0_rtol, x_min=float(c.omega0_x_range[0]),
                                     x_max=float(c.omega0_x_range[1]), per_decade=c.omega0_per_decade,
                                     precision=c.omega0_precision)
                # Same draws as sp.uniform_factors(m, n, k, 1/N): U V^T(theorem) = U V^T(kaiming) / to_thm.
                to_thm = big_n ** 2 / math.sqrt(k * n)
                a_thm = r["a_min0"] / to_thm
                op2 = float(torch.linalg.matrix_norm((U @ V.T).abs().sqrt(), ord=2)) ** 2
                rows.append({
                    "m": m, "n": n, "k": k, "seed": seed, "generator_seed": _omega0_seed(seed, m, n, k), "N": big_n,
                    "omega0_rank_kaiming": r["omega0_rank"], "omega0_stable_kaiming": r["omega0_stable_rank"],
                    "omega0_rank_theorem": r["omega0_rank"] * to_thm,
                    "omega0_stable_theorem": r["omega0_stable_rank"] * to_thm,
                    "theorem_omega_bound": math.pi * big_n ** 2 / 3,
                    "rms_theorem": r["rms"] / to_thm, "a_min0_theorem": a_thm, "a_min0_times_N2": a_thm * big_n ** 2,
                    "prop1_omega_max_theorem": math.pi / (3 * a_thm),
                    "prop1_corrected_bound_at_max": math.pi * r["a_min0"] / (12 * op2),  # scale-free
                    "rank_at_x_min": r["rank_at_x_min"], "stable_at_x_min": r["stable_rank_at_x_min"],
                    "max_stable_rank_seen": r["max_stable_rank_seen"], "x_max": r["x_max"],
                })
    return rows, skipped


def _spread(values: List[float]) -> Dict[str, float]:
    import statistics

    ok = [v for v in values if not math.isnan(v)]
    if not ok:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "reached": 0}
    return {"median": statistics.median(ok), "min": min(ok), "max": max(ok), "reached": len(ok)}


def _omega0_table(c: Config, out: Path) -> Tuple[List[Dict], List[str]]:
    """omega0_seeds.csv (every seed) and omega0.csv (median / min / max over seeds per shape and k)."""
    seed_rows, skipped = _omega0_seed_rows(c)
    _write_csv(out / "omega0_seeds.csv", seed_rows, list(seed_rows[0]) if seed_rows else ["m"])
    table = []
    for key in dict.fromkeys((r["m"], r["n"], r["k"]) for r in seed_rows):
        rs = [r for r in seed_rows if (r["m"], r["n"], r["k"]) == key]
        row: Dict[str, Any] = {"m": key[0], "n": key[1], "k": key[2], "seeds": len(rs), "rank_rtol": c.omega0_rtol}
        for col in ("omega0_rank_kaiming", "omega0_stable_kaiming", "omega0_rank_theorem", "omega0_stable_theorem"):
            st = _spread([r[col] for r in rs])
            row.update({f"{col}_{s}": st[s] for s in ("median", "min", "max")})
            if col.startswith("omega0_stable"):
                row[f"{col}_seeds_reached"] = st["reached"]
        for col in ("theorem_omega_bound", "a_min0_theorem", "a_min0_times_N2", "prop1_omega_max_theorem",
                    "prop1_corrected_bound_at_max", "max_stable_rank_seen"):
            row[f"{col}_median" if col != "theorem_omega_bound" else col] = _spread([r[col] for r in rs])["median"]
        row["stable_at_x_min_any"] = any(r["stable_at_x_min"] for r in rs)
        row["rank_at_x_min_any"] = any(r["rank_at_x_min"] for r in rs)
        table.append(row)
    _write_csv(out / "omega0.csv", table, list(table[0]) if table else ["m"])
    _omega0_plot(c, out, table)
    return table, skipped


def _omega0_plot(c: Config, out: Path, table: List[Dict]) -> None:
    """omega0.png: omega_0 vs k per shape (median, bars = min..max over seeds), both inits, theorem's range.

    Stable-rank points reached at the grid's first omega (k = 1: any lift of a rank-1 matrix has stable rank > 1)
    are left out: they are only an upper bound set by the grid."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, shape in enumerate(dict.fromkeys((r["m"], r["n"]) for r in table)):
        pts = [r for r in table if (r["m"], r["n"]) == shape]
        color = f"C{i}"
        for a, init in zip(axes, ("kaiming", "theorem")):
            for crit, style in (("rank", "o-"), ("stable", "s--")):
                col = f"omega0_{crit}_{init}"
                use = [r for r in pts if not (crit == "stable" and r["stable_at_x_min_any"])]
                med = [r[f"{col}_median"] for r in use]
                err = [[m_ - r[f"{col}_min"] for m_, r in zip(med, use)], [r[f"{col}_max"] - m_ for m_, r in zip(med, use)]]
                a.errorbar([r["k"] for r in use], med, yerr=err, fmt=style, color=color, ms=4, capsize=2,
                           label=f"{shape[0]}x{shape[1]}: {'rank' if crit == 'rank' else 'stable rank'} > k")
        axes[1].axhline(pts[0]["theorem_omega_bound"], color=color, ls=":", lw=1)
    axes[0].set(title="Kaiming init (SineLowRankLinear)", ylabel="omega_0 (median, min..max over seeds)")
    axes[1].set(title="Thm. 3.1 init U(+-1/N), N = max(m, n); dotted: pi N^2 / 3", ylabel="omega_0")
    for a in axes:
        a.set(xscale="log", yscale="log", xlabel="k")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(f"smallest omega with rank (s > {c.omega0_rtol:g} s_max) > k and with stable rank > k; "
                 f"seeds {list(c.omega0_seeds)}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(out / "omega0.png", dpi=110)
    plt.close(fig)


def _summary_figures(c: Config, prov: Dict, res: Dict) -> List[str]:
    """summary.md: header and the Figs. 1-3 sections."""
    import sinelr.spectral as sp
    from sinelr.report import markdown_table

    sweep, rtol = res["sweep"], (c.rtol or None)
    key_omegas = [w for w in c.omegas if w in (1, 10, 100, 1000)] or list(c.omegas)[:4]
    key_rows = []
    for kk in c.ranks:
        U, V = res["factors"][kk]
        row = {"k": kk, "rank(U V^T)": sp.numerical_rank(U @ V.T, rtol=rtol)}
        for w in key_omegas:
            r = next(x for x in sweep if x["k"] == kk and x["omega"] == float(w))
            row[f"omega={w:g}"] = f"{r['numerical_rank']} / {r['rank_rtol1e-4']} / {r['stable_rank']:.1f}"
        key_rows.append(row)
    grows = all([r["numerical_rank"] for r in sweep if r["k"] == kk][-1] > kk for kk in c.ranks)
    cols4 = ["numerical_rank", "rank_rtol1e-4", "stable_rank", "effective_rank"]
    n, k, omega = c.size, c.fig_rank, float(c.fig_omega)
    return [
        "# Theory: spectra and rank of sin(omega U V^T) (paper Figs. 1-3, Prop. 1, Thm. 3.1's omega_0)",
        "",
        f"- command: `{prov['command']}`",
        f"- seed: {c.seed}; matrices {n}x{n}, float64, U V^T from `sinelr.spectral.kaiming_factors` "
        "(U ~ U(+-1/sqrt(k)), V ~ U(+-1/sqrt(n)), the init of SineLowRankLinear); full-rank reference ~ U(+-1/sqrt(n)) (nn.Linear)",
        f"- numerical rank: singular values > {'rtol * s_max, rtol=' + str(c.rtol) if c.rtol else 'max(m, n) * eps * s_max (numpy default)'}",
        f"- machine: {prov['machine']}; git {prov['git_sha']}; torch {prov['torch']}; {res['seconds']:.1f} s "
        f"(figures {res['seconds_figures']:.1f} s)",
        "- reduced vs the paper: nothing is trained here; the matrix sizes and seeds are ours (the paper does not list them all).",
        "",
        f"## Fig. 1 (k={k}, omega={omega:g}): ranks of the three matrices",
        "",
        markdown_table(res["fig1"], ["matrix"] + cols4),
        "",
        f"## Fig. 2 (same U V^T, phi(omega U V^T) with omega={omega:g})",
        "",
        markdown_table(res["fig2"], ["activation"] + cols4),
        "",
        "## Fig. 3: numerical rank / rank at rtol 1e-4 / stable rank of sin(omega U V^T) vs k and omega",
        "",
        "The numerical rank uses numpy's tolerance (s > max(m, n) eps s_max), so the tiny higher-order Taylor terms "
        "of sin count; the rank at rtol 1e-4 and the stable rank count only directions of practical size.",
        "",
        markdown_table(key_rows, ["k", "rank(U V^T)"] + [f"omega={w:g}" for w in key_omegas]),
        "",
        f"Full sweep: `fig3_omega_sweep.csv`. The rank of sin(omega U V^T) exceeds k at the largest omega for every k: "
        f"{'yes' if grows else 'NO'}.",
        "",
    ]


def _summary_prop1(prop: List[Dict], single: Dict) -> List[str]:
    """summary.md: the Prop. 1 section (printed and corrected bound)."""
    def count(bound: str, measure: str) -> int:
        return sum(r[bound] > r[measure] for r in prop)

    return [
        "## Prop. 1 over omega in (0, pi / (3 A_min0)]: printed bound omega A_min0^2 / ||sqrt|A| ||_op^2 (on the rank) "
        "and corrected bound omega A_min0^2 / (4 ||sqrt|A| ||_op^2) (on the stable rank)",
        "",
        f"- {len(prop)} (k, omega) points on the Kaiming U V^T above: printed bound > numerical rank in "
        f"{count('prop1_printed_bound', 'numerical_rank')}, > stable rank in {count('prop1_printed_bound', 'stable_rank')}; "
        f"corrected bound > stable rank in {count('prop1_stable_rank_bound', 'stable_rank')}; largest printed bound "
        f"{max(r['prop1_printed_bound'] for r in prop):.3g}, largest corrected bound "
        f"{max(r['prop1_stable_rank_bound'] for r in prop):.3g}.",
        f"- single non-zero entry a=0.5 at omega = pi/(3a): printed bound {single['prop1_printed_bound']:.4f} "
        f"(> rank {single['numerical_rank']}: the printed statement fails), corrected bound "
        f"{single['prop1_stable_rank_bound']:.4f} (= pi/12 <= stable rank {single['stable_rank']:.4f}).",
        "- Why the bounds are small: ||sqrt|A| ||_op^2 >= sum_j |A_ij| >= A_min0 * nnz(row i) for every row, so in the "
        "validity range the printed bound is at most (pi/3) / (largest number of non-zeros in a row or column) and "
        "the corrected one a quarter of that, <= pi/12 < 1. For dense matrices such as U V^T they are below 1/n and "
        "say nothing beyond rank >= 1; the rank growth of Fig. 3 is what shows the effect.",
        "",
    ]


def _summary_omega0(c: Config, table: List[Dict], skipped: List[str], seconds: float) -> List[str]:
    """summary.md: the empirical omega_0 table (Thm. 3.1's constant, measured)."""
    from sinelr.report import markdown_table

    def spread(r: Dict, col: str) -> str:
        if math.isnan(r[f"{col}_median"]):
            return "not reached"
        text = f"{r[f'{col}_median']:.3g} [{r[f'{col}_min']:.3g}, {r[f'{col}_max']:.3g}]"
        reached = r.get(f"{col}_seeds_reached", r["seeds"])
        return text + (f" ({reached}/{r['seeds']} seeds)" if reached < r["seeds"] else "")

    rows = [{"shape": f"{r['m']}x{r['n']}", "k": r["k"],
             "rank > k, Kaiming": spread(r, "omega0_rank_kaiming"),
             "stable rank > k, Kaiming": (spread(r, "omega0_stable_kaiming")
                                          + (" (at grid start)" if r["stable_at_x_min_any"] else "")),
             "rank > k, Thm. init": spread(r, "omega0_rank_theorem"),
             "stable rank > k, Thm. init": spread(r, "omega0_stable_theorem"),
             "pi N^2 / 3": f"{r['theorem_omega_bound']:.3g}",
             "A_min0 N^2": f"{r['a_min0_times_N2_median']:.2g}",
             "max stable rank (if not reached)": (f"{r['max_stable_rank_seen_median']:.1f}"
                                                  if r["omega0_stable_kaiming_seeds_reached"] < r["seeds"] else "")}
            for r in table]
    lo, hi = c.omega0_x_range
    return [
        "## Empirical omega_0 (Thm. 3.1): smallest omega with rank > k and with stable rank > k",
        "",
        f"- U (m x k), V (n x k) from `kaiming_factors` (seeds {list(c.omega0_seeds)}; the generator of each draw is seeded "
        "with crc32('omega0:<m>x<n>:k<k>:seed<seed>'), column generator_seed); the Thm. 3.1 columns are the same "
        "draws scaled to U, V ~ U(+-1/N), N = max(m, n) (omega_0 scales exactly by N^2 / sqrt(k n)).",
        f"- rank: singular values > {c.omega0_rtol:g} * s_max; stable rank ||S||_F^2 / ||S||_op^2. omega searched as "
        f"x / rms(U V^T), x from {lo:g} to {hi:g} on a log grid ({c.omega0_per_decade} a decade), first crossing "
        f"bisected to {c.omega0_precision:g} relative width. Entries: median [min, max] over seeds.",
        "- A_min0 N^2: the smallest non-zero |entry| of U V^T under the theorem's init times N^2, i.e. the 'C' its proof "
        "assumes fixed; Prop. 1's range pi/(3 A_min0) is in `omega0.csv` (prop1_omega_max_theorem_median).",
        f"- skipped (k >= min(m, n), rank cannot exceed k): {', '.join(skipped) or 'none'}; {seconds:.0f} s.",
        "",
        markdown_table(rows, list(rows[0]) if rows else ["shape"]),
        "",
        "Files: `omega0.csv` (per shape and k), `omega0_seeds.csv` (per seed), `omega0.png`. "
        "'not reached': the stable rank stayed <= k up to the end of the grid; it saturates at the value in the last "
        "column (median over seeds of the largest stable rank seen on the grid).",
    ]


def run(config: Config) -> Dict:
    """Compute every figure's data and the omega_0 table, write CSV/PNG/summary.md, return the key numbers."""
    _validate(config)
    from sinelr.sweep import publish_folder

    final: Dict = {}
    publish_folder(Path(config.output_dir), lambda staging: final.update(_compute(config, staging)))
    return final


def _compute(config: Config, out: Path) -> Dict:
    """Every output written into `out` (a staging copy of output_dir: an interrupted run changes nothing)."""
    import torch

    from sinelr.config import config_to_dict
    from sinelr.report import write_run_header

    t0 = time.perf_counter()
    prov = write_run_header(out, config_to_dict(config))
    rtol = config.rtol or None
    gen = torch.Generator().manual_seed(config.seed)  # one stream, drawn in a fixed order: Fig. 1, Fig. 3, heatmaps
    fig1, fig2 = _figs_1_2(config, out, gen, rtol)
    factors, sweep = _fig3(config, out, gen, rtol)
    prop, single_row = _prop1(config, out, factors, rtol)
    t_fig = time.perf_counter() - t0
    table, skipped = _omega0_table(config, out)
    seconds = time.perf_counter() - t0
    res = {"fig1": fig1, "fig2": fig2, "sweep": sweep, "factors": factors, "prop1": prop,
           "prop1_single_entry": single_row, "omega0": table, "seconds": seconds, "seconds_figures": t_fig}
    lines = (_summary_figures(config, prov, res) + _summary_prop1(prop, single_row)
             + _summary_omega0(config, table, skipped, seconds - t_fig))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    res.pop("factors")
    return res
