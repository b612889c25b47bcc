"""ViT trained from scratch with dense, low-rank or sine low-rank MLPs (paper Tabs. 1, 2, 5).

`sinelr vit --config configs/vit_fashion_mnist_cpu.yaml --methods full lowrank sine --ranks 1 5 --seeds 0 1 2`
trains every (method, rank, omega, seed) point of the grid, evaluates top-1 on the test set (or on a
validation split carved out of the training images with `--val-split N`, for tuning), and renders
summary.md (Tab. 2 layout, the paper's numbers beside ours, paired per-seed verdicts) and the
accuracy-vs-parameters plot with error bars. Data: CIFAR-100 (python format), Fashion-MNIST (IDX) or
an image folder. Runs unchanged on one CPU / GPU or under `accelerate launch` / `torchrun` (DDP through
accelerate; each rank takes its shard of the global batch). Checkpoints resume exactly: the batch and
augmentation of every step are functions of (seed, epoch, step).
"""
from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sinelr.errors import ConfigError
from sinelr.config import method_learning_rates

# Paper, Tab. 2: CIFAR-100, ViT-S trained from scratch, top-1 (%) of low-rank / sine low-rank MLPs.
PAPER_TOP1 = {1: (54.50, 58.14), 5: (56.04, 59.52), 10: (56.98, 61.19), 30: (58.69, 67.15), 60: (62.07, 67.71)}
PAPER_FULL_TOP1 = 65.99
PAPER_OMEGA_K1 = (500, 58.1)  # Tab. 5: the omega sweep at k=1 (100..700) peaks at omega=500

COLUMNS: Dict[str, Any] = {"config": str, "dataset": str, "method": str, "rank": int, "omega": float, "seed": int,
                           "params": int, "compression": float, "top1": float, "train_loss": float,
                           "epochs": float, "eval_split": str, "model_bytes": int}
KEY = ["config", "method", "rank", "omega", "seed"]
METHODS = ("full", "lowrank", "sine")
SENSITIVITY_MARGIN = 3.0  # EVIDENCE.md: dense must beat low-rank at the smallest rank by 3 points


