"""NeRF on LLFF scenes with full, low-rank and sine low-rank MLPs (paper Tab. 4, Figs. 4, 5, 7).

Per scene and seed the grid is: the full model, low-rank and sine low-rank at each rank, and an omega
sweep of the sine model at some ranks. Each point trains one NeRF and evaluates PSNR / SSIM on the
held-out views (every 8th). Results go to <output_dir> (summary.csv, summary.md with the protocol
checks, Tab. 4 with the paper's numbers beside ours, the paired per-seed verdict per rank and the
BD-rate / BD-PSNR of sine vs low-rank; rd_plot.png, fig4_<scene>.png, views/); run folders with
checkpoints and rendered views go under <run_dir> (git-ignored). The sweep runner (sinelr.sweep)
skips finished points and refuses to mix rows computed under other settings.
Examples:
  sinelr nerf --scene fern --methods sine --ranks 5 --steps 500 --output-dir runs/nerf/try
  sinelr nerf --config configs/nerf_cpu.yaml --seeds 0 1 2    # the CPU sweep
  sinelr bdrate results/nerf/nerf_cpu                         # RD plot + BD figures of a finished sweep
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sinelr.errors import ConfigError
from sinelr.config import method_learning_rates
from sinelr.kinds import DEFAULT_OMEGA_FROM_SCRATCH

METHODS = ("full", "lowrank", "sine")
# rank 0 = the full model, omega 0 = not a sine run (the layout of every NeRF summary.csv so far).
COLUMNS: Dict[str, Any] = {"scene": str, "method": str, "rank": int, "omega": float, "params": int,
                           "compression": float, "psnr": float, "ssim": float, "steps": int, "seed": int,
                           "lr": float, "final_loss": float, "train_seconds": float, "data_sha256": str,
                           "model_bytes": int}
KEY = ["scene", "method", "rank", "omega", "seed"]
# Paper Tab. 4: mean PSNR over the LLFF scenes, (low-rank, sine) per rank; full rank 26.85.
PAPER_TAB4 = {1: (14.00, 19.77), 5: (20.01, 23.11), 10: (22.12, 24.39), 30: (24.42, 25.86), 60: (25.59, 26.36)}
PAPER_FULL = 26.85
SENSITIVITY_MARGIN = 2.0  # shared/EVIDENCE.md: full must beat low-rank at the smallest rank by 2 dB
MIN_SIDE = 11  # SSIM's Gaussian window: a test image must be at least 11 x 11 pixels


@dataclass
class Config:
    output_dir: str = field(default="runs/nerf/results", metadata={"help": "results folder (summary.csv, summary.md, figures)"})
    run_dir: str = field(default="runs/nerf/runs", metadata={"help": "run folders: checkpoints, rendered views (git-ignored)"})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "folder holding nerf_llff/ (default: $SINELR_DATA_DIR, else ../shared/data)"})
    scene: List[str] = field(default_factory=lambda: ["fern"], metadata={"help": "LLFF scenes, e.g. fern flower"})
    methods: List[str] = field(default_factory=lambda: list(METHODS), metadata={"help": "any of full, lowrank, sine"})
    ranks: List[int] = field(default_factory=lambda: [5], metadata={"help": "ranks k of the low-rank / sine runs"})
    omega: float = field(default=DEFAULT_OMEGA_FROM_SCRATCH, metadata={"help": "sine frequency of the table's sine runs"})
    omegas: List[float] = field(default_factory=list, metadata={"help": "omegas of the sine sweep (Fig. 7); 'none' for no sweep"})
    omega_sweep_ranks: List[int] = field(default_factory=lambda: [1, 5], metadata={"help": "ranks at which the omegas run"})
    convert_heads: bool = field(default=False, metadata={"help": "also factor the 1- and 3-output heads"})
    downscale: int = field(default=1, metadata={"help": "extra integer downscale on top of images_8"})
    width: int = field(default=256, metadata={"help": "MLP width (paper 256)"})
    depth: int = field(default=8, metadata={"help": "MLP depth (paper 8; the input is fed again to layer 6 when depth > 5)"})
    pos_freqs: int = field(default=10, metadata={"help": "positional-encoding frequencies of points"})
    dir_freqs: int = field(default=4, metadata={"help": "positional-encoding frequencies of directions"})
    n_coarse: int = field(default=64, metadata={"help": "coarse samples per ray"})
    n_fine: int = field(default=128, metadata={"help": "fine (importance) samples per ray; 0 = no fine network"})
    noise_std: float = field(default=1.0, metadata={"help": "std of the sigma noise during training (LLFF: 1)"})
    batch_rays: int = field(default=1024, metadata={"help": "rays per step, drawn from all training pixels"})
    steps: int = field(default=200000, metadata={"help": "optimisation steps per model"})
    lr: float = field(default=5e-4, metadata={"help": "Adam learning rate of methods not in method_lr"})
    method_lr: List[str] = field(default_factory=list, metadata={
        "help": "per-method learning rates as method=value items (e.g. sine=0.001); others use lr"})
    lr_decay_steps: int = field(default=250000, metadata={"help": "lr decays as 0.1^(step / lr_decay_steps)"})
    grad_clip: float = field(default=0.0, metadata={"help": "gradient-norm clip (0 = off)"})
    chunk: int = field(default=8192, metadata={"help": "rays per forward pass when rendering test views"})
    seeds: List[int] = field(default_factory=lambda: [0], metadata={"help": "seeds of init, ray batches and sampling"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda"})
    mixed_precision: str = field(default="bf16", metadata={"help": "on GPU: bf16, fp16 or no (CPU: always fp32)"})
    checkpoint_every: int = field(default=0, metadata={"help": "steps between checkpoints (0 = only at the end)"})
    save_views: int = field(default=1, metadata={"help": "test views saved as PNG per run"})
    val_views: int = field(default=0, metadata={
        "help": "hold this many training views out (evenly spaced) and score on them instead of the test views, "
                "which are then never read: the split for tuning (protocol step 2); 0 = train on all training views"})
    render_only: bool = field(default=False, metadata={"help": "train nothing: re-render summary.md and figures from summary.csv"})
    note: str = field(default="", metadata={"help": "a line printed at the top of summary.md"})
    protocol: List[str] = field(default_factory=list, metadata={
        "help": "protocol facts measured elsewhere (doubling check, LR grid), one line each, shown at the top"})


SPEC_ARGS = dict(
    grid_keys=("scene", "methods", "ranks", "omega", "omegas", "omega_sweep_ranks", "seeds", "render_only", "note",
               "protocol"),
    not_in_results=("output_dir", "run_dir", "data_dir", "device", "chunk", "checkpoint_every", "save_views"),
    added_keys={"val_views": 0},
    # each method's learning rate is recorded in its rows: a method tuned later joins a folder at its own rate
    row_settings={"lr": ("lr", "method_lr")},
)
# The keys of an older (pre-runner) config.json that changed the numbers, checked before re-rendering it.
LEGACY_KEYS = ("width", "depth", "pos_freqs", "dir_freqs", "n_coarse", "n_fine", "noise_std", "batch_rays", "steps",
               "lr", "lr_decay_steps", "grad_clip", "downscale", "convert_heads", "mixed_precision")


def _validate(c: Config) -> Dict[str, float]:
    """Check the config before anything is read or written; returns the learning rate of each method."""
    bad = [m for m in c.methods if m not in METHODS]
    if bad or not c.methods:
        raise ConfigError(f"methods must be a non-empty subset of {list(METHODS)}, got {c.methods}")
    if not c.scene or not c.seeds:
        raise ConfigError(f"scene and seeds must be non-empty, got scene={c.scene}, seeds={c.seeds}")
    for name, values in (("scene", c.scene), ("ranks", c.ranks), ("seeds", c.seeds), ("omegas", c.omegas)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} must not repeat, got {list(values)}")
    if c.val_views < 0:
        raise ConfigError(f"val_views must be >= 0, got {c.val_views}")
    for name in ("steps", "batch_rays", "downscale", "chunk", "width", "depth", "n_coarse", "lr_decay_steps"):
        if getattr(c, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(c, name)}")
    if c.mixed_precision not in ("bf16", "fp16", "no"):
        raise ConfigError(f"mixed_precision must be bf16, fp16 or no, got {c.mixed_precision!r}")
    if not (math.isfinite(c.lr) and c.lr > 0):
        raise ConfigError(f"lr must be a positive finite number, got {c.lr}")
    from sinelr.functional import check_omega

    for w in [c.omega] + list(c.omegas):
        check_omega(w)
    # The smallest converted layer bounds k: the input layer (3 + 6 pos_freqs inputs) or the view layer
    # (width // 2 outputs); with convert_heads the sigma head (1 output) - nothing is clipped silently.
    limit = min(3 + 6 * c.pos_freqs, c.width, c.width // 2) if not c.convert_heads else 1
    ranks = list(c.ranks) + (list(c.omega_sweep_ranks) if c.omegas else [])
    for k in ranks if any(m != "full" for m in c.methods) else []:
        if k < 1 or k > limit:
            raise ConfigError(f"rank {k} is outside [1, {limit}]: min(in, out) of the smallest converted layer "
                             f"(width {c.width}, pos_freqs {c.pos_freqs}, convert_heads {c.convert_heads})")
    return method_learning_rates(c.method_lr, METHODS, c.lr)


def grid(c: Config) -> List[Dict[str, Any]]:
    """Seed by seed: full per scene, then (low-rank, sine) rank by rank across scenes, then the omega sweep."""
    cells: List[Dict[str, Any]] = []
    if "full" in c.methods:
        cells += [{"scene": s, "method": "full", "rank": 0, "omega": 0.0} for s in c.scene]
    for k in c.ranks:
        for s in c.scene:
            cells += [{"scene": s, "method": m, "rank": k, "omega": float(c.omega) if m == "sine" else 0.0}
                      for m in ("lowrank", "sine") if m in c.methods]
    if "sine" in c.methods:
        extra = [{"scene": s, "method": "sine", "rank": k, "omega": float(w)}
                 for k in c.omega_sweep_ranks for w in c.omegas for s in c.scene]
        cells += [e for e in extra if e not in cells]
    lrs = method_learning_rates(c.method_lr, METHODS, c.lr)
    return [{**cell, "seed": seed, "lr": lrs[cell["method"]]} for seed in c.seeds for cell in cells]


def _tag(p: Dict[str, Any]) -> str:
    """The file-name stem of a point's rendered views (the seed only when it is not 0)."""
    seed = f"_seed{p['seed']}" if p.get("seed", 0) else ""
    if p["method"] == "full":
        return f"{p['scene']}_full{seed}"
    if p["method"] == "lowrank":
        return f"{p['scene']}_lowrank_k{p['rank']}{seed}"
    return f"{p['scene']}_sine_k{p['rank']}_w{p['omega']:g}{seed}"


