"""BD-rate / BD-PSNR of sine low-rank vs low-rank NeRFs and the rate-distortion plot (paper Fig. 5).

Reads `summary.csv` of one or more finished `sinelr nerf` sweeps, takes rate = parameter count and
quality = held-out PSNR, prints Bjontegaard deltas (Akima interpolation as the paper, PCHIP beside it,
low-rank as the anchor:
negative BD-rate = sine needs fewer parameters for the same PSNR) per scene and for the mean over
scenes, writes bdrate.json, and draws rd_plot.png (PSNR vs parameters, log x) next to summary.csv.
Example:
  sinelr bdrate results/nerf/nerf_cpu
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, DataError

__all__ = ["Config", "run", "POSITIONAL", "load_curves"]

POSITIONAL = "paths"


@dataclass
class Config:
    paths: List[str] = field(default_factory=list, metadata={"help": "results folders (or summary.csv files)"})
    omega: Optional[float] = field(default=None, metadata={
        "help": "omega of the sine curve (default: the sweep's main omega from its config.json)"})
    interp: str = field(default="akima", metadata={"help": "akima or pchip"})
    plot: bool = field(default=True, metadata={"help": "draw rd_plot.png"})


Curve = Tuple[List[float], List[float], List[int]]  # rates, psnrs, ranks


def _read_rows(path: Path) -> Tuple[List[Dict[str, str]], Optional[float], Path]:
    import json

    csv_path = path / "summary.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise FileNotFoundError(f"no summary.csv at {csv_path} (run `sinelr nerf` first or pass its results folder)")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"scene", "method", "rank", "omega", "params", "psnr"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{csv_path} lacks the columns {sorted(missing)}; is it a `sinelr nerf` summary?")
        rows = list(reader)
    omega = None
    cfg = csv_path.parent / "config.json"
    if cfg.is_file():
        omega = json.loads(cfg.read_text()).get("omega")
    return rows, omega, csv_path.parent


def load_curves(rows: List[Dict[str, Any]], omega: Optional[float]) -> Dict[str, Dict[str, Curve]]:
    """{scene or 'mean': {'lowrank': curve, 'sine': curve, 'full': ([params], [psnr], [0])}} sorted by rate.

    The mean curve averages PSNR over the scenes at the ranks every scene has.
    """
    sine_omegas = sorted({float(r["omega"]) for r in rows if r["method"] == "sine"})
    if omega is None:
        if len(sine_omegas) > 1:
            raise ConfigError(f"the results hold sine runs at several omegas {sine_omegas}; pass --omega")
        omega = sine_omegas[0] if sine_omegas else None
    scenes = sorted({r["scene"] for r in rows})
    out: Dict[str, Dict[str, Curve]] = {}

    def pick(sel, method):
        return [r for r in sel if r["method"] == method and (method != "sine" or float(r["omega"]) == float(omega))]

    for scene in scenes:
        sel = [r for r in rows if r["scene"] == scene]
        out[scene] = {}
        for method in ("lowrank", "sine", "full"):
            pts = sorted((float(r["params"]), float(r["psnr"]), int(r["rank"])) for r in pick(sel, method))
            out[scene][method] = ([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts])
    if len(scenes) > 1:
        out["mean"] = {}
        for method in ("lowrank", "sine", "full"):
            ranks = sorted(set.intersection(*[set(out[s][method][2]) for s in scenes]))
            rates, psnrs = [], []
            for k in ranks:
                rates.append(out[scenes[0]][method][0][out[scenes[0]][method][2].index(k)])
                psnrs.append(sum(out[s][method][1][out[s][method][2].index(k)] for s in scenes) / len(scenes))
            out["mean"][method] = (rates, psnrs, ranks)
    return out


def _plot(curves: Dict[str, Dict[str, Curve]], bd: Dict[str, Dict[str, float]], path: Path, title: str,
          interp: str = "akima") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[name]
        for method, style, label in (("lowrank", "o-", "low-rank"), ("sine", "s-", "sine low-rank")):
            rates, psnrs, ranks = c[method]
            if rates:
                ax.plot(rates, psnrs, style, label=label)
                for x, y, k in zip(rates, psnrs, ranks):
                    ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7)
        if c["full"][0]:
            ax.axhline(sum(c["full"][1]) / len(c["full"][1]), color="gray", ls="--", lw=1, label="full rank")
        ax.set_xscale("log")
        ax.set_xlabel("parameters (all NeRF MLPs)")
        ax.set_ylabel("test PSNR (dB)")
        b = bd.get(name, {})
        rate = b.get("bd_rate", float("nan"))
        rate_txt = f"{rate:.1f}%" if abs(rate) <= 1000 else "ill-cond."
        extra = "".join(f"\n{k.split('_')[-1]}: BD-rate {v:.1f}%, BD-PSNR {b.get('bd_psnr_' + k.split('_')[-1]):+.2f} dB"
                        for k, v in b.items() if k.startswith("bd_rate_"))
        ax.set_title(f"{name}: BD-rate {rate_txt}, BD-PSNR {b.get('bd_psnr', float('nan')):+.2f} dB ({interp}){extra}",
                     fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: Config) -> Dict[str, Any]:
    """Print BD-rate / BD-PSNR of every given results folder and draw its RD plot."""
    from ..metrics import bd_psnr, bd_rate
    from ..report import write_json

    if not config.paths:
        raise ConfigError("give at least one results folder, e.g. `sinelr bdrate results/nerf/nerf_cpu`")
    if config.interp not in ("akima", "pchip"):
        raise ConfigError(f"interp must be akima or pchip, got {config.interp!r}")
    results: Dict[str, Any] = {}
    for p in config.paths:
        rows, cfg_omega, folder = _read_rows(Path(p))
        omega = config.omega if config.omega is not None else cfg_omega
        curves = load_curves(rows, omega)
        bd: Dict[str, Dict[str, float]] = {}
        print(f"{folder}: sine (omega {omega}) vs low-rank, rate = parameters, {config.interp} interpolation")
        other = "pchip" if config.interp == "akima" else "akima"
        for name, c in curves.items():
            a, b = (c["lowrank"][0], c["lowrank"][1]), (c["sine"][0], c["sine"][1])
            try:
                bd[name] = {"bd_rate": bd_rate(*a, *b, config.interp), "bd_psnr": bd_psnr(*a, *b, config.interp),
                            f"bd_rate_{other}": bd_rate(*a, *b, other), f"bd_psnr_{other}": bd_psnr(*a, *b, other),
                            "ranks": sorted(set(c["lowrank"][2]) & set(c["sine"][2]))}
                flag = "  <- ill-conditioned (near-flat curve)" if abs(bd[name]["bd_rate"]) > 1000 else ""
                print(f"  {name:>8}: BD-rate {bd[name]['bd_rate']:10.4g} %   BD-PSNR {bd[name]['bd_psnr']:+6.2f} dB"
                      f"   ({other}: {bd[name][f'bd_rate_{other}']:.2f} %, {bd[name][f'bd_psnr_{other}']:+.2f} dB)"
                      f"   ranks {bd[name]['ranks']}{flag}")
            except ValueError as exc:
                bd[name] = {"bd_rate": math.nan, "bd_psnr": math.nan, "error": str(exc)}  # type: ignore[dict-item]
                print(f"  {name:>8}: not computable: {exc}")
        write_json(folder / "bdrate.json", {"omega": omega, "interp": config.interp, "anchor": "lowrank",
                                            "rate": "parameter count", "results": bd,
                                            "paper": {"bd_rate": -64.72, "bd_psnr": 2.72}})
        if config.plot:
            _plot(curves, bd, folder / "rd_plot.png", f"{folder.name}: rate-distortion (cf. paper Fig. 5)", config.interp)
            print(f"  plot: {folder / 'rd_plot.png'}")
        results[str(folder)] = bd
    return results
