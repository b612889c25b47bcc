"""3D binary occupancy fields (paper Tab. 6, Figs. 6 and 8): a Gaussian-activation coordinate MLP with
dense, low-rank or sine low-rank hidden layers fitted to a mesh; IoU on a dense grid.

Per mesh, the grid is: the full-rank model, low-rank and sine low-rank at each rank, and an omega
sweep of the sine model at one rank, each for every seed. Results go to <output_dir>/<mesh name>/
(summary.csv, summary.md with the paired per-seed verdicts, the IoU-vs-omega plot with error bars,
marching-cubes PLYs and a render of the rank-k models); run folders with checkpoints and predictions
go under <run_dir>/<mesh name>/ (git-ignored). The sweep runner (sinelr.sweep) skips finished points
and refuses to mix rows computed under other settings.

Example: sinelr occupancy --config configs/occupancy.yaml --seeds 0 1 2 --method-lr full=0.005 sine=0.005
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sinelr.errors import ConfigError
from sinelr.config import method_learning_rates

COLUMNS: Dict[str, Any] = {"mesh": str, "method": str, "rank": "int|str", "omega": float, "seed": int,
                           "params": int, "compression": float, "iou": float, "final_loss": float,
                           "train_seconds": float, "model_bytes": int}
KEY = ["mesh", "method", "rank", "omega", "seed"]
METHODS = ("full", "lowrank", "sine")
# Paper Tab. 6 (Thai statue, 512^3 grid), IoU in %: rank -> (low-rank, sine low-rank); full rank 97.2.
PAPER_TAB6 = {1: (84.3, 90.8), 2: (88.0, 92.0), 5: (93.4, 94.3), 20: (95.4, 95.4)}
PAPER_FULL = 97.2
SENSITIVITY_MARGIN = 2.0  # EVIDENCE.md: dense must beat low-rank at the smallest rank by 2 IoU points


@dataclass
class Config:
    mesh: List[str] = field(default_factory=lambda: ["bunny_watertight_remeshed.obj", "armadillo.obj"], metadata={
        "help": "mesh files (.ply/.obj/.off/.stl): a path, or a file name inside <data_dir>/meshes"})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "folder holding meshes/ (default: $SINELR_DATA_DIR, else ../shared/data)"})
    output_dir: str = field(default="results/occupancy", metadata={"help": "results go to <output_dir>/<mesh name>/"})
    run_dir: str = field(default="runs/occupancy", metadata={"help": "run folders: checkpoints, predictions (git-ignored)"})
    cache_dir: str = field(default="runs/cache/occupancy", metadata={
        "help": "labelled grids and training sets, keyed by mesh sha256 + settings (git-ignored)"})
    eval_resolution: int = field(default=128, metadata={"help": "IoU grid resolution R (R^3 points; the paper: 512)"})
    mesh_resolution: int = field(default=64, metadata={"help": "marching-cubes grid for the k-rank PLY meshes"})
    ply_max_faces: int = field(default=20000, metadata={
        "help": "coarsen marching cubes (larger step) until a PLY has at most this many triangles"})
    margin: float = field(default=0.05, metadata={"help": "the mesh's longest side spans [-(1-margin), 1-margin]"})
    n_uniform: int = field(default=100_000, metadata={"help": "training points uniform in [-1, 1]^3"})
    n_surface: int = field(default=100_000, metadata={"help": "training points near the surface"})
    surface_sigma: List[float] = field(default_factory=lambda: [0.01, 0.03], metadata={
        "help": "std of the Gaussian offsets of near-surface points (equal shares)"})
    hidden_features: int = field(default=256, metadata={"help": "width of the hidden layers (paper: 256)"})
    hidden_layers: int = field(default=2, metadata={"help": "number of hidden activation layers (paper: 2)"})
    scale: float = field(default=10.0, metadata={"help": "s of the Gaussian activation exp(-(s x)^2)"})
    methods: List[str] = field(default_factory=lambda: list(METHODS), metadata={"help": "full, lowrank, sine"})
    ranks: List[int] = field(default_factory=lambda: [1, 2, 5, 20], metadata={"help": "ranks k of the hidden layers"})
    omega: float = field(default=100.0, metadata={"help": "omega of the sine low-rank layers in the table"})
    gain: Optional[float] = field(default=None, metadata={"help": "gain g of sin(omega U V^T)/g (default sqrt(width))"})
    omegas: List[float] = field(default_factory=lambda: [10.0, 30.0, 100.0, 300.0, 1000.0], metadata={
        "help": "omegas of the sine sweep (Fig. 8); 'none' for no sweep"})
    omega_sweep_rank: int = field(default=1, metadata={"help": "rank of the omega sweep"})
    omega_sweep_meshes: List[str] = field(default_factory=lambda: ["all"], metadata={
        "help": "mesh names (file stems) that get the omega sweep, or 'all'"})
    steps: int = field(default=300, metadata={"help": "optimisation steps per model"})
    batch_size: int = field(default=4096, metadata={"help": "points per step"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (cosine decay, linear warmup)"})
    method_lr: List[str] = field(default_factory=list, metadata={
        "help": "per-method learning rates as method=value items (e.g. sine=0.015); others use lr"})
    warmup: int = field(default=30, metadata={"help": "warmup steps"})
    seeds: List[int] = field(default_factory=lambda: [0], metadata={"help": "seeds of init, training points and batches"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda"})
    eval_chunk: int = field(default=65536, metadata={"help": "grid points per forward pass at evaluation"})
    checkpoint_every: int = field(default=500, metadata={"help": "checkpoint interval in steps (and at the end)"})
    render_only: bool = field(default=False, metadata={"help": "train nothing: re-render summary.md and plots from summary.csv"})
    note: str = field(default="", metadata={"help": "a line printed at the top of summary.md"})
    protocol: List[str] = field(default_factory=list, metadata={
        "help": "protocol facts measured elsewhere (doubling check, LR grid), one line each, shown at the top"})


SPEC_ARGS = dict(
    grid_keys=("mesh", "methods", "ranks", "omegas", "omega_sweep_rank", "omega_sweep_meshes", "seeds", "render_only",
               "note", "protocol"),
    not_in_results=("output_dir", "run_dir", "cache_dir", "device", "eval_chunk", "checkpoint_every", "data_dir",
                    "mesh_resolution", "ply_max_faces"),
    not_in_training=("eval_resolution",),
)


def _validate(c: Config) -> Dict[str, float]:
    bad = [m for m in c.methods if m not in METHODS]
    if bad or not c.methods:
        raise ConfigError(f"methods must be a non-empty subset of {list(METHODS)}, got {c.methods}")
    if not c.mesh or not c.seeds:
        raise ConfigError(f"mesh and seeds must be non-empty, got mesh={c.mesh}, seeds={c.seeds}")
    for name in ("steps", "batch_size", "eval_chunk", "hidden_features", "hidden_layers"):
        if getattr(c, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(c, name)}")
    if c.warmup < 0 or c.checkpoint_every < 0:
        raise ConfigError(f"warmup and checkpoint_every must be >= 0, got {c.warmup}, {c.checkpoint_every}")
    for k in list(c.ranks) + ([c.omega_sweep_rank] if c.omegas else []):
        if not 1 <= k <= c.hidden_features:
            raise ConfigError(f"ranks must be in [1, hidden_features={c.hidden_features}], got {k}")
    from sinelr.functional import check_omega

    for w in [c.omega] + list(c.omegas):
        check_omega(w)
    if not (c.lr > 0 and c.scale > 0):
        raise ConfigError(f"lr and scale must be > 0, got lr={c.lr}, scale={c.scale}")
    if c.mesh_resolution < 8:
        raise ConfigError(f"mesh_resolution must be >= 8, got {c.mesh_resolution}")
    return method_learning_rates(c.method_lr, METHODS, c.lr)


def _resolve_mesh(entry: str, data_dir: Optional[str]) -> Path:
    from sinelr.data import resolve_data_dir

    p = Path(entry).expanduser()
    if p.is_file():
        return p
    if p.exists():
        raise ConfigError(f"mesh {str(p)!r} is not a file (a directory?); give a .ply/.obj/.off/.stl/.glb file")
    if p.parent != Path("."):
        raise FileNotFoundError(f"mesh file {str(p)!r} does not exist")
    try:
        folder = resolve_data_dir(data_dir, "meshes", "the mesh files (meshes/<name>.obj|ply)")
    except FileNotFoundError:
        raise FileNotFoundError(f"mesh file {entry!r} does not exist, and no meshes/ data folder was found "
                                "to look it up in (pass --data-dir)") from None
    if (folder / entry).is_file():
        return folder / entry
    raise FileNotFoundError(f"mesh file {entry!r} not found (tried {p.resolve()} and {folder / entry})")


def grid(c: Config, mesh_name: str) -> List[Dict[str, Any]]:
    """The points of one mesh: full, (low-rank, sine) per rank, then the omega sweep, for every seed."""
    cells: List[Dict[str, Any]] = []
    if "full" in c.methods:
        cells.append({"method": "full", "rank": "full", "omega": None})
    for k in c.ranks:
        cells += [{"method": m, "rank": k, "omega": c.omega if m == "sine" else None}
                  for m in ("lowrank", "sine") if m in c.methods]
    if c.omegas and "sine" in c.methods and ("all" in c.omega_sweep_meshes or mesh_name in c.omega_sweep_meshes):
        cells += [{"method": "sine", "rank": c.omega_sweep_rank, "omega": float(w)} for w in c.omegas
                  if {"method": "sine", "rank": c.omega_sweep_rank, "omega": float(w)} not in cells]
    return [{"mesh": mesh_name, **cell, "seed": s} for s in c.seeds for cell in cells]


def _shows_render(c: Config, point: Dict[str, Any]) -> bool:
    """The models drawn in renders_k1.png (and saved as PLY): full and the table's models at the first rank."""
    return point["method"] == "full" or (point["rank"] == c.ranks[0] and point["omega"] in (None, c.omega))


def run_one(c: Config, lrs: Dict[str, float], mesh_path: Path, point: Dict[str, Any], folder: Path,
            fingerprint: str) -> Dict[str, Any]:
    """Train one point, evaluate IoU on the grid; predictions and the PLY go into the run folder."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from sinelr.convert import parameter_report
    from sinelr.data.occupancy import prepare_occupancy
    from sinelr.data.occupancy_viz import marching_cubes_ply, pack_grid, predict_grid
    from sinelr.kinds import linear_factory
    from sinelr.metrics import iou
    from sinelr.models.occupancy import OccupancyMLP
    from sinelr.serialization import save_pretrained
    from sinelr.train import cosine_with_warmup, resolve_device, seed_everything, train_loop

    data = prepare_occupancy(mesh_path, c.eval_resolution, c.n_uniform,
                             c.n_surface, c.surface_sigma, point["seed"], c.cache_dir, c.margin)
    device = resolve_device(c.device)
    seed_everything(point["seed"])
    rank = None if point["method"] == "full" else int(point["rank"])
    factory = linear_factory(point["method"], rank, omega=point["omega"] or c.omega, gain=c.gain)
    model = OccupancyMLP(3, c.hidden_features, c.hidden_layers, c.scale, linear_layer=factory).to(device)
    points, labels = torch.from_numpy(data.points).to(device), torch.from_numpy(data.labels.astype("float32")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lrs[point["method"]])
    sched = cosine_with_warmup(opt, c.warmup, c.steps, min_ratio=0.01)

    def step_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(point["seed"] * 1_000_003 + step)
        idx = torch.randint(len(points), (min(c.batch_size, len(points)),), generator=g).to(device)
        return F.binary_cross_entropy_with_logits(model(points[idx]), labels[idx])

    desc = f"{point['mesh']} {point['method']} k={point['rank']} w={point['omega'] or '-'} seed {point['seed']}"
    res = train_loop(model, opt, step_fn, c.steps, scheduler=sched, checkpoint_dir=folder / "checkpoint",
                     checkpoint_every=c.checkpoint_every, config_fingerprint=fingerprint, desc=desc)
    model.eval()
    pred = predict_grid(model, c.eval_resolution, c.eval_chunk, device)
    score = iou(torch.from_numpy(pred), torch.from_numpy(data.grid))
    if _shows_render(c, point):
        np.savez_compressed(folder / "pred.npz", pred=pack_grid(pred), resolution=np.array(c.eval_resolution))
        if point["method"] != "full":
            logits = predict_grid(model, c.mesh_resolution, c.eval_chunk, device, logits=True)
            marching_cubes_ply(logits, folder / "mesh.ply", c.ply_max_faces)
    rep = parameter_report(model)
    nbytes = save_pretrained(model, folder / "model")  # the compressed model as a user ships it
    print(f"[occupancy] {desc}: IoU {100 * score:.2f}%  params {rep.total}  loss {res.final_loss:.4f}", flush=True)
    return {"params": rep.total, "compression": rep.compression, "iou": score, "final_loss": res.final_loss,
            "train_seconds": res.seconds, "model_bytes": nbytes}


def _cell(rows: List[Dict[str, Any]], method: str, rank: Any, omega: Optional[float]) -> Dict[int, float]:
    return {r["seed"]: 100.0 * r["iou"] for r in rows
            if r["method"] == method and r["rank"] == rank and r["omega"] == omega}


def _mean_sd(values: Dict[int, float]) -> str:
    from sinelr.stats import mean_std

    if not values:
        return ""
    m, s = mean_std(list(values.values()))
    return f"{m:.1f} ± {s:.1f}" if len(values) > 1 else f"{m:.1f}"


def _protocol_lines(c: Config, rows: List[Dict[str, Any]], lrs: Dict[str, float]) -> List[str]:
    from sinelr.stats import mean_std

    seeds = sorted({r["seed"] for r in rows})
    ranks = sorted({r["rank"] for r in rows if isinstance(r["rank"], int) and r["method"] == "lowrank"})
    lines = ["## Protocol checks (shared/EVIDENCE.md)", ""]
    lines += [f"- {p}" for p in c.protocol] or ["- plateau (budget doubling) and LR grid: not stated for this run"]
    full, low = _cell(rows, "full", "full", None), _cell(rows, "lowrank", ranks[0], None) if ranks else {}
    if full and low:
        margin = mean_std(list(full.values()))[0] - mean_std(list(low.values()))[0]
        ok = "holds" if margin >= SENSITIVITY_MARGIN else "FAILS"
        lines.append(f"- sensitivity: full minus low-rank k={ranks[0]} = {margin:+.1f} IoU points "
                     f"(needs >= {SENSITIVITY_MARGIN:g}): {ok}")
    lines.append("- learning rates used: " + ", ".join(f"{m} {lrs[m]:g}" for m in METHODS))
    lines.append(f"- seeds: {len(seeds)} ({', '.join(map(str, seeds))}); verdicts pair runs by seed (same data, same init stream)")
    return lines + [""]


def _bytes(rows: List[Dict[str, Any]], rank: Any) -> str:
    """Bytes on disk of the saved model (safetensors of the factors + header); '' for rows without it."""
    sizes = sorted({r["model_bytes"] for r in rows if r["rank"] == rank and r.get("model_bytes") is not None})
    return " / ".join(f"{b:,}" for b in sizes)


def _table_lines(c: Config, rows: List[Dict[str, Any]]) -> List[str]:
    from sinelr.report import markdown_table, verdict_lines
    from sinelr.stats import paired_comparison

    ranks = sorted({r["rank"] for r in rows if isinstance(r["rank"], int) and r["omega"] in (None, c.omega)})
    table, comps = [], []
    ref_loss, failed = _failed_runs(rows)
    for k in ranks:
        low, sine = _cell(rows, "lowrank", k, None), _cell(rows, "sine", k, c.omega)
        first = next((r for r in rows if r["rank"] == k), None)
        paper = PAPER_TAB6.get(k, (float("nan"), float("nan")))
        table.append({"k": k, "low": _mean_sd(low), "sine": _mean_sd(sine), "pl": paper[0], "ps": paper[1],
                      "params": first and first["params"], "comp": first and f"{100 * first['compression']:.2f}%",
                      "bytes": _bytes(rows, k)})
        comp = paired_comparison(low, sine, "low-rank", "sine")
        if {("lowrank", k, None), ("sine", k, c.omega)} & set(failed):
            comp = dataclasses.replace(comp, verdict="not evidence: runs did not train (below)")
        comps.append(comp)
    full = _cell(rows, "full", "full", None)
    if full:
        fp = next(r["params"] for r in rows if r["method"] == "full")
        table.append({"k": "full rank", "low": _mean_sd(full), "sine": "", "pl": PAPER_FULL, "ps": float("nan"),
                      "params": fp, "comp": "100.00%", "bytes": _bytes(rows, "full")})
    out = [markdown_table(table, ["k", "low", "sine", "pl", "ps", "params", "comp", "bytes"],
                          ["rank k", "low-rank IoU % (ours, mean ± sd)", f"sine IoU % (ours, omega {c.omega:g})",
                           "low-rank (paper)", "sine (paper)", "params", "params / full",
                           "model file bytes (sinelr.save_pretrained)"], floatfmt=".1f"), ""]
    if comps:
        out += ["Sine minus low-rank IoU points, paired by seed:", "", verdict_lines(comps, "rank k", ranks), ""]
    return out + _failed_training_lines(ref_loss, failed)


# A run whose final training loss is this many times the full model's mean did not train (a diverged or
# stalled optimisation, e.g. a learning rate too large at that rank), whatever its IoU says.
FAILED_LOSS_RATIO = 3.0


def _failed_runs(rows: List[Dict[str, Any]]) -> tuple:
    """(the full model's mean final loss, {(method, rank, omega): runs whose final loss is > 3x it})."""
    full = [r["final_loss"] for r in rows if r["method"] == "full" and r.get("final_loss") is not None]
    if not full:
        return None, {}
    ref = sum(full) / len(full)
    bad: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        if r["method"] != "full" and r.get("final_loss") is not None and r["final_loss"] > FAILED_LOSS_RATIO * ref:
            bad.setdefault((r["method"], r["rank"], r["omega"]), []).append(r)
    return ref, bad


def _failed_training_lines(ref: Optional[float], bad: Dict[tuple, List[Dict[str, Any]]]) -> List[str]:
    """A warning naming every cell with runs that did not train (`_failed_runs`: final loss > 3x the full
    model's mean `ref`)."""
    if not bad:
        return []
    lines = [f"**Runs that did not train** (final training loss > {FAILED_LOSS_RATIO:g}x the full model's mean "
             f"{ref:.3f}): a failed optimisation at that learning rate, not a measure of capacity; a verdict at "
             "that rank compares against them and is not evidence.", ""]
    for (method, rank, omega), runs in sorted(bad.items(), key=lambda kv: str(kv[0])):
        runs = sorted(runs, key=lambda r: r["seed"])
        name = f"{'low-rank' if method == 'lowrank' else method} k={rank}" + (f" omega {omega:g}" if omega else "")
        seeds = ", ".join(str(r["seed"]) for r in runs)
        losses = ", ".join(f"{r['final_loss']:.3f}" for r in runs)
        ious = ", ".join(f"{100 * r['iou']:.1f}" for r in runs)
        lines.append(f"- {name}: seed(s) {seeds}: final loss {losses}, IoU {ious}%")
    return lines + [""]


def _omega_lines(c: Config, rows: List[Dict[str, Any]], folder: Path, mesh: str) -> List[str]:
    from sinelr.report import markdown_table
    from sinelr.stats import mean_std

    k = c.omega_sweep_rank
    sweep = sorted({r["omega"] for r in rows if r["method"] == "sine" and r["rank"] == k and r["omega"] is not None})
    if len(sweep) < 2:
        return []
    cells = {w: list(_cell(rows, "sine", k, w).values()) for w in sweep}
    stats = {w: mean_std(v) for w, v in cells.items()}
    _omega_plot(folder / "iou_vs_omega.png", stats, rows, k, mesh, c.eval_resolution)
    tab = [{"omega": f"{w:g}", "iou": _mean_sd(_cell(rows, "sine", k, w)), "n": len(cells[w])} for w in sweep]
    return [f"## Omega sweep, sine low-rank k={k} (Fig. 8)", "",
            markdown_table(tab, ["omega", "iou", "n"], ["omega", "IoU % (mean ± sd)", "seeds"]), "",
            "![IoU vs omega](iou_vs_omega.png)", ""]


def _omega_plot(path: Path, stats: Dict[float, tuple], rows: List[Dict[str, Any]], k: int, mesh: str, res: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinelr.stats import mean_std

    ws = sorted(stats)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.errorbar(ws, [stats[w][0] for w in ws], yerr=[stats[w][1] for w in ws], fmt="o-", capsize=3,
                label=f"sine low-rank k={k} (mean ± sd over seeds)")
    for method, rank, color, ls, label in (("lowrank", k, "C1", "--", f"low-rank k={k}"), ("full", "full", "k", ":", "full rank")):
        vals = list(_cell(rows, method, rank, None).values())
        if vals:
            level = mean_std(vals)[0]
            ax.axhline(level, color=color, ls=ls, label=label)
            lo, hi = ax.get_ylim()  # axhline does not widen the y range: keep every reference line in view
            ax.set_ylim(min(lo, level - 0.5), max(hi, level + 0.5))
    ax.set_xscale("log")
    ax.set_xlabel("omega")
    ax.set_ylabel(f"IoU % ({res}^3 grid)")
    ax.set_title(f"{mesh}: IoU vs omega")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _render_models(c: Config, sweep, rows: List[Dict[str, Any]], folder: Path, data) -> List[str]:
    """renders_k1.png and the PLYs from the run folders of the first seed (kept as they are when absent)."""
    import numpy as np

    from sinelr.data.occupancy_viz import depth_render, unpack_grid

    seed, k = min(c.seeds), c.ranks[0]
    shown = [("full rank", {"method": "full", "rank": "full", "omega": None}),
             (f"low-rank k={k}", {"method": "lowrank", "rank": k, "omega": None}),
             (f"sine k={k}", {"method": "sine", "rank": k, "omega": c.omega})]
    panels = [("ground truth", depth_render(data.grid), None)] if data is not None else []
    for title, cell in shown:
        run = sweep.run_folder({"mesh": data.name if data else "", **cell, "seed": seed})
        row = next((r for r in rows if all(r[x] == v for x, v in cell.items()) and r["seed"] == seed), None)
        if row is None or not (run / "pred.npz").is_file():
            continue
        with np.load(run / "pred.npz") as f:
            panels.append((title, depth_render(unpack_grid(f["pred"], int(f["resolution"]))), row["iou"]))
        if (run / "mesh.ply").is_file():
            shutil.copyfile(run / "mesh.ply", folder / f"mesh_{cell['method']}_k{k}.ply")
    if len(panels) < 2:
        return []
    _panel_figure(folder / "renders_k1.png", panels)
    return ["## Renders (Fig. 6 analogue)", "", f"![renders](renders_k1.png) (seed {seed}; depth-shaded view of the "
            f"predicted occupancy on the {c.eval_resolution}^3 grid; marching-cubes meshes at {c.mesh_resolution}^3 "
            "in the PLY files)", ""]


def _panel_figure(path: Path, panels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.1), layout="constrained")
    for ax, (title, img, score) in zip(list(getattr(axes, "flat", [axes])), panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title + ("" if score is None else f"\nIoU {100 * score:.1f}%"), fontsize=8)
        ax.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(c: Config, lrs: Dict[str, float], sweep, data, mesh_path: Optional[Path], rows: List[Dict[str, Any]],
           folder: Path) -> None:
    """summary.md, iou_vs_omega.png, renders_k1.png and PLYs of one mesh from all its rows."""
    from sinelr.report import CONFIG_FILES, carry_report_text, provenance_lines

    c = carry_report_text(c, folder, len(rows))
    mesh = folder.name[: -len(".staging")] if folder.name.endswith(".staging") else folder.name
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Occupancy field of `{mesh}`: low-rank vs sine low-rank (paper Tab. 6)", ""]
    lines += [f"> {c.note}", ""] if c.note else []
    lines += provenance_lines(folder, rows) + [
        f"- config: {CONFIG_FILES}; the settings every row shares: settings.json",
        f"- dataset: `{mesh}` (file {mesh_path or 'not found at render time'}), normalised to "
        f"[-1, 1]^3 (margin {c.margin:g})" + (f"; inside test: {data.inside_test}" + (
            f" (mesh defects: {data.defects})" if getattr(data, "defects", None) else "")
            if data is not None and hasattr(data, "inside_test") else ""),
        f"- seeds: {', '.join(map(str, seeds))}",
        f"- model: {c.hidden_layers} hidden layers of width {c.hidden_features}, Gaussian activation exp(-({c.scale:g} x)^2); "
        f"only the {c.hidden_features}x{c.hidden_features} layer(s) are (sine) low-rank; gain "
        f"{'sqrt(width)' if c.gain is None else c.gain}",
        f"- training: {c.steps} Adam steps, batch {c.batch_size} (cosine, {c.warmup} warmup) on {c.n_uniform} uniform + "
        f"{c.n_surface} near-surface points (sigma {', '.join(f'{s:g}' for s in c.surface_sigma)})",
        f"- reduced vs the paper: IoU on a {c.eval_resolution}^3 grid (paper 512^3), a Stanford mesh instead of the "
        f"Thai statue, {c.steps} steps on {c.n_uniform + c.n_surface} sampled points (a CPU budget)",
        "",
    ]
    lines += _protocol_lines(c, rows, lrs) + _table_lines(c, rows) + _omega_lines(c, rows, folder, mesh)
    renders = _render_models(c, sweep, rows, folder, data)
    if not renders and (folder / "renders_k1.png").is_file():  # predictions not on this machine: keep the old figure
        renders = ["## Renders (Fig. 6 analogue)", "", "![renders](renders_k1.png) (drawn by the run that made these "
                   "rows; its predictions are not in this machine's run folders)", ""]
    lines += renders
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


def _inputs(c: Config, render_only: bool) -> List[tuple]:
    """(name, mesh path, data) per mesh, all read and checked before anything is written.

    With render_only a mesh that cannot be found is allowed (the summary is re-rendered from its rows)."""
    from sinelr.data.occupancy import prepare_occupancy

    out = []
    for entry in c.mesh:
        try:
            path = _resolve_mesh(entry, c.data_dir)
        except FileNotFoundError:
            if not render_only:
                raise
            out.append((Path(entry).stem, None, None))
            continue
        data = prepare_occupancy(path, c.eval_resolution, c.n_uniform, c.n_surface, c.surface_sigma, c.seeds[0],
                                 c.cache_dir, c.margin)
        out.append((data.name, path, data))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"two meshes share a name (file stem) and would share an output folder: {names}")
    return out


def run(config: Config) -> Dict[str, Any]:
    import torch

    from sinelr.config import config_to_dict
    from sinelr.data.occupancy import check_grid_memory
    from sinelr.sweep import Sweep, SweepSpec

    c = config
    lrs = _validate(c)
    check_grid_memory(c.eval_resolution, "eval_resolution")
    check_grid_memory(c.mesh_resolution, "mesh_resolution", bytes_per_point=8)
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    spec = SweepSpec("occupancy", COLUMNS, KEY, **SPEC_ARGS)
    results: Dict[str, Any] = {}
    for name, path, data in _inputs(c, c.render_only):
        holder: Dict[str, Any] = {}
        sweep = Sweep(spec, config_to_dict(c), Path(c.output_dir) / name, Path(c.run_dir) / name,
                      lambda rows, folder, d=data, p=path: render(c, lrs, holder["sweep"], d, p, rows, folder),
                      extra={"mesh_sha256": data.sha256 if data else None})
        holder["sweep"] = sweep
        one = (lambda pt, f, s=sweep, p=path: run_one(c, lrs, p, pt, f, s.checkpoint_fingerprint(pt)))
        results[name] = sweep.run(grid(c, name), one, render_only=c.render_only)
    return results