def build_model(c: Config, point: Dict[str, Any]):
    """The NeRF of one point, seeded. Built dense, then converted: injecting the layers at construction
    would draw the initial weights in another order and change every committed number."""
    from sinelr.models.nerf import NeRF, convert_nerf
    from sinelr.train import seed_everything

    seed_everything(point["seed"])
    model = NeRF(c.width, c.depth, 4 if c.depth > 5 else -1, c.pos_freqs, c.dir_freqs, c.n_coarse, c.n_fine)
    return convert_nerf(model, point["method"], point["rank"], omega=point["omega"] or c.omega,
                        convert_heads=c.convert_heads)


def estimate(c: Config, steps: int = 2):
    """What the run will cost (a RunEstimate), from training steps of the first point's model timed on
    random NDC rays (the scene is not read) at 32 and 64 rays, extrapolated linearly to batch_rays."""
    import torch

    from sinelr.models.nerf import render_rays
    from sinelr.train import RunEstimate, extrapolate_step_seconds, resolve_device

    points, device = grid(c), resolve_device(c.device)
    model = build_model(c, points[0]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)

    def make_step(n: int):
        g = torch.Generator().manual_seed(0)
        ro = torch.cat([torch.rand(n, 2, generator=g) * 2 - 1, -torch.ones(n, 1)], -1).to(device)
        rd = torch.cat([torch.rand(n, 2, generator=g) - 0.5, torch.full((n, 1), 2.0)], -1).to(device)
        rv, target = rd / rd.norm(dim=-1, keepdim=True), torch.rand(n, 3, generator=g).to(device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            out = render_rays(model, ro, rd, rv, perturb=True, noise_std=c.noise_std)
            sum(((out[k] - target) ** 2).mean() for k in ("rgb_coarse", "rgb_fine") if k in out).backward()
            optimizer.step()
        return step

    per_step = extrapolate_step_seconds(make_step, c.batch_rays, 32, 64, steps)
    how = f"{points[0]['method']} model timed on 32 and 64 random rays, extrapolated to {c.batch_rays} rays"
    return RunEstimate(len(points), c.steps, per_step, device.type, how)


def run_one(c: Config, scene, device, point: Dict[str, Any], folder: Path,
            fingerprint: str) -> Dict[str, Any]:
    """Train and evaluate one point; its first test views are saved as PNG in the run folder."""
    import torch

    from sinelr.convert import parameter_report
    from sinelr.models.nerf import render_rays
    from sinelr.train import train_loop

    model = build_model(c, point)
    report = parameter_report(model)
    model.to(device)
    rays = [scene.rays(i) for i in scene.i_train]  # all training rays (NDC) and colours, flattened once
    ro, rd, rv = (torch.cat([r[j].reshape(-1, 3) for r in rays]).to(device) for j in range(3))
    target = scene.images[scene.i_train].reshape(-1, 3).to(device)
    lr = point["lr"]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.1 ** (s / c.lr_decay_steps))
    accelerator = None
    if device.type == "cuda" and c.mixed_precision != "no":
        from accelerate import Accelerator

        accelerator = Accelerator(mixed_precision=c.mixed_precision, cpu=False)
        model, optimizer = accelerator.prepare(model, optimizer)
    net = accelerator.unwrap_model(model) if accelerator is not None else model

    def step_fn(step: int) -> "torch.Tensor":
        g = torch.Generator(device=device).manual_seed(point["seed"] * 1_000_003 + step)
        idx = torch.randint(0, target.shape[0], (c.batch_rays,), generator=g, device=device)
        # render_rays reaches into .coarse/.fine, so it gets the unwrapped module (single-process
        # accelerate does not wrap it; autocast still comes from train_loop's accelerator.autocast()).
        out = render_rays(net, ro[idx], rd[idx], rv[idx], perturb=True, noise_std=c.noise_std, generator=g)
        loss = ((out["rgb_coarse"].float() - target[idx]) ** 2).mean()
        if "rgb_fine" in out:
            loss = loss + ((out["rgb_fine"].float() - target[idx]) ** 2).mean()
        return loss

    result = train_loop(model, optimizer, step_fn, c.steps, scheduler=scheduler, checkpoint_dir=folder / "checkpoint",
                        checkpoint_every=c.checkpoint_every, config_fingerprint=fingerprint, accelerator=accelerator,
                        grad_clip=c.grad_clip or None, desc=_tag(point))
    psnr, ssim = _evaluate(c, net, scene, point, folder, device)
    from sinelr.serialization import save_pretrained

    nbytes = save_pretrained(net, folder / "model")  # the compressed model as a user ships it
    print(f"[nerf] {_tag(point)}: PSNR {psnr:.2f} dB, SSIM {ssim:.3f}, params {report.total:,} "
          f"({100 * report.compression:.2f}% of full), final loss {result.final_loss:.4g}, {result.seconds:.0f} s",
          flush=True)
    return {"params": report.total, "compression": report.compression, "psnr": psnr, "ssim": ssim, "steps": c.steps,
            "lr": lr, "final_loss": result.final_loss, "train_seconds": result.seconds,
            "data_sha256": scene_sha256(scene), "model_bytes": nbytes}


