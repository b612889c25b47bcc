"""BD-rate / BD-PSNR of sine low-rank vs low-rank NeRFs and the rate-distortion plot (paper Fig. 5).

Reads `summary.csv` of one or more finished `sinelr nerf` sweeps, takes rate = parameter count and
quality = held-out PSNR (mean over seeds), and prints Bjontegaard deltas with Akima (the paper's
interpolation) and PCHIP beside it, low-rank as the anchor (negative BD-rate = sine needs fewer
parameters for the same PSNR), per scene and for the mean over scenes; a figure where the two
interpolations disagree is flagged. Writes bdrate.json and rd_plot.png (error bars over seeds) next to
summary.csv. The computation is sinelr.metrics.bd_figures; the curves and plot are sinelr.report's rd_*.
Example:
  sinelr bdrate results/nerf/nerf_cpu
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sinelr.errors import ConfigError

POSITIONAL = "paths"


@dataclass
class Config:
    paths: List[str] = field(default_factory=list, metadata={"help": "results folders (or summary.csv files)"})
    omega: Optional[float] = field(default=None, metadata={
        "help": "omega of the sine curve (default: the only sine omega of the rows, else the folder's config omega)"})
    plot: bool = field(default=True, metadata={"help": "draw rd_plot.png"})


def _omega(rows: List[Dict[str, Any]], folder: Path, omega: Optional[float]) -> Optional[float]:
    """--omega, else the only sine omega of the rows, else the table omega of the folder's config.json."""
    from sinelr.report import rd_omega

    if omega is None and len({r["omega"] for r in rows if r["method"] == "sine"}) > 1:
        cfg = folder / "config.json"
        omega = json.loads(cfg.read_text()).get("omega") if cfg.is_file() else None
    return rd_omega(rows, omega)


def _print(folder: Path, omega: Optional[float], bd: Dict[str, Any], curves) -> None:
    print(f"{folder}: sine (omega {omega}) vs low-rank, rate = parameters, PSNR = mean over seeds")
    for name, b in bd.items():
        ranks = sorted(set(curves[name]["lowrank"].ranks) & set(curves[name]["sine"].ranks))
        if b.error:
            print(f"  {name:>8}: not computable: {b.error}")
            continue
        print(f"  {name:>8}: BD-rate {b.rate_akima:+.4g} % (Akima) / {b.rate_pchip:+.4g} % (PCHIP), "
              f"BD-PSNR {b.psnr_akima:+.2f} / {b.psnr_pchip:+.2f} dB, ranks {ranks}")
        for w in b.warnings:
            print(f"  {'':>8}  UNRELIABLE: {w}")


def run(config: Config) -> Dict[str, Any]:
    """Print BD-rate / BD-PSNR of every given results folder; write bdrate.json and its RD plot there."""
    from sinelr.report import (PAPER_NERF_BD_PSNR, PAPER_NERF_BD_RATE, rd_bd_figures, rd_curves, rd_plot,
                               read_rd_rows, write_json)
    from sinelr.sweep import publish_folder

    if not config.paths:
        raise ConfigError("give at least one results folder, e.g. `sinelr bdrate results/nerf/nerf_cpu`")
    loaded = []
    for p in config.paths:  # every folder is read and checked before anything is written
        rows = read_rd_rows(p)
        folder = Path(p) if Path(p).is_dir() else Path(p).parent
        loaded.append((folder, rows, _omega(rows, folder, config.omega)))
    results: Dict[str, Any] = {}
    for folder, rows, omega in loaded:
        curves = rd_curves(rows, omega)
        bd = rd_bd_figures(curves)
        _print(folder, omega, bd, curves)
        record = {"omega": omega, "anchor": "lowrank", "rate": "parameter count", "quality": "PSNR, mean over seeds",
                  "results": {n: dataclasses.asdict(b) for n, b in bd.items()},
                  "paper": {"bd_rate": PAPER_NERF_BD_RATE, "bd_psnr": PAPER_NERF_BD_PSNR, "interp": "akima"}}

        def write(staging: Path, record=record, curves=curves, bd=bd, folder=folder) -> None:
            write_json(staging / "bdrate.json", record)
            if config.plot:
                rd_plot(curves, bd, staging / "rd_plot.png", f"{folder.name}: rate-distortion (cf. paper Fig. 5)")

        publish_folder(folder, write)
        print(f"  wrote {folder / 'bdrate.json'}" + (f" and {folder / 'rd_plot.png'}" if config.plot else ""))
        results[str(folder)] = bd
    return results
