"""ViT trained from scratch with dense, low-rank or sine low-rank MLPs (paper Tabs. 1, 2, 5).

`sinelr vit --config configs/vit_s_cifar100.yaml --method sine --rank 10` trains one model, evaluates
top-1 on the test set and adds a row to results/vit/<name>/summary.csv, then rewrites summary.md
and the accuracy-vs-parameters plot from all rows. Data: CIFAR-100 (python format), Fashion-MNIST
(IDX) or an image folder. Runs unchanged on one CPU / GPU or under `accelerate launch` / `torchrun`
(DDP through accelerate; each rank takes its shard of the global batch). Checkpoints (safetensors)
resume exactly: the batch and augmentation of every step are functions of (seed, epoch, step).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["Config", "run", "PAPER_TOP1", "PAPER_FULL_TOP1", "PAPER_OMEGA_K1"]

# Paper, Tab. 2: CIFAR-100, ViT-S trained from scratch, top-1 (%) of low-rank / sine low-rank MLPs.
PAPER_TOP1 = {1: (54.50, 58.14), 5: (56.04, 59.52), 10: (56.98, 61.19), 30: (58.69, 67.15), 60: (62.07, 67.71)}
PAPER_FULL_TOP1 = 65.99
PAPER_OMEGA_K1 = (500, 58.1)  # Tab. 5: the omega sweep at k=1 (100..700) peaks at omega=500

COLUMNS = ["config", "dataset", "method", "rank", "omega", "params", "compression", "top1", "train_loss", "epochs", "seed"]
METHODS = ("full", "lowrank", "sine")
# Config keys that do not change the trained weights (excluded from the checkpoint fingerprint).
_NOT_IN_FINGERPRINT = {"name", "output_dir", "checkpoint_dir", "checkpoint_every", "stop_after_steps", "device",
                       "eval_batch_size", "reduced", "test_subset"}


@dataclass
class Config:
    name: str = field(default="vit_s_cifar100", metadata={"help": "run name: results go to <output_dir>/<name>/"})
    dataset: str = field(default="cifar100", metadata={"help": "cifar100 | fashion_mnist | image_folder"})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "dataset folder (cifar-100-python or its parent; Fashion-MNIST IDX files, default "
                "/usr/share/datasets/fashion-mnist; image folder with train/ and test/)"})
    image_size: int = field(default=32, metadata={"help": "input size (image folders are resized to it)"})
    train_subset: int = field(default=0, metadata={"help": "train on a fixed random subset of this many images (0: all)"})
    test_subset: int = field(default=0, metadata={"help": "evaluate on a fixed random subset (0: the whole test set)"})
    val_split: int = field(default=0, metadata={
        "help": "hold out this many training images (a fixed random split, the same for every seed) and evaluate "
                "on them instead of the test set, e.g. to tune the learning rate (0: off)"})
    method: str = field(default="sine", metadata={"help": "full | lowrank | sine (the MLP layers of every block)"})
    rank: int = field(default=10, metadata={"help": "rank k of the MLP factors (ignored for full)"})
    omega: float = field(default=500.0, metadata={"help": "sine frequency (Tab. 5: best 500 at k=1 on CIFAR-100)"})
    patch_size: int = field(default=4, metadata={"help": "patch size (ViT-S on 32x32: 4)"})
    embed_dim: int = field(default=384, metadata={"help": "token width (ViT-S 384, ViT-B 768)"})
    depth: int = field(default=12, metadata={"help": "number of blocks"})
    num_heads: int = field(default=6, metadata={"help": "attention heads"})
    mlp_dim: int = field(default=1536, metadata={"help": "MLP hidden width (ViT-S 1536, ViT-B 3072)"})
    pool: str = field(default="cls", metadata={"help": "classifier input: cls (class token) | mean (mean of the patch tokens)"})
    epochs: float = field(default=200.0, metadata={"help": "training epochs (may be fractional)"})
    batch_size: int = field(default=256, metadata={"help": "global batch size (split across processes)"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_epochs: float = field(default=10.0, metadata={"help": "linear warmup, then cosine decay to 0"})
    label_smoothing: float = field(default=0.1, metadata={"help": "cross-entropy label smoothing"})
    crop_padding: int = field(default=4, metadata={"help": "random crop from the zero-padded image (0: off)"})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flip (p = 0.5)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clipping (0: off)"})
    amp: bool = field(default=True, metadata={"help": "bf16 mixed precision on GPU (ignored on CPU)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    seed: int = field(default=0, metadata={"help": "seed of init, batch order and augmentation"})
    eval_batch_size: int = field(default=1000, metadata={"help": "batch size for the test-set evaluation"})
    output_dir: str = field(default="results/vit", metadata={"help": "results go to <output_dir>/<name>/"})
    checkpoint_dir: str = field(default="runs/vit", metadata={"help": "checkpoints go to <checkpoint_dir>/<name>/<run>/"})
    checkpoint_every: int = field(default=500, metadata={"help": "save a checkpoint every N steps (and at the end)"})
    stop_after_steps: int = field(default=0, metadata={
        "help": "stop (with a checkpoint) after this many steps, as if interrupted; rerun to resume (0: off)"})
    reduced: str = field(default="", metadata={"help": "what this config reduces against the paper (for summary.md)"})


def _validate(c: Config) -> None:
    from ..data.images import IMAGE_DATASETS

    if c.method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {c.method!r}")
    if c.dataset not in IMAGE_DATASETS:
        raise ValueError(f"dataset must be one of {list(IMAGE_DATASETS)}, got {c.dataset!r}")
    for name in ("batch_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_dim", "eval_batch_size", "image_size"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    if c.method != "full" and c.rank < 1:
        raise ValueError(f"rank must be >= 1, got {c.rank}")
    if not c.epochs > 0:
        raise ValueError(f"epochs must be > 0, got {c.epochs}")
    if c.lr <= 0 or c.weight_decay < 0 or c.warmup_epochs < 0 or not 0 <= c.label_smoothing < 1:
        raise ValueError(f"need lr > 0, weight_decay >= 0, warmup_epochs >= 0, 0 <= label_smoothing < 1; got "
                         f"{c.lr}, {c.weight_decay}, {c.warmup_epochs}, {c.label_smoothing}")
    if c.method == "sine" and not (math.isfinite(c.omega) and c.omega > 0):
        raise ValueError(f"omega must be a finite number > 0, got {c.omega}")
    if c.val_split < 0:
        raise ValueError(f"val_split must be >= 0, got {c.val_split}")
    if c.crop_padding < 0 or c.stop_after_steps < 0 or c.checkpoint_every < 0:
        raise ValueError("crop_padding, stop_after_steps and checkpoint_every must be >= 0")


def build_model(c: Config, in_chans: int, num_classes: int):
    """The dense ViT of the config, with its MLP layers converted for method lowrank / sine."""
    from ..convert import convert
    from ..models.vit import MLP_TARGETS, VisionTransformer

    model = VisionTransformer(img_size=c.image_size, patch_size=c.patch_size, in_chans=in_chans,
                              num_classes=num_classes, embed_dim=c.embed_dim, depth=c.depth,
                              num_heads=c.num_heads, mlp_dim=c.mlp_dim, pool=c.pool)
    if c.method != "full":
        convert(model, MLP_TARGETS, c.rank, kind=c.method, omega=c.omega, init="fresh")
    return model


def run_id(c: Config) -> str:
    if c.method == "full":
        return f"full-s{c.seed}"
    return f"{c.method}-k{c.rank}" + (f"-w{c.omega:g}" if c.method == "sine" else "") + f"-s{c.seed}"


def _params_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _evaluate(model, data, c: Config, device, amp_dtype) -> float:
    import torch

    from ..data.images import normalize
    from ..metrics import accuracy

    model.eval()
    preds: List[int] = []
    with torch.no_grad():
        for i in range(0, len(data), c.eval_batch_size):
            x = normalize(data.images[i:i + c.eval_batch_size].to(device), data.mean, data.std)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                preds.extend(model(x).argmax(-1).cpu().tolist())
    model.train()
    return 100.0 * accuracy(preds, data.labels.tolist())


def run(config: Config) -> Dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from ..config import config_to_dict
    from ..convert import parameter_report
    from ..data.images import ImageDataset, load_image_dataset, normalize, random_crop_flip
    from ..report import ResultsTable, provenance, write_json
    from ..train import cosine_with_warmup, fingerprint, resolve_device, seed_everything, train_loop

    c = config
    _validate(c)
    device = resolve_device(c.device)
    use_amp = c.amp and device.type == "cuda"
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if use_amp else "no")
    world = accelerator.num_processes
    if c.batch_size % world:
        raise ValueError(f"batch_size {c.batch_size} must be divisible by the number of processes ({world})")

    train, test = load_image_dataset(c.dataset, c.data_dir, c.image_size, 3)
    if train.size != c.image_size:
        raise ValueError(f"{c.dataset} images are {train.size}x{train.size} but image_size is {c.image_size}; "
                         f"set image_size: {train.size}")
    if c.val_split:  # validation images carved out of the training set replace the test set
        if c.val_split >= len(train):
            raise ValueError(f"val_split must be smaller than the training set ({len(train)} images), got {c.val_split}")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(3000))
        held, kept = perm[:c.val_split].sort().values, perm[c.val_split:].sort().values
        test = ImageDataset(train.images[held], train.labels[held], train.classes, f"{train.name} (validation)",
                            train.mean, train.std)
        train = ImageDataset(train.images[kept], train.labels[kept], train.classes, train.name, train.mean, train.std)
    train = train.subset(c.train_subset, seed=1000 + c.seed)
    test = test.subset(c.test_subset, seed=2000 + c.seed)
    steps_per_epoch = len(train) // c.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the training set ({len(train)} images) is smaller than one batch ({c.batch_size})")
    total_steps = max(1, round(c.epochs * steps_per_epoch))
    warmup = round(c.warmup_epochs * steps_per_epoch)

    seed_everything(c.seed)
    model = build_model(c, train.channels, train.num_classes)
    report = parameter_report(model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=c.lr)
    # The scheduler is not passed through accelerator.prepare: it steps once per optimisation step.
    scheduler = cosine_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    dev = accelerator.device

    cfg = config_to_dict(c)
    fp = fingerprint({k: v for k, v in cfg.items() if k not in _NOT_IN_FINGERPRINT})
    ckpt_dir = Path(c.checkpoint_dir) / c.name / run_id(c)
    shard = c.batch_size // world
    rank_ = accelerator.process_index
    perm_cache: Dict[int, torch.Tensor] = {}
    global_losses: List[float] = []

    def step_fn(step: int) -> torch.Tensor:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch not in perm_cache:  # the order of epoch e depends on (seed, e) only
            perm_cache.clear()
            perm_cache[epoch] = torch.randperm(len(train), generator=torch.Generator().manual_seed(
                c.seed * 1_000_003 + epoch))
        idx = perm_cache[epoch][i * c.batch_size:(i + 1) * c.batch_size]
        gen = torch.Generator().manual_seed(c.seed * 1_000_003 + 7_919 * (step + 1))
        images = random_crop_flip(train.images[idx], c.crop_padding, c.hflip, gen)  # the global batch
        lo, hi = rank_ * shard, (rank_ + 1) * shard  # this process's shard of it
        x = normalize(images[lo:hi].to(dev), train.mean, train.std)
        y = train.labels[idx[lo:hi]].to(dev)
        loss = F.cross_entropy(model(x).float(), y, label_smoothing=c.label_smoothing)
        # the loss of the whole global batch (mean over ranks; the same value on one process)
        global_losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")) if world > 1 else float(loss.detach()))
        return loss

    limit = total_steps if not c.stop_after_steps else min(total_steps, c.stop_after_steps)
    if accelerator.is_main_process:
        print(f"sinelr vit: {c.name} {run_id(c)}: {c.dataset} {len(train)} train / {len(test)} test images, "
              f"{total_steps} steps of global batch {c.batch_size} on {world} process(es), {report}", file=sys.stderr)
    result = train_loop(model, optimizer, step_fn, limit, scheduler=scheduler, checkpoint_dir=ckpt_dir,
                        checkpoint_every=c.checkpoint_every, config_fingerprint=fp, accelerator=accelerator,
                        grad_clip=c.grad_clip or None, desc=f"vit {run_id(c)}")
    accelerator.wait_for_everyone()
    if global_losses:  # mean over the last 50 steps of the global-batch loss (train_loop's is rank-local)
        result.final_loss = sum(global_losses[-50:]) / len(global_losses[-50:])
    net = accelerator.unwrap_model(model)
    digests = gather_object([_params_digest(net)])
    out: Dict[str, Any] = {"run": run_id(c), "steps": limit, "total_steps": total_steps, "param_digests": digests,
                           "train_loss": result.final_loss, "params": report.total, "compression": report.compression,
                           "checkpoint": str(ckpt_dir)}
    if len(set(digests)) != 1:
        raise RuntimeError(f"parameters differ across the {world} processes after training: {digests}")
    if limit < total_steps:
        out["stopped_early"] = True
        if accelerator.is_main_process:
            write_json(ckpt_dir.parent / f"{run_id(c)}.result.json", out)
        return out
    if not accelerator.is_main_process:
        return out
    top1 = _evaluate(net, test, c, dev, torch.bfloat16 if use_amp else None)
    out["top1"] = top1
    outdir = Path(c.output_dir) / c.name
    table = ResultsTable(outdir / "summary.csv", COLUMNS, key=["config", "method", "rank", "omega", "seed"])
    sparse = c.method != "full"
    dataset = c.dataset + (f":val{c.val_split}" if c.val_split else "")  # says the top-1 is on validation images
    table.add({"config": c.name, "dataset": dataset, "method": c.method, "rank": c.rank if sparse else "",
               "omega": c.omega if c.method == "sine" else "", "params": report.total,
               "compression": report.compression, "top1": top1, "train_loss": result.final_loss,
               "epochs": c.epochs, "seed": c.seed})
    record = {**provenance(), "run": run_id(c), "processes": world, "seconds": result.seconds,
              "resumed_from": result.resumed_from, "top1": top1, "train_loss": result.final_loss,
              "train_images": len(train), "test_images": len(test), "steps": total_steps,
              "evaluated_on": f"validation: {len(test)} held-out training images" if c.val_split else "test set",
              "augmentation": {"random_crop_padding": c.crop_padding, "hflip": c.hflip},
              "param_digests": digests, "config": cfg}
    runs = outdir / "runs.jsonl"
    lines = [ln for ln in (runs.read_text().splitlines() if runs.is_file() else []) if json.loads(ln)["run"] != run_id(c)]
    runs.write_text("\n".join(lines + [json.dumps(record, sort_keys=True)]) + "\n")
    write_json(ckpt_dir.parent / f"{run_id(c)}.result.json", out)
    write_summary(outdir, c)
    print(f"sinelr vit: {run_id(c)}: top-1 {top1:.2f}%, train loss {result.final_loss:.4f}, "
          f"params {report.total:,} ({100 * report.compression:.2f}% of dense)", file=sys.stderr)
    return out


def write_summary(outdir: Path, c: Config) -> None:
    """summary.md (Tab. 2-style, the paper's numbers beside ours) and accuracy_vs_params.png from summary.csv + runs.jsonl."""
    import csv

    from ..report import markdown_table, mean_std

    with (outdir / "summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    records = [json.loads(ln) for ln in (outdir / "runs.jsonl").read_text().splitlines() if ln.strip()]

    def f(r, k):
        return float(r[k])

    nan = float("nan")

    def agg(group: List[Dict[str, str]], key: str):
        """(mean, sample std, n) of one column over the seeds of a group of rows."""
        if not group:
            return nan, nan, 0
        m, sd = mean_std([f(r, key) for r in group])
        return m, sd, len(group)

    def cell(group: List[Dict[str, str]], key: str) -> str:
        m, sd, n = agg(group, key)
        if n == 0:
            return "n/a"
        return f"{m:.2f}" if n == 1 else f"{m:.2f} ± {sd:.2f} (n={n})"

    def by_rank(method: str, omega: Optional[float] = None) -> Dict[int, List[Dict[str, str]]]:
        out: Dict[int, List[Dict[str, str]]] = {}
        for r in rows:
            if r["method"] == method and (omega is None or float(r["omega"]) == float(omega)):
                out.setdefault(int(r["rank"]), []).append(r)
        return out

    full = [r for r in rows if r["method"] == "full"]
    lowrank = by_rank("lowrank")
    sine_all = [r for r in rows if r["method"] == "sine"]
    sine = by_rank("sine", c.omega)
    ranks = sorted(set(lowrank) | set(sine) | set(PAPER_TOP1))  # the paper's ranks are listed even if not run
    table = []
    for k in ranks:
        lr_, sn = lowrank.get(k, []), sine.get(k, [])
        ref = (lr_ or sn or [None])[0]
        table.append({"k": k, "params": int(ref["params"]) if ref else None,
                      "comp": 100 * f(ref, "compression") if ref else nan,
                      "lr": agg(lr_, "top1")[0], "sine": agg(sn, "top1")[0],
                      "lr_s": cell(lr_, "top1"), "sine_s": cell(sn, "top1"),
                      "lr_loss": agg(lr_, "train_loss")[0], "sine_loss": agg(sn, "train_loss")[0],
                      "p_lr": PAPER_TOP1.get(k, (nan, nan))[0], "p_sine": PAPER_TOP1.get(k, (nan, nan))[1]})
    table.append({"k": "full", "params": int(full[0]["params"]) if full else None,
                  "comp": 100 * f(full[0], "compression") if full else nan, "lr": agg(full, "top1")[0],
                  "lr_s": cell(full, "top1"), "sine": nan, "sine_s": "", "lr_loss": agg(full, "train_loss")[0],
                  "sine_loss": nan, "p_lr": PAPER_FULL_TOP1, "p_sine": nan})
    dataset = rows[0]["dataset"] if rows else c.dataset
    val_note = ("" if ":val" not in dataset else
                f" **Top-1 is on {dataset.split(':val')[1]} validation images held out of the training set "
                "(`val_split`), not on the test set.**")
    dataset = dataset.split(":val")[0]
    data_note = ("**Dataset: Fashion-MNIST** (real Zalando images, 60k/10k 28x28 grayscale, 10 classes). The paper's "
                 "numbers are CIFAR-100 (100 classes): compare orderings, not absolute values."
                 if dataset == "fashion_mnist" else f"Dataset: {dataset}.")
    # `python -m sinelr.cli` records argv[0] as cli.py; show the runnable form
    cmds = sorted({"python -m sinelr.cli " + rec["command"][len("cli.py "):] if rec["command"].startswith("cli.py ")
                   else rec["command"] for rec in records})
    shas = sorted({rec.get("git_sha", "?") for rec in records})
    machines = sorted({rec.get("machine", "?") for rec in records})
    seeds = sorted({int(r["seed"]) for r in rows})
    sizes = sorted({f"{rec.get('train_images')} / {rec.get('test_images')}" for rec in records})
    lines = [f"# ViT low-rank vs sine low-rank MLPs: {c.name}", "",
             f"Config: `{c.name}` (`configs/{c.name}.yaml` when such a file exists; the exact commands are below). "
             f"Recipe `sinelr.recipes.vit_cifar100`. {data_note}{val_note}", "",
             f"- Seeds: {seeds}; machine: {'; '.join(machines)}; git sha: {', '.join(shas)}",
             f"- Images per run (train / test): {', '.join(sizes)}",
             f"- Model: ViT, patch {c.patch_size}, width {c.embed_dim}, MLP {c.mlp_dim}, {c.depth} blocks, "
             f"{c.num_heads} heads, classifier on the {'class token' if c.pool == 'cls' else 'mean of the patch tokens'}; "
             "the two MLP layers of every block are dense (full) or rank-k low-rank / sine "
             f"low-rank (omega = {c.omega:g}, gain = sqrt(in)); everything else dense.",
             f"- Training: AdamW (lr {c.lr:g}, wd {c.weight_decay:g}), cosine with {c.warmup_epochs:g} warmup epochs, "
             f"label smoothing {c.label_smoothing:g}, global batch {c.batch_size}, {c.epochs:g} epochs"
             + (f" of a fixed {c.train_subset}-image subset" if c.train_subset else "")
             + f"; augmentation: random crop (zero padding {c.crop_padding}) + horizontal flip = {c.hflip}.",
             f"- Reduced against the paper: {c.reduced or 'nothing (the paper setting)'}",
             "- params / compression: the whole model (compression = params / params of the same ViT with dense MLPs).",
             "", "Commands:", "", "```"] + cmds + ["```", "",
             "## Top-1 (%) by MLP rank k (ours beside the paper's Tab. 2, CIFAR-100 ViT-S)", ""]
    lines.append(markdown_table(table, ["k", "params", "comp", "lr_s", "sine_s", "lr_loss", "sine_loss", "p_lr", "p_sine"],
                                ["k", "params (ours)", "% of dense (ours)", "low-rank (full: dense) top-1 (ours)", "sine top-1 (ours)",
                                 "low-rank train loss", "sine train loss", "paper low-rank", "paper sine"]))
    sweep: Dict[float, List[Dict[str, str]]] = {}
    for r in sine_all:
        if int(r["rank"]) == 1:
            sweep.setdefault(float(r["omega"]), []).append(r)
    if len(sweep) > 1:
        lines += ["", "## omega sweep at k = 1 (paper Tab. 5: peak 58.1 at omega = 500 on CIFAR-100)", "",
                  markdown_table([{"omega": f"{w:g}", "top1": cell(g, "top1"), "loss": agg(g, "train_loss")[0]}
                                  for w, g in sorted(sweep.items())], ["omega", "top1", "loss"],
                                 ["omega", "sine top-1 (ours)", "train loss"])]
    both = [t for t in table if t["k"] != "full" and not math.isnan(t["lr"]) and not math.isnan(t["sine"])]
    lines += ["", "## Does the paper's claim hold here?", ""]
    if both:
        wins = [t["k"] for t in both if t["sine"] > t["lr"]]
        losses = [t["k"] for t in both if t["sine"] <= t["lr"]]
        lines.append(f"Claim: at equal parameters, sine low-rank MLPs beat low-rank MLPs. Here (seeds {seeds}, {dataset}; "
                     "means over seeds where there are several): "
                     f"sine > low-rank at k = {wins or 'none'}" + (f"; not at k = {losses}" if losses else "") + ". "
                     + ("Holds at every rank we ran." if not losses else "Holds only partly." if wins else "Does not hold."))
        if max(len(g) for g in list(lowrank.values()) + list(sine.values())) < 2:
            lines.append("One seed per model: the seed-to-seed spread was not measured, so small gaps may not be significant.")
        if c.reduced:
            lines.append("This is a reduced setting (see 'Reduced against the paper' above): it tests the claim at this "
                         "small training budget only, not for fully trained models.")
    else:
        lines.append("Not enough runs yet to compare (needs low-rank and sine at the same rank).")
    (outdir / "summary.md").write_text("\n".join(lines) + "\n")
    _plot(outdir, table, dataset)


def _plot(outdir: Path, table: List[Dict[str, Any]], dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    table = [t for t in table if t["params"] is not None]
    pts = [t for t in table if t["k"] != "full"]
    for key, label, marker in (("lr", "low-rank", "o"), ("sine", "sine low-rank", "s")):
        xs = [t["params"] / 1e6 for t in pts if not math.isnan(t[key])]
        ys = [t[key] for t in pts if not math.isnan(t[key])]
        if xs:
            ax.plot(xs, ys, marker=marker, label=label)
            for t in pts:
                if not math.isnan(t[key]):
                    ax.annotate(f"k={t['k']}", (t["params"] / 1e6, t[key]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
    for t in table:
        if t["k"] == "full":
            ax.scatter([t["params"] / 1e6], [t["lr"]], marker="*", s=120, color="k", label="full (dense MLPs)")
    ax.set_xlabel("parameters (millions, whole model)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"ViT: accuracy vs parameters ({dataset})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(outdir / "accuracy_vs_params.png", dpi=110)
    plt.close(fig)