@dataclass
class Config:
    name: str = field(default="vit_s_cifar100", metadata={"help": "config name: the `config` column of every row"})
    dataset: str = field(default="cifar100", metadata={"help": "cifar100 | fashion_mnist | image_folder"})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "dataset folder (cifar-100-python or its parent; Fashion-MNIST IDX files, default "
                "/usr/share/datasets/fashion-mnist; image folder with train/ and test/)"})
    image_size: int = field(default=32, metadata={"help": "input size (image folders are resized to it)"})
    train_subset: int = field(default=0, metadata={"help": "train on a fixed random subset of this many images (0: all)"})
    test_subset: int = field(default=0, metadata={"help": "evaluate on a fixed random subset (0: the whole test set)"})
    val_split: int = field(default=0, metadata={
        "help": "hold out this many training images (fixed, seed-independent) and report top-1 on them instead of "
                "the test set: for tuning (0: off)"})
    methods: List[str] = field(default_factory=lambda: ["sine"], metadata={"help": "full | lowrank | sine (MLP layers of every block)"})
    ranks: List[int] = field(default_factory=lambda: [10], metadata={"help": "ranks k of the MLP factors"})
    omega: float = field(default=500.0, metadata={"help": "sine frequency (Tab. 5: best 500 at k=1 on CIFAR-100)"})
    omegas: List[float] = field(default_factory=list, metadata={"help": "omega sweep of the sine model at omega_sweep_rank"})
    omega_sweep_rank: int = field(default=1, metadata={"help": "rank of the omega sweep"})
    seeds: List[int] = field(default_factory=lambda: [0], metadata={"help": "seeds of init, batch order and augmentation"})
    patch_size: int = field(default=4, metadata={"help": "patch size (ViT-S on 32x32: 4)"})
    embed_dim: int = field(default=384, metadata={"help": "token width (ViT-S 384, ViT-B 768)"})
    depth: int = field(default=12, metadata={"help": "number of blocks"})
    num_heads: int = field(default=6, metadata={"help": "attention heads"})
    mlp_dim: int = field(default=1536, metadata={"help": "MLP hidden width (ViT-S 1536, ViT-B 3072)"})
    pool: str = field(default="cls", metadata={"help": "classifier input: cls (the class token) | mean (mean of the patch tokens)"})
    epochs: float = field(default=200.0, metadata={"help": "training epochs (may be fractional)"})
    batch_size: int = field(default=256, metadata={"help": "global batch size (split across processes)"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate of methods not in method_lr"})
    method_lr: List[str] = field(default_factory=list, metadata={"help": "per-method learning rates as method=value items"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_epochs: float = field(default=10.0, metadata={"help": "linear warmup, then cosine decay to 0"})
    label_smoothing: float = field(default=0.1, metadata={"help": "cross-entropy label smoothing"})
    crop_padding: int = field(default=4, metadata={"help": "random crop from the zero-padded image (0: off)"})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flip (p = 0.5)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clipping (0: off)"})
    mixed_precision: str = field(default="bf16", metadata={"help": "no | bf16 (used on GPU only; CPU runs in fp32)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    eval_batch_size: int = field(default=1000, metadata={"help": "batch size for the evaluation"})
    output_dir: str = field(default="results/vit/vit_s_cifar100", metadata={"help": "results folder"})
    run_dir: str = field(default="runs/vit/vit_s_cifar100", metadata={"help": "run folders with checkpoints (git-ignored)"})
    checkpoint_every: int = field(default=500, metadata={"help": "save a checkpoint every N steps (and at the end)"})
    stop_after_steps: int = field(default=0, metadata={
        "help": "stop (with a checkpoint) after this many steps, as if interrupted; rerun to resume (0: off)"})
    reduced: str = field(default="", metadata={"help": "what this config reduces against the paper (for summary.md)"})
    render_only: bool = field(default=False, metadata={"help": "train nothing: re-render summary.md and the plot"})
    note: str = field(default="", metadata={"help": "a line printed at the top of summary.md"})
    protocol: List[str] = field(default_factory=list, metadata={
        "help": "protocol facts measured elsewhere (doubling check, LR grid), one line each, shown at the top"})


SPEC_ARGS = dict(
    grid_keys=("methods", "ranks", "omegas", "omega_sweep_rank", "seeds", "render_only", "note", "protocol", "reduced",
               "stop_after_steps", "name"),
    not_in_results=("output_dir", "run_dir", "device", "checkpoint_every", "eval_batch_size", "data_dir"),
    not_in_training=("test_subset",),
)


def _validate(c: Config) -> Dict[str, float]:
    from sinelr.data.images import IMAGE_DATASETS
    from sinelr.functional import check_omega

    if not c.methods or any(m not in METHODS for m in c.methods):
        raise ConfigError(f"methods must be a non-empty subset of {list(METHODS)}, got {c.methods}")
    if c.dataset not in IMAGE_DATASETS:
        raise ConfigError(f"dataset must be one of {list(IMAGE_DATASETS)}, got {c.dataset!r}")
    for name in ("batch_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_dim", "eval_batch_size", "image_size"):
        if getattr(c, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(c, name)}")
    if any(k < 1 or k > min(c.embed_dim, c.mlp_dim) for k in list(c.ranks) + [c.omega_sweep_rank]) or not c.seeds:
        raise ConfigError(f"ranks must be in [1, min(embed_dim, mlp_dim)={min(c.embed_dim, c.mlp_dim)}] and seeds "
                         f"non-empty, got ranks={c.ranks}, omega_sweep_rank={c.omega_sweep_rank}, seeds={c.seeds}")
    if not c.epochs > 0:
        raise ConfigError(f"epochs must be > 0, got {c.epochs}")
    if c.lr <= 0 or c.weight_decay < 0 or c.warmup_epochs < 0 or not 0 <= c.label_smoothing < 1:
        raise ConfigError(f"need lr > 0, weight_decay >= 0, warmup_epochs >= 0, 0 <= label_smoothing < 1; got "
                         f"{c.lr}, {c.weight_decay}, {c.warmup_epochs}, {c.label_smoothing}")
    for w in [c.omega] + list(c.omegas):
        check_omega(w)
    if c.crop_padding < 0 or c.stop_after_steps < 0 or c.checkpoint_every < 0 or c.val_split < 0:
        raise ConfigError("crop_padding, stop_after_steps, checkpoint_every and val_split must be >= 0")
    if c.pool not in ("cls", "mean"):
        raise ConfigError(f"pool must be 'cls' or 'mean', got {c.pool!r}")
    if c.mixed_precision not in ("no", "bf16"):
        raise ConfigError(f"mixed_precision must be 'no' or 'bf16', got {c.mixed_precision!r}")
    return method_learning_rates(c.method_lr, METHODS, c.lr)


def grid(c: Config) -> List[Dict[str, Any]]:
    cells = [("full", None, None)] * ("full" in c.methods)
    cells += [(m, k, c.omega if m == "sine" else None) for k in c.ranks for m in ("lowrank", "sine") if m in c.methods]
    if c.omegas and "sine" in c.methods:
        cells += [("sine", c.omega_sweep_rank, float(w)) for w in c.omegas
                  if ("sine", c.omega_sweep_rank, float(w)) not in cells]
    return [{"config": c.name, "method": m, "rank": k, "omega": w, "seed": s} for s in c.seeds for m, k, w in cells]


def build_model(c: Config, point: Dict[str, Any], in_chans: int, num_classes: int):
    """The ViT with the MLP layers of the point's kind, injected (timm's `linear_layer=` style)."""
    from sinelr.kinds import linear_factory
    from sinelr.models.vit import VisionTransformer

    factory = linear_factory(point["method"], point["rank"], omega=point["omega"] or c.omega)
    return VisionTransformer(img_size=c.image_size, patch_size=c.patch_size, in_chans=in_chans,
                             num_classes=num_classes, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                             mlp_dim=c.mlp_dim, linear_layer=factory, pool=c.pool)


# (channels, classes, training images) of the datasets whose shape is known without reading them
DATASET_SHAPES = {"cifar100": (3, 100, 50_000), "fashion_mnist": (1, 10, 60_000)}


def estimate(c: Config, steps: int = 2):
    """What the run will cost (a RunEstimate), from training steps of the first point's model timed on
    random images of the config's shape (the data is not read) at batches 4 and 8, extrapolated
    linearly to batch_size."""
    import torch
    import torch.nn.functional as F

    from sinelr.train import RunEstimate, extrapolate_step_seconds, resolve_device

    known = c.dataset in DATASET_SHAPES
    channels, classes, n_train = DATASET_SHAPES.get(c.dataset, DATASET_SHAPES["cifar100"])
    n_train = max(1, min(n_train - c.val_split, c.train_subset or n_train))
    points, device = grid(c), resolve_device(c.device)
    model = build_model(c, points[0], channels, classes).to(device)
    optimizer = _optimizer(model, c.lr, c.weight_decay)

    def make_step(b: int):
        x = torch.randn(b, channels, c.image_size, c.image_size, device=device)
        y = torch.randint(0, classes, (b,), device=device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step

    per_step = extrapolate_step_seconds(make_step, c.batch_size, 4, 8, steps)
    how = (f"{points[0]['method']} model timed on random {c.image_size}x{c.image_size} images at batches 4 and 8, "
           f"extrapolated to {c.batch_size}; {n_train:,} training images" + ("" if known else " assumed"))
    return RunEstimate(len(points), max(1, round(c.epochs * (n_train // c.batch_size or 1))), per_step, device.type, how)


def load_data(c: Config):
    """(train, eval set, eval split name): the eval set is the test set, or the held-out val_split images."""
    from sinelr.data.images import load_image_dataset

    train, test = load_image_dataset(c.dataset, c.data_dir, c.image_size, 3)
    if train.size != c.image_size:
        raise ConfigError(f"{c.dataset} images are {train.size}x{train.size} but image_size is {c.image_size}; "
                         f"set image_size: {train.size}")
    if c.val_split:
        if c.val_split >= len(train):
            raise ConfigError(f"val_split={c.val_split} leaves no training images (the training set has {len(train)})")
        return _split(train, c.val_split, seed=3000) + ("val",)
    return train, test.subset(c.test_subset, seed=2000), "test"


def _split(data, n: int, seed: int):
    """(rest, held out): a fixed random `n` examples held out of `data` (the same for every run seed)."""
    import torch

    from sinelr.data.images import ImageDataset

    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    parts = [perm[n:].sort().values, perm[:n].sort().values]
    return tuple(ImageDataset(data.images[i], data.labels[i], data.classes, data.name, data.mean, data.std) for i in parts)


def _params_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _evaluate(model, data, c: Config, device, amp_dtype) -> float:
    import torch

    from sinelr.data.images import normalize
    from sinelr.metrics import accuracy

    model.eval()
    preds: List[int] = []
    with torch.no_grad():
        for i in range(0, len(data), c.eval_batch_size):
            x = normalize(data.images[i:i + c.eval_batch_size].to(device), data.mean, data.std)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                preds.extend(model(x).argmax(-1).cpu().tolist())
    model.train()
    return 100.0 * accuracy(preds, data.labels.tolist())


def _optimizer(model, lr: float, weight_decay: float):
    import torch

    def decays(n: str, p) -> bool:
        return p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def _batch_fn(c: Config, train, seed: int, steps_per_epoch: int, accelerator):
    """step -> (x, y) of this process's shard of the global batch; a function of (seed, step) only."""
    import torch

    from sinelr.data.images import normalize, random_crop_flip

    world, rank_ = accelerator.num_processes, accelerator.process_index
    shard, perm = c.batch_size // world, {}

    def batch(step: int):
        epoch, i = divmod(step, steps_per_epoch)
        if epoch not in perm:  # the order of epoch e depends on (seed, e) only
            perm.clear()
            perm[epoch] = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        idx = perm[epoch][i * c.batch_size:(i + 1) * c.batch_size]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * (step + 1))
        images = random_crop_flip(train.images[idx], c.crop_padding, c.hflip, gen)  # the global batch
        lo, hi = rank_ * shard, (rank_ + 1) * shard
        dev = accelerator.device
        return normalize(images[lo:hi].to(dev), train.mean, train.std), train.labels[idx[lo:hi]].to(dev)

    return batch


def run_one(c: Config, lrs: Dict[str, float], data, accelerator, point: Dict[str, Any], folder: Path,
            fingerprint: str) -> Dict[str, Any]:
    """Train and evaluate one ViT; raises PointNotFinished when stop_after_steps cuts it short."""
    import torch
    import torch.nn.functional as F
    from accelerate.utils import gather_object

    from sinelr.convert import parameter_report
    from sinelr.sweep import PointNotFinished
    from sinelr.train import cosine_with_warmup, seed_everything, train_loop

    train, held_out, split = data
    train = train.subset(c.train_subset, seed=1000 + point["seed"])  # a fixed subset per seed (paired across methods)
    steps_per_epoch = len(train) // c.batch_size
    total = max(1, round(c.epochs * steps_per_epoch))
    seed_everything(point["seed"])
    model = build_model(c, point, train.channels, train.num_classes)
    report = parameter_report(model)
    optimizer = _optimizer(model, lrs[point["method"]], c.weight_decay)
    scheduler = cosine_with_warmup(optimizer, round(c.warmup_epochs * steps_per_epoch), total)  # steps per step
    model, optimizer = accelerator.prepare(model, optimizer)
    batch, losses = _batch_fn(c, train, point["seed"], steps_per_epoch, accelerator), []

    def step_fn(step: int) -> torch.Tensor:
        x, y = batch(step)
        loss = F.cross_entropy(model(x).float(), y, label_smoothing=c.label_smoothing)
        losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")) if accelerator.num_processes > 1
                      else float(loss.detach()))  # the loss of the whole global batch
        return loss

    limit = min(total, c.stop_after_steps) if c.stop_after_steps else total
    tag = f"{point['method']} k={point['rank']} w={point['omega']} seed {point['seed']}"
    if accelerator.is_main_process:
        print(f"sinelr vit: {c.name} {tag}: {len(train)} train / {len(held_out)} {split} images, {total} steps of "
              f"global batch {c.batch_size} on {accelerator.num_processes} process(es), {report}", file=sys.stderr)
    result = train_loop(model, optimizer, step_fn, limit, scheduler=scheduler, checkpoint_dir=folder / "checkpoint",
                        checkpoint_every=c.checkpoint_every, config_fingerprint=fingerprint, accelerator=accelerator,
                        grad_clip=c.grad_clip or None, desc=f"vit {tag}")
    accelerator.wait_for_everyone()
    net = accelerator.unwrap_model(model)
    digests = gather_object([_params_digest(net)])
    if len(set(digests)) != 1:
        raise RuntimeError(f"parameters differ across the {accelerator.num_processes} processes after training: {digests}")
    (folder / "param_digests.txt").write_text("\n".join(digests) + "\n") if accelerator.is_main_process else None
    if limit < total:
        raise PointNotFinished(f"stop_after_steps={c.stop_after_steps} of {total}")
    amp = torch.bfloat16 if c.mixed_precision == "bf16" and accelerator.device.type == "cuda" else None
    top1 = _evaluate(net, held_out, c, accelerator.device, amp)
    from sinelr.serialization import save_pretrained

    nbytes = save_pretrained(net, folder / "model") if accelerator.is_main_process else None
    loss = sum(losses[-50:]) / len(losses[-50:]) if losses else result.final_loss
    print(f"sinelr vit: {tag}: top-1 ({split}) {top1:.2f}%, train loss {loss:.4f}", file=sys.stderr)
    return {"dataset": c.dataset, "params": report.total, "compression": report.compression, "top1": top1,
            "train_loss": loss, "epochs": c.epochs, "eval_split": split, "model_bytes": nbytes}


def _by_seed(rows: List[Dict[str, Any]], method: str, rank: Optional[int], omega: Optional[float],
             key: str = "top1") -> Dict[int, float]:
    return {r["seed"]: r[key] for r in rows if r["method"] == method and r["rank"] == rank and r["omega"] == omega}


def _cell(values: Dict[int, float]) -> str:
    from sinelr.stats import mean_std

    if not values:
        return "n/a"
    m, sd = mean_std(list(values.values()))
    return f"{m:.2f}" if len(values) == 1 else f"{m:.2f} ± {sd:.2f} (n={len(values)})"


def _main_table(c: Config, rows: List[Dict[str, Any]]):
    """(table rows, paired comparisons, ranks) of Tab. 2: low-rank vs sine at omega c.omega per rank, then full."""
    from sinelr.stats import mean_std, paired_comparison

    ranks = sorted({r["rank"] for r in rows if r["rank"] is not None and r["omega"] in (None, c.omega)})
    table, comps = [], []
    for k in sorted(set(ranks) | set(PAPER_TOP1)):  # the paper's ranks are listed even where not run
        lo, si = _by_seed(rows, "lowrank", k, None), _by_seed(rows, "sine", k, c.omega)
        ref = next((r for r in rows if r["rank"] == k), None) or {"params": None, "compression": math.nan}
        comp = "" if ref["params"] is None else f"{100 * ref['compression']:.1f}%"
        table.append({"k": k, "params": ref["params"], "comp": comp, "bytes": ref.get("model_bytes"), "lo": _cell(lo),
                      "si": _cell(si), "lo_loss": _cell(_by_seed(rows, "lowrank", k, None, "train_loss")),
                      "si_loss": _cell(_by_seed(rows, "sine", k, c.omega, "train_loss")),
                      "p_lo": PAPER_TOP1.get(k, (math.nan,) * 2)[0], "p_si": PAPER_TOP1.get(k, (math.nan,) * 2)[1],
                      "lo_m": mean_std(list(lo.values()))[0] if lo else math.nan,
                      "si_m": mean_std(list(si.values()))[0] if si else math.nan})
        if k in ranks:
            comps.append(paired_comparison(lo, si, "low-rank", "sine"))
    full = _by_seed(rows, "full", None, None)
    if full:
        ref = next(r for r in rows if r["method"] == "full")
        table.append({"k": "full", "params": ref["params"], "comp": "100.0%", "bytes": ref.get("model_bytes"),
                      "lo": _cell(full), "si": "",
                      "lo_loss": _cell(_by_seed(rows, "full", None, None, "train_loss")), "si_loss": "",
                      "p_lo": PAPER_FULL_TOP1, "p_si": math.nan, "lo_m": mean_std(list(full.values()))[0], "si_m": math.nan})
    return table, comps, ranks


def _protocol_lines(c: Config, rows: List[Dict[str, Any]], lrs: Dict[str, float]) -> List[str]:
    from sinelr.stats import mean_std

    lines = ["## Protocol checks (shared/EVIDENCE.md)", ""]
    lines += [f"- {p}" for p in c.protocol] or ["- plateau (budget doubling) and LR grid: not stated for this run"]
    ranks = sorted({r["rank"] for r in rows if r["method"] == "lowrank"})
    full, low = _by_seed(rows, "full", None, None), _by_seed(rows, "lowrank", ranks[0], None) if ranks else {}
    if full and low:
        margin = mean_std(list(full.values()))[0] - mean_std(list(low.values()))[0]
        lines.append(f"- sensitivity: full minus low-rank k={ranks[0]} = {margin:+.2f} points (needs >= "
                     f"{SENSITIVITY_MARGIN:g}): {'holds' if margin >= SENSITIVITY_MARGIN else 'FAILS'}")
    lines.append("- learning rates used: " + ", ".join(f"{m} {lrs[m]:g}" for m in METHODS))
    seeds = sorted({r["seed"] for r in rows})
    lines.append(f"- seeds: {len(seeds)} ({', '.join(map(str, seeds))}); verdicts pair runs by seed (same batch order)")
    return lines + [""]


def render(c: Config, lrs: Dict[str, float], rows: List[Dict[str, Any]], folder: Path) -> None:
    """summary.md (Tab. 2 layout, the paper's numbers beside ours, verdicts) and accuracy_vs_params.png."""
    from sinelr.report import carry_report_text, markdown_table, provenance_lines, verdict_lines

    c = carry_report_text(c, folder, len(rows))
    table, comps, ranks = _main_table(c, rows)
    split = ", ".join(sorted({r["eval_split"] or "test" for r in rows}))
    dataset = rows[0]["dataset"] if rows else c.dataset
    lines = [f"# ViT low-rank vs sine low-rank MLPs: {c.name}", ""] + ([f"> {c.note}", ""] if c.note else [])
    lines += provenance_lines(folder) + [
        f"- dataset: {dataset}; top-1 on the **{split}** split" + (" (held out of the training images)" if "val" in split else ""),
        f"- model: ViT, patch {c.patch_size}, width {c.embed_dim}, MLP {c.mlp_dim}, {c.depth} blocks, {c.num_heads} heads, "
        f"{'class token' if c.pool == 'cls' else 'mean of the patch tokens'} into the head; "
        f"the two MLP layers of every block are dense (full) or rank-k low-rank / sine low-rank (omega {c.omega:g}, gain "
        "sqrt(in)); everything else dense",
        f"- training: AdamW (wd {c.weight_decay:g}), cosine with {c.warmup_epochs:g} warmup epochs, label smoothing "
        f"{c.label_smoothing:g}, global batch {c.batch_size}, {c.epochs:g} epochs"
        + (f" of a fixed {c.train_subset}-image subset" if c.train_subset else "")
        + f"; random crop (padding {c.crop_padding}), horizontal flip {c.hflip}",
        f"- reduced against the paper: {c.reduced or 'nothing (the paper setting)'}",
        "- params / compression: the whole model (compression = params / params of the same ViT with dense MLPs)", ""]
    lines += _protocol_lines(c, rows, lrs)
    lines += ["## Top-1 (%) by MLP rank k (ours beside the paper's Tab. 2, CIFAR-100 ViT-S)", "",
              markdown_table(table, ["k", "params", "comp", "bytes", "lo", "si", "lo_loss", "si_loss", "p_lo", "p_si"],
                             ["k", "params", "% of dense", "model file bytes", "low-rank (full: dense) top-1", f"sine top-1 (omega {c.omega:g})",
                              "low-rank train loss", "sine train loss", "paper low-rank", "paper sine"]), ""]
    if comps:
        lines += ["Sine minus low-rank top-1 (points), paired by seed:", "", verdict_lines(comps, "rank k", ranks), ""]
    lines += _omega_lines(c, rows, folder)
    _plot(folder / "accuracy_vs_params.png", table, rows, dataset, c.omega)
    (folder / "summary.md").write_text("\n".join(lines) + "\n")


def _omega_lines(c: Config, rows: List[Dict[str, Any]], folder: Optional[Path] = None) -> List[str]:
    """Tab. 5: sine top-1 per omega at omega_sweep_rank, each paired by seed with low-rank at that rank;
    with `folder`, the figure (mean +- std over seeds, low-rank as a reference band)."""
    from sinelr.report import markdown_table, plot_mean_std
    from sinelr.stats import paired_comparison

    k = c.omega_sweep_rank
    ws = sorted({r["omega"] for r in rows if r["method"] == "sine" and r["rank"] == k})
    if len(ws) < 2:
        return []
    low = _by_seed(rows, "lowrank", k, None)
    sine_at = {w: _by_seed(rows, "sine", k, w) for w in ws}
    tab = []
    for w, sine in sine_at.items():
        comp = paired_comparison(low, sine, "low-rank", "sine") if low else None
        tab.append({"omega": f"{w:g}", "top1": _cell(sine), "loss": _cell(_by_seed(rows, "sine", k, w, "train_loss")),
                    "diff": comp.interval_text() if comp else "n/a", "verdict": comp.verdict if comp else ""})
    lines = [f"## omega sweep at k = {k} (paper Tab. 5: peak {PAPER_OMEGA_K1[1]} at omega = {PAPER_OMEGA_K1[0]} on CIFAR-100)",
             "", f"Low-rank k = {k} (no omega): {_cell(low)}; sine - low-rank is paired by seed.", "",
             markdown_table(tab, ["omega", "top1", "loss", "diff", "verdict"],
                            ["omega", "sine top-1", "train loss", f"sine - low-rank k={k}: mean [95% t-interval]",
                             "verdict"]), ""]
    if folder is not None:
        series = {f"sine k={k}": {w: list(sine.values()) for w, sine in sine_at.items()}}
        path = plot_mean_std(folder / f"omega_sweep_k{k}.png", series, "omega", "top-1 (%)",
                             f"{c.name}\nomega sweep at k = {k}, mean +- std over seeds", logx=True,
                             hlines={f"low-rank k={k}": list(low.values())} if low else None)
        lines[-1:-1] = ["", f"![omega sweep]({path.name})"]
    return lines


def _plot(path: Path, table: List[Dict[str, Any]], rows: List[Dict[str, Any]], dataset: str, omega: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinelr.stats import mean_std

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, label, marker in (("lowrank", "low-rank", "o"), ("sine", "sine low-rank", "s")):
        pts = []
        for t in (t for t in table if t["params"] is not None):
            vals = list(_by_seed(rows, method, t["k"], omega if method == "sine" else None).values()) if t["k"] != "full" else []
            if vals:
                pts.append((t["params"] / 1e6, *mean_std(vals)))
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker=marker, capsize=3,
                        label=label + " (mean ± sd over seeds)")
    for t in table:
        if t["k"] == "full":
            ax.scatter([t["params"] / 1e6], [t["lo_m"]], marker="*", s=120, color="k", label="full (dense MLPs)")
    ax.set_xlabel("parameters (millions, whole model)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"ViT: accuracy vs parameters ({dataset})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: Config) -> List[Dict[str, Any]]:
    from accelerate import Accelerator

    from sinelr.config import config_to_dict
    from sinelr.sweep import Sweep, SweepSpec
    from sinelr.train import resolve_device

    c = config
    lrs = _validate(c)
    device = resolve_device(c.device)
    accelerator = Accelerator(cpu=device.type == "cpu",
                              mixed_precision="bf16" if c.mixed_precision == "bf16" and device.type == "cuda" else "no")
    if c.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size {c.batch_size} must be divisible by the number of processes "
                         f"({accelerator.num_processes})")
    data = None if c.render_only else load_data(c)  # read and checked before anything is written
    if data is not None and len(data[0]) // c.batch_size < 1:
        raise ConfigError(f"the training set ({len(data[0])} images) is smaller than one batch ({c.batch_size})")
    sweep = Sweep(SweepSpec("vit", COLUMNS, KEY, **SPEC_ARGS), config_to_dict(c), Path(c.output_dir), Path(c.run_dir),
                  lambda rows, folder: render(c, lrs, rows, folder), is_main=accelerator.is_main_process,
                  share=accelerator.num_processes == 1)
    return sweep.run(grid(c), lambda p, f: run_one(c, lrs, data, accelerator, p, f, sweep.checkpoint_fingerprint(p)),
                     render_only=c.render_only)
