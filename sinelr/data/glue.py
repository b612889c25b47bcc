"""GLUE readers (the TSV layout of the standard GLUE distribution), official metrics per task, and a
dynamic-padding collate for tokenized examples.

Files are read with the `csv` module, tab-delimited, `QUOTE_NONE` (sentences contain bare `"`), encoding
`utf-8-sig` (MRPC starts with a BOM). Every row must have the header's number of columns and a label of
the task's kind; anything else raises `GlueFormatError` naming the file and the line.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from . import DataNotFoundError, resolve_data_dir
from ..errors import ConfigError

__all__ = [
    "GlueTask",
    "GlueExample",
    "GlueFormatError",
    "TASKS",
    "get_task",
    "read_split",
    "read_mrpc_canonical_train",
    "glue_metrics",
    "tokenize_examples",
    "collate",
    "fixed_subset",
    "SCHEDULE_KEYS",
    "read_schedule",
    "task_schedule",
    "TaskData",
    "load_task_data",
    "evaluate",
    "dev_rows",
    "constant_baseline",
    "RESULT_COLUMNS",
    "RESULT_KEY",
]


class GlueFormatError(ValueError):
    """A malformed row in a GLUE file; the message names the file and the line."""


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is laid out on disk and scored.

    `text_columns`/`label_column` are header names, or 0-based indices for header-less files (CoLA).
    `labels` lists the label strings of a classification task (their index is the class id);
    None means a regression task (float labels, num_labels=1).
    """

    name: str
    folder: str
    has_header: bool
    text_columns: Tuple[Union[str, int], ...]
    label_column: Union[str, int]
    labels: Optional[Tuple[str, ...]]
    metrics: Tuple[str, ...]  # first one is the task's headline metric (as in the paper's tables)
    dev_file: str = "dev.tsv"
    n_columns: Optional[int] = None  # for header-less files

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def metric_name(self) -> str:
        return self.metrics[0]


TASKS: Dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", False, (3,), 1, ("0", "1"), ("mcc", "accuracy"), n_columns=4),
    GlueTask("sst2", "SST-2", True, ("sentence",), "label", ("0", "1"), ("accuracy",)),
    GlueTask("mrpc", "MRPC", True, ("#1 String", "#2 String"), "Quality", ("0", "1"), ("accuracy", "f1")),
    GlueTask("stsb", "STS-B", True, ("sentence1", "sentence2"), "score", None, ("pearson", "spearman")),
    GlueTask("qqp", "QQP", True, ("question1", "question2"), "is_duplicate", ("0", "1"), ("accuracy", "f1")),
    GlueTask("mnli", "MNLI", True, ("sentence1", "sentence2"), "gold_label",
             ("contradiction", "entailment", "neutral"), ("accuracy",), dev_file="dev_matched.tsv"),
    GlueTask("qnli", "QNLI", True, ("question", "sentence"), "label", ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("rte", "RTE", True, ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("accuracy",)),
    GlueTask("wnli", "WNLI", True, ("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",)),
]}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli"}


