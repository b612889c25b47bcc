"""Quickstart: fit a real photo (scikit-image's astronaut, or any local image) with a coordinate MLP
whose hidden layers are dense, low-rank (U V^T) or sine low-rank (sin(omega U V^T) / g), and compare
PSNR at equal parameter counts over several seeds (paired verdicts, shared/EVIDENCE.md).

Runs on CPU in under three minutes with no arguments: `sinelr quickstart` (results in
runs/quickstart/, git-ignored; the committed copy is results/quickstart/). Per-method learning rates
come from the protocol run recorded in docs/quickstart.md. A rerun skips finished points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sinelr.errors import ConfigError
from sinelr.config import method_learning_rates

# Photos that ship inside the scikit-image wheel (no download needed).
BUILTIN_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket")
METHODS = ("dense", "lowrank", "sine")
COLUMNS: Dict[str, Any] = {"method": str, "rank": "int|str", "seed": int, "omega": float, "params": int,
                           "hidden_params": int, "compression": float, "psnr": float, "final_loss": float}
KEY = ["method", "rank", "seed"]
# The protocol's per-method learning rates (docs/quickstart.md), used when --lr is not given.
TUNED_LR = {"dense": 1e-2, "lowrank": 3e-2, "sine": 1e-2}


@dataclass
class Config:
    image: str = field(default="astronaut", metadata={"help": f"one of {', '.join(BUILTIN_IMAGES)} (shipped with scikit-image) or a path to an image file"})
    size: int = field(default=48, metadata={"help": "the image is centre-cropped to a square and resized to size x size"})
    methods: List[str] = field(default_factory=lambda: list(METHODS), metadata={"help": "dense, lowrank, sine"})
    ranks: List[int] = field(default_factory=lambda: [1, 4, 16], metadata={"help": "ranks k of the low-rank and sine low-rank hidden layers"})
    width: int = field(default=128, metadata={"help": "hidden width of the MLP"})
    depth: int = field(default=3, metadata={"help": "number of hidden-to-hidden layers (the ones that are swapped)"})
    num_frequencies: int = field(default=8, metadata={"help": "Fourier positional-encoding frequencies per coordinate"})
    # 48x48 and 300 steps keep three seeds of seven models under 3 minutes (docs/quickstart.md).
    steps: int = field(default=300, metadata={"help": "full-batch Adam steps per model"})
    # None: each method's own rate, the best of 3e-3 / 1e-2 / 3e-2 / 1e-1 by mean PSNR at k=4 on scikit-image's
    # coffee and chelsea, seed 0 (results/quickstart_protocol/, docs/quickstart.md): the reported photo was
    # never used for tuning. A number: that rate for every method not named in method_lr.
    lr: Optional[float] = field(default=None, metadata={
        "help": "Adam learning rate (cosine decay to 0) for every method; default: the tuned per-method rates "
                "(dense 1e-2, lowrank 3e-2, sine 1e-2)"})
    method_lr: List[str] = field(default_factory=list, metadata={
        "help": "per-method learning rates as method=value items (dense, lowrank, sine); override lr"})
    omega: float = field(default=100.0, metadata={"help": "frequency omega of the sine layers (tuned: see docs/quickstart.md)"})
    gain: Optional[float] = field(default=None, metadata={"help": "gain g of the sine layers (None = sqrt(width), the paper's code)"})
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds of every model's init (one row each)"})
    # One thread: this MLP is too small to gain from more, and on a busy machine extra OpenMP threads
    # that wait on each other made a run 30x slower in our tests.
    threads: int = field(default=1, metadata={"help": "torch CPU threads (0 = torch's default)"})
    output_dir: str = field(default="runs/quickstart", metadata={"help": "output folder (the committed copy: results/quickstart)"})
    run_dir: str = field(default="runs/quickstart-runs", metadata={"help": "run folders (reconstructions), git-ignored"})
    render_only: bool = field(default=False, metadata={"help": "train nothing: re-render summary.md and the figure"})
    note: str = field(default="", metadata={"help": "a line printed at the top of summary.md"})


SPEC_ARGS = dict(grid_keys=("methods", "ranks", "seeds", "render_only", "note"),
                 not_in_results=("output_dir", "run_dir", "threads"))


def _positive_int(name: str, value: object, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _validate(c: Config) -> Dict[str, float]:
    for name, low in (("size", 4), ("width", 2), ("depth", 1), ("num_frequencies", 0), ("steps", 1), ("threads", 0)):
        _positive_int(name, getattr(c, name), low)
    if not c.methods or any(m not in METHODS for m in c.methods):
        raise ConfigError(f"methods must be a non-empty subset of {list(METHODS)}, got {c.methods}")
    if not c.ranks or not c.seeds:
        raise ConfigError(f"ranks and seeds must each list at least one value, got ranks={c.ranks}, seeds={c.seeds}")
    for k in c.ranks:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= c.width:
            raise ConfigError(f"every rank must be an integer in [1, width={c.width}], got {k!r}")
    for name, values in (("ranks", c.ranks), ("seeds", c.seeds)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} must not repeat, got {list(values)}")
    if c.lr is not None and (not isinstance(c.lr, (int, float)) or not math.isfinite(c.lr) or c.lr <= 0):
        raise ConfigError(f"lr must be a finite number > 0, got {c.lr!r}")
    from sinelr.functional import check_gain, check_omega

    check_omega(c.omega)
    if c.gain is not None:
        check_gain(c.gain)
    if c.image not in BUILTIN_IMAGES and not Path(c.image).is_file():
        raise FileNotFoundError(
            f"image {c.image!r} is neither a built-in scikit-image photo ({', '.join(BUILTIN_IMAGES)}) nor an existing file")
    return method_learning_rates(c.method_lr, METHODS, TUNED_LR if c.lr is None else c.lr)


def image_label(name: str) -> str:
    return f"scikit-image `{name}`" if name in BUILTIN_IMAGES else f"the local file `{name}`"


def grid(c: Config) -> List[Dict[str, Any]]:
    cells = [("dense", "full")] * ("dense" in c.methods) + [(m, k) for k in c.ranks for m in ("lowrank", "sine")
                                                            if m in c.methods]
    return [{"method": m, "rank": k, "seed": s} for s in c.seeds for m, k in cells]


def run_one(c: Config, lrs: Dict[str, float], image, point: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    """Train one model on the image; its reconstruction goes to the run folder (for the figure)."""
    import numpy as np
    import torch

    from sinelr.convert import parameter_report
    from sinelr.kinds import linear_factory
    from sinelr.metrics import psnr
    from sinelr.models.image_fit import CoordinateMLP, pixel_grid
    from sinelr.train import NonFiniteLossError, cosine_with_warmup, seed_everything, train_loop

    target, coords = image.reshape(-1, image.shape[-1]), pixel_grid(c.size, c.size)

    def build(method: str, rank: Optional[int]) -> torch.nn.Module:
        seed_everything(point["seed"])
        factory = linear_factory(method, rank, omega=c.omega, gain=c.gain)
        return CoordinateMLP(factory, width=c.width, depth=c.depth, num_frequencies=c.num_frequencies,
                             out_features=image.shape[-1])

    method, rank = point["method"], None if point["method"] == "dense" else point["rank"]
    model = build(method, rank)
    opt = torch.optim.Adam(model.parameters(), lr=lrs[method])
    label = ("dense" if method == "dense" else f"{method} k={rank}") + f" seed {point['seed']}"
    try:
        res = train_loop(model, opt, lambda step: torch.mean((model(coords) - target) ** 2), c.steps,
                         scheduler=cosine_with_warmup(opt, 0, c.steps), desc=label)
    except NonFiniteLossError as exc:
        raise ConfigError(f"{label} diverged: {exc}. Try a lower --lr / --method-lr (now {lrs[method]:g})"
                         + (f" or --omega (now {c.omega:g})" if method == "sine" else "")) from exc
    model.eval()
    with torch.no_grad():
        pred = model(coords)
    if not torch.isfinite(pred).all():
        raise ConfigError(f"{label} produced non-finite outputs after training; try a lower --lr")
    np.save(folder / "reconstruction.npy", pred.reshape(image.shape).numpy())
    rep = parameter_report(model, reference=build("dense", None))
    return {"omega": c.omega if method == "sine" else None, "params": rep.total,
            "hidden_params": model.hidden_parameters(), "compression": rep.compression,
            "psnr": psnr(pred, target), "final_loss": res.final_loss}


def _psnr(rows: List[Dict[str, Any]], method: str, rank: Any) -> Dict[int, float]:
    return {r["seed"]: r["psnr"] for r in rows if r["method"] == method and r["rank"] == rank}


def _table(rows: List[Dict[str, Any]], c: Config, lrs: Dict[str, float]) -> str:
    from sinelr.report import markdown_table
    from sinelr.stats import mean_std

    out = []
    for method, rank in [("dense", "full")] + [(m, k) for k in c.ranks for m in ("lowrank", "sine")]:
        cell = [r for r in rows if r["method"] == method and r["rank"] == rank]
        if cell:
            m, s = mean_std([r["psnr"] for r in cell])
            out.append({"method": method, "rank": rank, "params": cell[0]["params"], "lr": f"{lrs[method]:g}",
                        "comp": f"{100 * cell[0]['compression']:.1f}%", "psnr": f"{m:.2f} ± {s:.2f}", "n": len(cell)})
    return markdown_table(out, ["method", "rank", "params", "comp", "lr", "psnr", "n"],
                          ["method", "rank", "params", "params vs dense", "lr", "PSNR dB (mean ± sd)", "seeds"])


def render(c: Config, lrs: Dict[str, float], image, sweep, rows: List[Dict[str, Any]], folder: Path) -> str:
    """summary.md and reconstructions.png from all rows; returns the markdown table (printed by run)."""
    from sinelr.report import carry_report_text, provenance_lines, verdict_lines
    from sinelr.stats import paired_comparison

    c = carry_report_text(c, folder, len(rows))
    ranks = [k for k in c.ranks if _psnr(rows, "sine", k)]
    comps = [paired_comparison(_psnr(rows, "lowrank", k), _psnr(rows, "sine", k), "low-rank", "sine") for k in ranks]
    dense_vs = [paired_comparison(_psnr(rows, "dense", "full"), _psnr(rows, "sine", k), "dense", "sine") for k in ranks]
    table = _table(rows, c, lrs)
    seed = min(r["seed"] for r in rows) if rows and all(r["seed"] is not None for r in rows) else None
    drawn = seed is not None and (sweep.run_folder({"method": rows[0]["method"], "rank": rows[0]["rank"], "seed": seed})
                                  / "reconstruction.npy").is_file()
    if image is not None and drawn:  # otherwise (rows from another machine) the folder keeps its figure
        _figure(folder / "reconstructions.png", image, sweep, rows, c)
    lines = ["# Quickstart: fitting a photo with dense / low-rank / sine low-rank coordinate MLPs", ""]
    lines += [f"> {c.note}", ""] if c.note else []
    lines += provenance_lines(folder) + [
        f"- image: {image_label(c.image)}, centre-cropped, resized to {c.size}x{c.size}; MLP: Fourier features "
        f"({c.num_frequencies} freqs) -> dense -> {c.depth} x swapped {c.width}x{c.width} layers -> dense, ReLU, sigmoid output",
        f"- training: full batch, Adam with cosine decay, {c.steps} steps; learning rates per method "
        f"({', '.join(f'{m} {v:g}' for m, v in lrs.items())}; the defaults come from the LR grid in docs/quickstart.md); "
        f"sine layers omega={c.omega:g}, gain={'sqrt(width)' if c.gain is None else c.gain}",
        "- seeds: " + (", ".join(map(str, sorted({r["seed"] for r in rows}))) + " (same init stream per seed across methods)"
                       if all(r["seed"] is not None for r in rows) else "not recorded (one run per model)"),
        "- vs the paper: this small image-fitting check is ours (the paper fits NeRF/occupancy fields, not this photo); "
        "it tests the paper's claim that at equal parameters sine low-rank beats plain low-rank.",
        "", table, "", "Sine minus low-rank PSNR (dB), paired by seed:", "", verdict_lines(comps, "rank k", ranks), "",
        "Sine low-rank minus dense PSNR (dB), paired by seed:", "", verdict_lines(dense_vs, "rank k", ranks), "",
        "![reconstructions](reconstructions.png)"]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    return table


def _figure(path: Path, image, sweep, rows: List[Dict[str, Any]], c: Config) -> None:
    """Ground truth and dense on the first row, then one row per rank: low-rank | sine (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    seed = min(r["seed"] for r in rows)

    def panel(method: str, rank: Any):
        run = sweep.run_folder({"method": method, "rank": rank, "seed": seed}) / "reconstruction.npy"
        score = _psnr(rows, method, rank).get(seed)
        name = "dense" if method == "dense" else f"{method} k={rank}"
        return (f"{name} {score:.2f} dB", np.load(run)) if run.is_file() and score is not None else (name, None)

    grid_ = [[("ground truth", image.numpy()), panel("dense", "full")]]
    grid_ += [[panel("lowrank", k), panel("sine", k)] for k in c.ranks]
    fig, axes = plt.subplots(len(grid_), 2, figsize=(5, 2.5 * len(grid_)), squeeze=False)
    for row_axes, panels in zip(axes, grid_):
        for ax, (title, img) in zip(row_axes, panels):
            if img is not None:
                im = np.clip(img, 0, 1)
                ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray" if im.shape[-1] == 1 else None)
            ax.set_title(title + f" (seed {seed})" if title.endswith("dB") else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_image(name: str, size: int):
    from sinelr.data.photos import load_photo

    return load_photo(name, size, BUILTIN_IMAGES)


def run(config: Config) -> List[Dict[str, Any]]:
    """Train dense, then low-rank and sine low-rank at each rank, for every seed; render the summary."""
    import torch

    from sinelr.config import config_to_dict
    from sinelr.sweep import Sweep, SweepSpec

    c = config
    lrs = _validate(c)
    image = load_image(c.image, c.size)  # decoded and checked before anything is written
    threads_before = torch.get_num_threads()
    if c.threads:
        torch.set_num_threads(c.threads)
    out: Dict[str, str] = {}
    holder: Dict[str, Any] = {}
    sweep = Sweep(SweepSpec("quickstart", COLUMNS, KEY, **SPEC_ARGS), config_to_dict(c), Path(c.output_dir),
                  Path(c.run_dir), lambda rows, folder: out.update(table=render(c, lrs, image, holder["s"], rows, folder)),
                  extra={"image_sha256": _sha(image)})
    holder["s"] = sweep
    try:
        rows = sweep.run(grid(c), lambda p, f: run_one(c, lrs, image, p, f), render_only=c.render_only)
    finally:
        torch.set_num_threads(threads_before)
    print("\n" + out.get("table", (Path(c.output_dir) / "summary.md").read_text()) + "\n")
    print(f"results in {c.output_dir}/ (summary.csv, summary.md, reconstructions.png)")
    return rows


def _sha(image) -> str:
    import hashlib

    return hashlib.sha256(image.numpy().tobytes()).hexdigest()[:16]