def _evaluate(c: Config, net, scene, point: Dict[str, Any], folder: Path, device) -> tuple:
    """Mean PSNR and SSIM over the held-out views; the first `save_views` go to <folder>/views/."""
    import numpy as np
    import torch
    from PIL import Image

    from sinelr.metrics import psnr, ssim
    from sinelr.models.nerf import render_image

    net.eval()
    psnrs, ssims = [], []
    for n, i in enumerate(scene.i_test):
        o, d, v = (t.to(device) for t in scene.rays(i))
        with torch.no_grad():
            img = render_image(net, o, d, v, chunk=c.chunk).float().cpu()
        psnrs.append(psnr(img, scene.images[i]))
        ssims.append(ssim(img, scene.images[i]))
        if n < c.save_views:
            (folder / "views").mkdir(parents=True, exist_ok=True)
            pixels = (np.clip(img.numpy(), 0, 1) * 255 + 0.5).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "views" / f"{_tag(point)}_view{i:03d}.png")
    return float(np.mean(psnrs)), float(np.mean(ssims))


def scene_sha256(scene) -> str:
    """sha256 (16 hex digits) of a scene's image files and poses_bounds.npy: which data a row was computed on."""
    h = hashlib.sha256()
    for f in list(scene.files) + [str(Path(scene.files[0]).parents[1] / "poses_bounds.npy")]:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- summary


def _psnr(rows: List[Dict[str, Any]], method: str, rank: int, omega: float, scenes: List[str]) -> Dict[int, float]:
    """{seed: PSNR averaged over `scenes`} of one cell, for the seeds that have every scene."""
    cell = {(r["scene"], r["seed"]): r["psnr"] for r in rows if (r["method"], r["rank"], r["omega"]) == (method, rank, omega)}
    seeds = sorted({seed for _, seed in cell})
    return {s: sum(cell[sc, s] for sc in scenes) / len(scenes) for s in seeds if all((sc, s) in cell for sc in scenes)}


def _mean_sd(values: Dict[int, float], fmt: str = ".2f", count: bool = False) -> str:
    """Mean ± sd over seeds ('n/a' for none); `count` appends the number of seeds."""
    from sinelr.stats import mean_std

    if not values:
        return "n/a"
    m, s = mean_std(list(values.values()))
    text = f"{m:{fmt}} ± {s:{fmt}}" if len(values) > 1 else f"{m:{fmt}}"
    return f"{text} ({len(values)} seed{'s' if len(values) > 1 else ''})" if count else text


def _header_lines(c: Config, rows: List[Dict[str, Any]], folder: Path, data_root: Optional[Path]) -> List[str]:
    from sinelr.report import CONFIG_FILES, provenance_lines

    scenes = sorted({r["scene"] for r in rows})
    shas = sorted({f"{r['scene']} {r['data_sha256']}" for r in rows if r["data_sha256"]})
    where = (f"read from {data_root}" if data_root is not None
             else "not found by this render (the rows name their data by sha256 only)")
    lines = provenance_lines(folder, rows) + [
        f"- config: {CONFIG_FILES}; the settings every row shares: settings.json (an older folder has only config.json)",
        f"- dataset: LLFF {', '.join(scenes)}, {where} (images_8{f' / {c.downscale}' if c.downscale > 1 else ''}), "
        + (f"every 8th view held out for test; scored on **{c.val_views} validation views** held out of the training "
           "views (the test views are never read: a tuning run, not a result)" if c.val_views else
           "every 8th view held out for test")
        + f"; data sha256 per scene: {', '.join(shas) or 'not recorded (older rows)'}",
        f"- model: width {c.width}, depth {c.depth}, PE {c.pos_freqs}/{c.dir_freqs}, {c.n_coarse} coarse + {c.n_fine} "
        f"fine samples, {c.batch_rays} rays/step, {c.steps} steps, Adam lr {_lr_text(c)} (x0.1 per {c.lr_decay_steps} steps), sigma noise "
        f"{c.noise_std:g}, sine gain sqrt(in); output heads {'converted' if c.convert_heads else 'kept dense'}",
    ]
    reduced = [txt for cond, txt in (
        (c.downscale > 1, f"images 1/{8 * c.downscale} instead of 1/8"),
        (c.width != 256 or c.depth != 8, f"MLP {c.depth} x {c.width} instead of 8 x 256"),
        (c.n_coarse != 64 or c.n_fine != 128, f"{c.n_coarse}+{c.n_fine} samples instead of 64+128"),
        (c.batch_rays != 1024, f"{c.batch_rays} rays per step instead of 1024"),
        (c.steps < 200000, f"{c.steps} steps instead of ~200k"),
        (c.lr != 5e-4 or c.lr_decay_steps != 250000 or bool(c.method_lr),
         f"lr {_lr_text(c)} decaying x0.1 over {c.lr_decay_steps} steps instead of 5e-4 over 250k"),
        (c.noise_std != 1.0, f"sigma noise {c.noise_std:g} instead of 1")) if cond]
    return lines + ["- reduced vs the paper: " + ("; ".join(reduced) if reduced else "nothing (paper setting)"), ""]


def _lr_text(c: Config) -> str:
    return f"{c.lr:g}" + (f" ({', '.join(c.method_lr)})" if c.method_lr else "")


def _protocol_lines(c: Config, rows: List[Dict[str, Any]], lrs: Dict[str, float], scenes: List[str]) -> List[str]:
    seeds = sorted({r["seed"] for r in rows})
    ranks = sorted({r["rank"] for r in rows if r["method"] == "lowrank"})
    used = sorted({(r["method"], r["lr"]) for r in rows if r["lr"] is not None})
    lines = ["## Protocol checks (shared/EVIDENCE.md)", ""]
    lines += [f"- {p}" for p in c.protocol] or ["- plateau (budget doubling) and LR grid: not stated for this run"]
    full, low = _psnr(rows, "full", 0, 0.0, scenes), _psnr(rows, "lowrank", ranks[0], 0.0, scenes) if ranks else {}
    if full and low:
        margin = sum(full.values()) / len(full) - sum(low.values()) / len(low)
        ok = "holds" if margin >= SENSITIVITY_MARGIN else "FAILS"
        lines.append(f"- sensitivity: full minus low-rank k={ranks[0]} = {margin:+.2f} dB (scene mean; needs >= "
                     f"{SENSITIVITY_MARGIN:g} dB): {ok}")
    else:
        lines.append("- sensitivity: not measurable (needs full and low-rank rows)")
    lines.append("- learning rates: " + (", ".join(f"{m} {v:g}" for m, v in used) + " (from the rows)" if used else
                                         ", ".join(f"{m} {lrs[m]:g}" for m in METHODS) + " (from the config)"))
    lines.append(f"- seeds: {len(seeds)} ({', '.join(map(str, seeds))}); verdicts pair runs by seed (same init and "
                 "ray-batch stream)" + ("; one seed gives no interval, so no verdict can say 'better'"
                                        if len(seeds) < 2 else ""))
    return lines + [""]


def _table_lines(c: Config, rows: List[Dict[str, Any]], scenes: List[str]) -> List[str]:
    """Tab. 4 with the paper's numbers beside ours, then the verdict per rank."""
    from sinelr.report import markdown_table, verdict_lines
    from sinelr.stats import paired_comparison

    ranks = sorted({r["rank"] for r in rows if r["method"] != "full" and (r["method"] == "lowrank" or r["omega"] == c.omega)})
    table, comps = [], []
    for k in ranks:
        low, sine = _psnr(rows, "lowrank", k, 0.0, scenes), _psnr(rows, "sine", k, float(c.omega), scenes)
        ref = next(r for r in rows if r["rank"] == k)
        pl, ps = PAPER_TAB4.get(k, (float("nan"), float("nan")))
        row = {"k": k, "params": f"{ref['params']:,}", "comp": f"{100 * ref['compression']:.2f}%", "pl": pl,
               "bytes": f"{ref['model_bytes']:,}" if ref.get("model_bytes") else "",
               "low": _mean_sd(low), "ps": ps, "sine": _mean_sd(sine)}
        for s in scenes:
            row[s] = (f"{_mean_sd(_psnr(rows, 'lowrank', k, 0.0, [s]))} / "
                      f"{_mean_sd(_psnr(rows, 'sine', k, float(c.omega), [s]))}")
        table.append(row)
        comps.append(paired_comparison(low, sine, "low-rank", "sine"))
    full = _psnr(rows, "full", 0, 0.0, scenes)
    if full:
        fr = next(r for r in rows if r["method"] == "full")
        fp = fr["params"]
        table.append({"k": "full", "params": f"{fp:,}", "comp": "100.00%", "pl": PAPER_FULL, "low": _mean_sd(full),
                      "bytes": f"{fr['model_bytes']:,}" if fr.get("model_bytes") else "",
                      "ps": PAPER_FULL, "sine": "", **{s: _mean_sd(_psnr(rows, "full", 0, 0.0, [s])) for s in scenes}})
    cols = ["k", "params", "comp", "bytes", "pl", "low", "ps", "sine"] + scenes
    head = ["k", "params", "params / full", "model file bytes", "paper low-rank", "ours low-rank", "paper sine", f"ours sine (omega {c.omega:g})"]
    out = ["## PSNR on held-out views (dB), cf. paper Tab. 4", "",
           "Ours: mean over the scenes (± sd over seeds); paper: its mean over the LLFF scenes.", "",
           markdown_table(table, cols, head + [f"{s} low-rank / sine" for s in scenes]), "",
           "The full row puts the full model's PSNR in the low-rank columns (the paper reports one number, 26.85). "
           "Params count all networks of the model (coarse, and fine when n_fine > 0).", ""]
    if comps:
        out += ["Sine minus low-rank PSNR (dB, scene mean), paired by seed:", "", verdict_lines(comps, "rank k", ranks), ""]
    if len(scenes) > 1:  # the scene mean pairs only seeds that have every scene: each scene's own verdicts too
        per = [(f"{s} k={k}", _psnr(rows, "lowrank", k, 0.0, [s]), _psnr(rows, "sine", k, float(c.omega), [s]))
               for s in scenes for k in ranks]
        per = [(label, low, sine) for label, low, sine in per if low and sine]
        if per:
            out += ["Per scene, sine minus low-rank PSNR (dB), paired by seed:", "",
                    verdict_lines([paired_comparison(low, sine, "low-rank", "sine") for _, low, sine in per],
                                  "scene, k", [label for label, _, _ in per]), ""]
    return out + _ssim_lines(c, rows, scenes, ranks)


def _ssim_lines(c: Config, rows: List[Dict[str, Any]], scenes: List[str], ranks: List[int]) -> List[str]:
    from sinelr.report import markdown_table
    from sinelr.stats import mean_std

    def cell(method: str, k: int, w: float, s: str) -> str:
        vals = [r["ssim"] for r in rows if (r["method"], r["rank"], r["omega"], r["scene"]) == (method, k, w, s)]
        return f"{mean_std(vals)[0]:.3f}" if vals else "n/a"

    table = [{"k": k, **{s: f"{cell('lowrank', k, 0.0, s)} / {cell('sine', k, float(c.omega), s)}" for s in scenes}}
             for k in ranks]
    if any(r["method"] == "full" for r in rows):
        table.append({"k": "full", **{s: cell("full", 0, 0.0, s) for s in scenes}})
    return ["SSIM (mean over seeds), low-rank / sine:", "",
            markdown_table(table, ["k"] + scenes, ["k"] + [f"{s} SSIM" for s in scenes]), ""]


def _lr_label(rows: List[Dict[str, Any]], method: str) -> str:
    """', lr X' for the learning rate(s) of `method`'s rows ('' when the rows do not record one)."""
    lrs = sorted({float(r["lr"]) for r in rows if r["method"] == method and r.get("lr") not in (None, "")})
    return ", lr " + " / ".join(f"{x:g}" for x in lrs) if lrs else ""


def _omega_lines(rows: List[Dict[str, Any]], scenes: List[str], folder: Optional[Path] = None) -> List[str]:
    from sinelr.report import markdown_table, plot_mean_std, seed_counts

    sweep = sorted({(r["rank"], r["omega"]) for r in rows if r["method"] == "sine"})
    if len({w for _, w in sweep}) < 2:
        return []
    ranks = sorted({k for k, _ in sweep})
    cells = {(k, w, sc): _psnr(rows, "sine", k, w, [sc]) for k, w in sweep for sc in scenes}  # {seed: PSNR}
    low = {(k, sc): _psnr(rows, "lowrank", k, 0.0, [sc]) for k in ranks for sc in scenes}
    # a sweep part-way through has cells of different seed counts (the table's omega has all its seeds): every
    # cell then says how many seeds it averages, by the rule that labels the plot's points
    count = bool(seed_counts({f"{sc} {m}": {key: list(v.values()) for key, v in by.items() if key[-1] == sc and v}
                              for sc in scenes for m, by in (("sine", cells), ("lowrank", low))}))
    # each scene's sine beside its own low-rank reference at that rank (a sweep run on one scene is read against
    # that scene's low-rank, not a mean over scenes it did not run on)
    table = [{"k": k, "omega": f"{w:g}",
              **{c: v for sc in scenes for c, v in ((sc, _mean_sd(cells[k, w, sc], count=count)),
                                                    (f"{sc} low", _mean_sd(low[k, sc], count=count)))}}
             for k, w in sweep]
    # each method's learning rate is named: the low-rank reference is low-rank at the rate of these rows, which
    # need not be its best one (a grid folder trains every method at one rate)
    lr = {m: _lr_label(rows, m) for m in ("sine", "lowrank")}
    lines = ["## Omega sweep of sine low-rank (cf. paper Fig. 7)", "",
             markdown_table(table, ["k", "omega"] + [c for sc in scenes for c in (sc, f"{sc} low")],
                            ["k", "omega"] + [h for sc in scenes for h in (f"{sc} sine{lr['sine']}",
                                                                           f"{sc} low-rank{lr['lowrank']}")]), ""]
    # per scene and rank, PSNR per seed: the error bars are the spread over seeds
    series = {}
    for sc in scenes:
        for k in ranks:
            by_w = {w: list(cells[k, w, sc].values()) for kk, w in sweep if kk == k}
            by_w = {w: v for w, v in by_w.items() if v}
            if len(by_w) >= 2:
                series[(sc, k)] = by_w
    if folder is not None and series:
        names = {(sc, k): f"{sc} sine k={k}{lr['sine']}" for sc, k in series}
        bands, band_of = {}, {}
        if len({sc for sc, _ in series}) == 1:  # one scene: low-rank at each rank as a band in its curve's colour
            for sc, k in series:
                band = f"{sc} low-rank k={k}{lr['lowrank']}"
                bands[band], band_of[band] = list(low[k, sc].values()), names[sc, k]
        plot_mean_std(folder / "psnr_vs_omega.png", {names[key]: v for key, v in series.items()},
                      "omega", "PSNR dB", "PSNR vs omega (mean +- sd over seeds)", logx=True,
                      hlines={n: v for n, v in bands.items() if v}, band_of=band_of)
        lines += ["![PSNR vs omega](psnr_vs_omega.png)", ""]
    return lines


def _bd_lines(c: Config, rows: List[Dict[str, Any]], folder: Path) -> List[str]:
    from sinelr.report import PAPER_NERF_BD_PSNR, PAPER_NERF_BD_RATE, rd_bd_figures, rd_bd_lines, rd_curves, rd_plot

    curves = rd_curves(rows, float(c.omega))
    if all(len(cur["lowrank"].ranks) < 2 or len(cur["sine"].ranks) < 2 for cur in curves.values()):
        ranks = sorted({r["rank"] for r in rows if r["method"] != "full"})
        return ["## BD-rate / BD-PSNR", "", "Not computed: BD figures need at least two ranks per method "
                f"(these rows have k = {', '.join(map(str, ranks)) or 'none'}). The paper's: BD-rate "
                f"{PAPER_NERF_BD_RATE:+.2f}%, BD-PSNR {PAPER_NERF_BD_PSNR:+.2f} dB (LLFF mean, k = 1..60, Akima).", ""]
    bd = rd_bd_figures(curves)
    rd_plot(curves, bd, folder / "rd_plot.png", f"{_title(folder)}: rate-distortion, sine omega {c.omega:g} (cf. paper Fig. 5)")
    return ["## BD-rate / BD-PSNR of sine vs low-rank (rate = parameter count)", ""] + rd_bd_lines(curves, bd) + [
        "", "![RD plot](rd_plot.png)", ""]


def _claim_lines(c: Config, rows: List[Dict[str, Any]], scenes: List[str]) -> List[str]:
    from sinelr.stats import paired_comparison

    ranks = sorted({r["rank"] for r in rows if r["method"] == "sine" and r["omega"] == c.omega})
    verdicts = {k: paired_comparison(_psnr(rows, "lowrank", k, 0.0, scenes), _psnr(rows, "sine", k, float(c.omega), scenes),
                                     "low-rank", "sine") for k in ranks}
    verdicts = {k: v for k, v in verdicts.items() if v.n}
    lines = ["## Does the paper's claim hold here?", ""]
    if not verdicts:
        return lines + ["Not enough runs for a comparison.", ""]
    per_scene = [(s, k, paired_comparison(_psnr(rows, "lowrank", k, 0.0, [s]), _psnr(rows, "sine", k, float(c.omega), [s])))
                 for s in scenes for k in ranks]
    gaps = [f"{s} k={k}: {p.mean:+.2f} dB" for s, k, p in per_scene if p.n]
    better = [k for k, v in verdicts.items() if v.verdict == "sine better"]
    lines.append("Claim tested: sine low-rank beats low-rank at every rank (paired by seed, 95% t-interval). "
                 f"Verdict 'sine better' at k = {', '.join(map(str, better)) or 'none'} of the {len(verdicts)} ranks "
                 f"compared; sine minus low-rank per (scene, k), mean over seeds: {', '.join(gaps)}.")
    if len(better) == len(verdicts):
        lines.append("The claim holds at every tested rank under the verdict rule.")
    else:
        lines.append("The claim is not shown at every tested rank (see the verdicts above; one seed never shows it).")
    return lines + ["Absolute PSNRs are not comparable with the paper's when the schedule is reduced (see above).", ""]


def _title(folder: Path) -> str:
    return folder.name[: -len(".staging")] if folder.name.endswith(".staging") else folder.name


def _copy_views(sweep, rows: List[Dict[str, Any]], folder: Path) -> None:
    """Copy the rendered test views of every row from its run folder into <folder>/views/ (when present)."""
    for r in rows:
        views = sweep.run_folder(sweep.row_point(r)) / "views"
        if views.is_dir():
            (folder / "views").mkdir(exist_ok=True)
            for f in views.glob("*.png"):
                shutil.copyfile(f, folder / "views" / f.name)


def _fig4_title(c: Config, scene: str, view: int, seed: int) -> str:
    """The panel's title names the kind of view it shows: a tuning run's views are held-out training views."""
    kind = "validation view (held out of the training views)" if c.val_views else "test view"
    return f"{scene}: {kind} {view}, seed {seed} (cf. paper Fig. 4)"


def _fig4(c: Config, rows: List[Dict[str, Any]], scenes: Dict[str, Any], folder: Path) -> None:
    """Per scene: ground truth | full | low-rank k | sine k for k in (1, 5) on the first evaluated view (a test view,
    or a validation view in a tuning run; seed 0 or lowest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    seed = min(r["seed"] for r in rows)
    for name, scene in scenes.items():
        i = scene.i_test[0]
        panels = [("ground truth", scene.images[i].numpy())]
        cells = [("full", 0, 0.0, "full")] + [(m, k, float(c.omega) if m == "sine" else 0.0,
                                               f"{'low-rank' if m == 'lowrank' else f'sine (w={c.omega:g})'} k={k}")
                                              for k in (1, 5) for m in ("lowrank", "sine")]
        for method, k, w, label in cells:
            point = {"scene": name, "method": method, "rank": k, "omega": w, "seed": seed}
            path = folder / "views" / f"{_tag(point)}_view{i:03d}.png"
            row = next((r for r in rows if all(r[x] == point[x] for x in KEY)), None)
            if path.is_file() and row is not None:
                panels.append((f"{label}\n{row['psnr']:.2f} dB", Image.open(path)))
        if len(panels) < 3:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.4))
        for ax, (title, im) in zip(axes, panels):
            ax.imshow(im)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.suptitle(_fig4_title(c, name, i, seed), fontsize=9)
        fig.tight_layout()
        fig.savefig(folder / f"fig4_{name}.png", dpi=110)
        plt.close(fig)


def render(c: Config, lrs: Dict[str, float], sweep, scenes: Dict[str, Any], rows: List[Dict[str, Any]],
           folder: Path) -> None:
    """summary.md, rd_plot.png, fig4_<scene>.png and views/ from all rows."""
    from sinelr.report import carry_report_text

    c = carry_report_text(c, folder, len(rows))
    names = sorted({r["scene"] for r in rows})
    data_root = Path(next(iter(scenes.values())).files[0]).parents[2].resolve() if scenes else None
    lines = [f"# NeRF on LLFF: full vs low-rank vs sine low-rank ({_title(folder)})", ""]
    lines += [f"> {c.note}", ""] if c.note else []
    lines += _header_lines(c, rows, folder, data_root) + _protocol_lines(c, rows, lrs, names)
    lines += _table_lines(c, rows, names) + _omega_lines(rows, names, folder) + _bd_lines(c, rows, folder)
    lines += _claim_lines(c, rows, names)
    _copy_views(sweep, rows, folder)
    if scenes:
        _fig4(c, rows, scenes, folder)
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- inputs and the sweep


def _load_scenes(c: Config) -> Dict[str, Any]:
    """Every scene loaded and checked before anything is written (with render_only, missing data is allowed)."""
    from sinelr.data import DataNotFoundError
    from sinelr.data.llff import load_llff

    scenes = {}
    for name in c.scene:
        try:
            scene = load_llff(name, c.data_dir, downscale=c.downscale)
        except DataNotFoundError:
            if c.render_only:
                continue
            raise
        if min(scene.height, scene.width) < MIN_SIDE:
            from PIL import Image

            with Image.open(scene.files[0]) as im:
                w8, h8 = im.size
            raise ConfigError(f"downscale {c.downscale} leaves {scene.width}x{scene.height} pixels of scene {name!r} "
                             f"({w8}x{h8} in images_8); PSNR/SSIM need at least {MIN_SIDE}x{MIN_SIDE} pixels, so "
                             f"downscale must be <= {min(w8, h8) // MIN_SIDE}")
        scenes[name] = hold_out_views(scene, c.val_views) if c.val_views else scene
    return scenes


def hold_out_views(scene, n: int):
    """The scene with `n` of its training views (evenly spaced) as the evaluation views and the rest for
    training; its test views are dropped, so nothing tuned on it has seen them."""
    import dataclasses

    train = list(scene.i_train)
    if n >= len(train):
        raise ConfigError(f"val_views={n} leaves no training views: scene {scene.name!r} has {len(train)} "
                         f"(and {len(scene.i_test)} test views, never used for validation)")
    val = [train[int((j + 0.5) * len(train) / n)] for j in range(n)]
    return dataclasses.replace(scene, i_train=[i for i in train if i not in val], i_test=val)


def _check_render_settings(c: Config, sweep) -> None:
    """Refuse to re-render rows under settings other than those that computed them (the summary would lie)."""
    from sinelr.report import ResultsConflictError

    out = Path(c.output_dir)
    if (out / "settings.json").is_file() or not (out / "config.json").is_file():
        sweep.check_settings(sweep.table())
        return
    old = json.loads((out / "config.json").read_text())  # an older folder: compare the keys that changed numbers
    diff = [f"{k}: {old[k]!r} there, {getattr(c, k)!r} now" for k in LEGACY_KEYS if k in old and old[k] != getattr(c, k)]
    if c.method_lr:
        diff.append(f"method_lr: absent there, {c.method_lr} now")
    if diff:
        raise ResultsConflictError(f"{out} holds rows computed with other settings ({'; '.join(diff)}); "
                                   "re-render it with the settings of its config.json")


def run(config: Config) -> List[Dict[str, Any]]:
    """Run the pending points of the grid (every scene and seed) and render the summary from all rows."""
    from sinelr.config import config_to_dict
    from sinelr.sweep import Sweep, SweepSpec
    from sinelr.train import resolve_device

    c = config
    lrs = _validate(c)
    scenes = _load_scenes(c)  # read and checked before anything is written
    device = resolve_device(c.device)
    holder: Dict[str, Any] = {}
    sweep = Sweep(SweepSpec("nerf", COLUMNS, KEY, **SPEC_ARGS), config_to_dict(c), Path(c.output_dir), Path(c.run_dir),
                  lambda rows, folder: render(c, lrs, holder["sweep"], scenes, rows, folder))
    holder["sweep"] = sweep
    if c.render_only:
        _check_render_settings(c, sweep)
    one = (lambda p, f: run_one(c, scenes[p["scene"]], device, p, f, sweep.checkpoint_fingerprint(p)))
    rows = sweep.run(grid(c), one, render_only=c.render_only)
    print(f"results in {c.output_dir}/ (summary.csv, summary.md, rd_plot.png, fig4_*.png, views/)")
    return rows