def get_task(name: str) -> GlueTask:
    """The task spec for a name such as 'rte', 'RTE', 'STS-B' or 'stsb'."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise ConfigError(f"unknown GLUE task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[key]


@dataclass(frozen=True)
class GlueExample:
    text_a: str
    text_b: Optional[str]
    label: Union[int, float]


def _parse_label(task: GlueTask, raw: str, path: Path, line: int) -> Union[int, float]:
    raw = raw.strip()
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            raise GlueFormatError(f"{path}:{line}: label {raw!r} is not a number (task {task.name} needs a float score)") from None
        if value != value:  # NaN
            raise GlueFormatError(f"{path}:{line}: label {raw!r} is not a number (task {task.name})")
        return value
    assert task.labels is not None
    if raw in task.labels:
        return task.labels.index(raw)
    kind = "numeric " if all(l.isdigit() for l in task.labels) else ""
    raise GlueFormatError(
        f"{path}:{line}: label {raw!r} is not a valid {kind}label of task {task.name} (expected one of {list(task.labels)})"
    )


def _read_rows(task: GlueTask, path: Path) -> List[GlueExample]:
    if not path.is_file():
        raise DataNotFoundError(f"GLUE {task.name} split file not found: {path}")
    examples: List[GlueExample] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.has_header:
            try:
                header = next(reader)
            except StopIteration:
                raise GlueFormatError(f"{path}:1: file is empty, expected a header line") from None
            missing = [c for c in (*task.text_columns, task.label_column) if c not in header]
            if missing:
                raise GlueFormatError(f"{path}:1: header {header} lacks the column(s) {missing} of task {task.name}")
            n_cols = len(header)
            # the label is the *last* column of that name (MNLI dev has label1..label5 then gold_label)
            text_idx = [header.index(c) for c in task.text_columns]
            label_idx = len(header) - 1 - header[::-1].index(task.label_column)
        else:
            n_cols = task.n_columns
            text_idx = list(task.text_columns)  # type: ignore[arg-type]
            label_idx = task.label_column  # type: ignore[assignment]
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line (e.g. a trailing newline)
            if len(row) != n_cols:
                raise GlueFormatError(f"{path}:{line}: expected {n_cols} tab-separated columns, got {len(row)}")
            label = _parse_label(task, row[label_idx], path, line)
            texts = [row[i] for i in text_idx]
            examples.append(GlueExample(texts[0], texts[1] if len(texts) > 1 else None, label))
    if not examples:
        raise GlueFormatError(f"{path}: no examples found")
    return examples


def read_split(task: Union[str, GlueTask], split: str, data_dir: Optional[os.PathLike] = None) -> List[GlueExample]:
    """Examples of `split` ('train' or 'dev'; MNLI's dev is dev_matched.tsv) of one GLUE task.

    `data_dir` is the GLUE folder (holding CoLA/, RTE/, ...) or its parent; default ../shared/data/glue.
    """
    spec = task if isinstance(task, GlueTask) else get_task(task)
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    root = resolve_data_dir(data_dir, "glue", "the GLUE task folders (CoLA/, SST-2/, MRPC/, STS-B/, RTE/, ...)")
    folder = root / spec.folder
    if not folder.is_dir():
        raise DataNotFoundError(f"GLUE task folder for {spec.name} not found: {folder}")
    return _read_rows(spec, folder / ("train.tsv" if split == "train" else spec.dev_file))


def read_mrpc_canonical_train(data_dir: Optional[os.PathLike] = None) -> List[GlueExample]:
    """MRPC's official 3668-pair train split rebuilt from msr_paraphrase_train.txt minus dev_ids.tsv.

    (The shared train.tsv lacks one pair; see the data README.)
    """
    spec = TASKS["mrpc"]
    root = resolve_data_dir(data_dir, "glue", "the GLUE task folders")
    folder = root / spec.folder
    ids_path = folder / "dev_ids.tsv"
    if not ids_path.is_file():
        raise DataNotFoundError(f"MRPC dev id list not found: {ids_path}")
    dev_ids = set()
    with ids_path.open(encoding="utf-8-sig", newline="") as fh:
        for i, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise GlueFormatError(f"{ids_path}:{i}: expected 2 tab-separated ids, got {len(row)} columns")
            dev_ids.add((row[0].strip(), row[1].strip()))
    path = folder / "msr_paraphrase_train.txt"
    if not path.is_file():
        raise DataNotFoundError(f"MRPC source file not found: {path}")
    out: List[GlueExample] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise GlueFormatError(f"{path}:{line}: expected {len(header)} tab-separated columns, got {len(row)}")
            if (row[1].strip(), row[2].strip()) in dev_ids:
                continue
            out.append(GlueExample(row[3], row[4], _parse_label(spec, row[0], path, line)))
    return out


def glue_metrics(task: Union[str, GlueTask], predictions: Sequence, labels: Sequence) -> Dict[str, float]:
    """The official metrics of `task` (headline metric first), in percent like the paper's tables.

    Classification: `predictions` are class ids. STS-B: predicted scores.
    """
    from .. import metrics as M

    spec = task if isinstance(task, GlueTask) else get_task(task)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    fns = {"mcc": M.matthews_corrcoef, "accuracy": M.accuracy, "f1": M.f1_binary,
           "pearson": M.pearson, "spearman": M.spearman}
    return {name: 100.0 * float(fns[name](predictions, labels)) for name in spec.metrics}


def tokenize_examples(tokenizer, examples: Sequence[GlueExample], max_seq_len: int) -> List[Dict[str, List[int]]]:
    """Tokenize (pairs are joined the model's way) and truncate to `max_seq_len`; no padding here."""
    if max_seq_len < 8:
        raise ConfigError(f"max_seq_len must be >= 8, got {max_seq_len}")
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    enc = tokenizer(a, b, truncation=True, max_length=max_seq_len)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{k: list(enc[k][i]) for k in keys} for i in range(len(examples))]


def collate(features: Sequence[Dict[str, List[int]]], pad_token_id: int, labels: Optional[Sequence] = None,
            regression: bool = False) -> Dict[str, "torch.Tensor"]:
    """Pad a batch to its own longest sequence (dynamic padding); adds `labels` when given."""
    import torch

    if not features:
        raise ValueError("collate needs at least one example")
    longest = max(len(f["input_ids"]) for f in features)
    pad_value = {"input_ids": pad_token_id, "token_type_ids": 0, "attention_mask": 0}
    batch = {}
    for key in features[0]:
        rows = [f[key] + [pad_value.get(key, 0)] * (longest - len(f[key])) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    if "attention_mask" not in batch:
        batch["attention_mask"] = torch.tensor(
            [[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in features], dtype=torch.long)
    if labels is not None:
        batch["labels"] = torch.tensor(list(labels), dtype=torch.float32 if regression else torch.long)
    return batch


# ------------------------------------------------------------------ fine-tuning inputs and results
# The row of one GLUE fine-tune in summary.csv (typed; older tables lack the last five columns). `lr` is the
# adapter's peak learning rate of the row: a per-method choice, so it lives in the row, not in the folder's
# settings (a folder may hold methods at their own tuned rates).
RESULT_COLUMNS = {"model": str, "task": str, "method": str, "rank": int, "omega": float, "seed": int,
                  "trainable_params": int, "metric_name": str, "metric": float, "train_seconds": float,
                  "metric2_name": str, "metric2": float, "steps": int, "final_loss": float, "lr": float}
RESULT_KEY = ["model", "task", "method", "rank", "omega", "seed"]

# Per-task schedule values: training rows (0 = all), epochs, truncation length, dev rows (0 = all);
# optionally the task's learning rate (`lr`, used where no per-method rate is given).
SCHEDULE_KEYS = ("max_train", "epochs", "max_seq_len", "dev_max")
OPTIONAL_SCHEDULE_KEYS = ("lr",)


def fixed_subset(rows: Sequence, n: int, seed: int) -> list:
    """`n` rows drawn without replacement by random.Random(seed), in file order (all rows when n is 0 or >= len)."""
    import random

    if not n or n >= len(rows):
        return list(rows)
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]


def read_schedule(path: os.PathLike) -> Dict[str, Dict[str, float]]:
    """A schedule file: a YAML mapping task -> {max_train, epochs, max_seq_len, dev_max} (every key given,
    plus an optional lr: one number, or a mapping method -> lr)."""
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not data:
        raise ValueError(f"schedule file {path} must map GLUE tasks to their values, got {data!r}")
    out = {}
    for task, values in data.items():
        name = get_task(task).name
        if (not isinstance(values, dict) or not set(SCHEDULE_KEYS) <= set(values)
                or not set(values) <= set(SCHEDULE_KEYS) | set(OPTIONAL_SCHEDULE_KEYS)):
            raise ValueError(f"schedule file {path}: task {task!r} must set exactly {list(SCHEDULE_KEYS)} "
                             f"(and optionally {list(OPTIONAL_SCHEDULE_KEYS)}), got {values!r}")
        out[name] = dict(values)
    return out


def task_schedule(schedules: Dict[str, Dict[str, float]], task: str, **overrides: Optional[float]) -> Dict[str, float]:
    """One task's schedule, with the overrides that are not None; checks the values."""
    name = get_task(task).name
    if name not in schedules:
        raise ValueError(f"the schedule has no values for task {name!r} (it covers {sorted(schedules)})")
    sched = dict(schedules[name])
    sched.update({k: v for k, v in overrides.items() if v is not None})
    if not sched["epochs"] > 0:
        raise ValueError(f"epochs must be > 0, got {sched['epochs']}")
    for key in ("max_train", "dev_max"):
        if sched[key] < 0:
            raise ValueError(f"{key} must be >= 0 (0 = all rows), got {sched[key]}")
    if sched["max_seq_len"] < 8:
        raise ValueError(f"max_seq_len must be >= 8, got {sched['max_seq_len']}")
    if "lr" in sched:
        # one number for every method, or a {method: lr} mapping (per-method rates tuned for this task)
        values = sched["lr"].values() if isinstance(sched["lr"], dict) and sched["lr"] else [sched["lr"]]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0
               for v in values):
            raise ValueError(f"lr of task {name!r} must be a finite number > 0 or a non-empty mapping of methods to "
                             f"such numbers, got {sched['lr']!r}")
    return sched


# The subsets are fixed: the same rows for every method and seed (and for the dev-set baseline).
_TRAIN_SUBSET_SEED, _DEV_SUBSET_SEED, _VAL_SPLIT_SEED = 1234, 4321, 5678


@dataclass
class TaskData:
    """One task's tokenized training and dev rows under a schedule."""

    spec: GlueTask
    train: List[Dict[str, List[int]]]
    train_labels: List[Union[int, float]]
    dev: List[Dict[str, List[int]]]
    dev_labels: List[Union[int, float]]
    schedule: Dict[str, float]


def split_train(rows: Sequence[GlueExample], val_fraction: float) -> tuple:
    """(training rows, held-out validation rows): a fixed random `val_fraction` of a training file, the
    same draw for every method, seed and schedule (rows keep their file order)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(val_fraction * len(rows)))
    if val_fraction and not 0 < n_val < len(rows):
        raise ValueError(f"val_fraction {val_fraction:g} of {len(rows)} training rows leaves no validation or "
                         "no training rows")
    held = set(fixed_subset(range(len(rows)), n_val, _VAL_SPLIT_SEED)) if n_val else set()
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def dev_rows(spec: GlueTask, data_dir: Optional[os.PathLike], dev_max: int,
             val_fraction: float = 0.0) -> List[GlueExample]:
    """The rows a fine-tune is evaluated on (a fixed subset when dev_max > 0): the dev split, or with
    val_fraction > 0 the validation rows held out of the training split (for tuning; the dev split,
    our test set, is then never read)."""
    if val_fraction:
        rows = split_train(read_split(spec, "train", data_dir), val_fraction)[1]
    else:
        rows = read_split(spec, "dev", data_dir)
    return fixed_subset(rows, int(dev_max), _DEV_SUBSET_SEED)


def load_task_data(task: Union[str, GlueTask], tokenizer, data_dir: Optional[os.PathLike],
                   schedule: Dict[str, float], val_fraction: float = 0.0) -> TaskData:
    """Read, subset (fixed subsets) and tokenize one task's training and evaluation rows (dev, or the
    held-out validation rows when val_fraction > 0; training then uses the rest)."""
    spec = task if isinstance(task, GlueTask) else get_task(task)
    pool = split_train(read_split(spec, "train", data_dir), val_fraction)[0]
    train = fixed_subset(pool, int(schedule["max_train"]), _TRAIN_SUBSET_SEED)
    dev = dev_rows(spec, data_dir, schedule["dev_max"], val_fraction)
    n = int(schedule["max_seq_len"])
    return TaskData(spec, tokenize_examples(tokenizer, train, n), [e.label for e in train],
                    tokenize_examples(tokenizer, dev, n), [e.label for e in dev], dict(schedule))


def evaluate(model, data: TaskData, pad_id: int, batch_size: int, device) -> Dict[str, float]:
    """Headline and secondary metrics of `model` (a classifier returning `.logits`) on `data`'s dev rows, in
    batches of rows sorted by length; the model is left in train mode."""
    import torch

    model.eval()
    order = sorted(range(len(data.dev)), key=lambda i: len(data.dev[i]["input_ids"]))
    preds: List = [None] * len(order)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = {k: v.to(device) for k, v in collate([data.dev[i] for i in idx], pad_id).items()}
            logits = model(**batch).logits.float()
            for i, p in zip(idx, (logits[:, 0] if data.spec.is_regression else logits.argmax(-1)).tolist()):
                preds[i] = p
    model.train()
    return glue_metrics(data.spec, preds, data.dev_labels)


def constant_baseline(task: Union[str, GlueTask], labels: Sequence) -> float:
    """The headline metric of the best constant prediction on `labels`: the majority class of a
    classification task (MCC 0 for CoLA), and chance (Pearson 0) for STS-B's regression."""
    spec = task if isinstance(task, GlueTask) else get_task(task)
    if not labels:
        raise ValueError(f"constant_baseline of {spec.name} needs at least one label")
    if spec.is_regression:
        return 0.0
    majority = max(sorted(set(labels)), key=list(labels).count)
    return glue_metrics(spec, [majority] * len(labels), labels)[spec.metric_name]


def length_buckets(perm: Sequence[int], lengths: Sequence[int], batch_size: int, seed: int) -> List[List[int]]:
    """One epoch's batches (lists of row indices) grouped by length, from the epoch's permutation `perm`.

    `perm` is cut into pools of 50 batches; each pool is sorted by length and cut into batches, and the
    order of all batches is shuffled with random.Random(seed). A batch then holds rows of similar length
    (less padding: the usual length-grouped sampler) while every row is still seen once per epoch; a
    last partial batch is dropped (as the unbucketed order does)."""
    import random

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    used = (len(perm) // batch_size) * batch_size
    pool = 50 * batch_size
    batches: List[List[int]] = []
    for start in range(0, used, pool):
        chunk = sorted(perm[start:min(start + pool, used)], key=lambda i: lengths[i])
        batches += [list(chunk[j:j + batch_size]) for j in range(0, len(chunk), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches
