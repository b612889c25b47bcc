"""Results: CSV summaries that sweeps update row by row, markdown tables, provenance (command, git sha, machine).

Every table under results/ is written by these functions from the rows a recipe measured; none is
edited by hand.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .errors import ConfigError
from .stats import PairedComparison, mean_std, paired_comparison

__all__ = [
    "git_sha",
    "machine_description",
    "provenance",
    "ResultsTable",
    "markdown_table",
    "write_json",
    "write_run_header",
    "mean_std",
    "paired_comparison",
    "PairedComparison",
    "ResultsConflictError",
    "verdict_lines",
]


def git_sha(path: Optional[os.PathLike] = None) -> str:
    """The commit of the sinelr checkout (with '+dirty' when it has uncommitted changes), or 'unknown'."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """'GPU: <name>' when CUDA is in use, else 'CPU: <model>, N threads'."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
        return f"CPU: {_cpu_model()}, {torch.get_num_threads()} torch threads"
    except Exception:  # pragma: no cover - torch is a hard dependency
        return f"CPU: {_cpu_model()}"


def provenance(command: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """What made a result: command line, git sha, versions, machine and time."""
    import torch

    if command is not None:
        argv = list(command)
    else:  # `python -m sinelr.cli nerf ...` and the `sinelr` script both read as `sinelr nerf ...`
        prog = Path(sys.argv[0]).name
        argv = (["sinelr"] if prog in ("cli.py", "__main__.py", "sinelr") else [prog]) + sys.argv[1:]
    return {
        "command": " ".join(shlex.quote(a) for a in argv),
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": machine_description(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_json(path: os.PathLike, data: Any) -> None:
    """Write JSON atomically (a temp file renamed over the target)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_run_header(outdir: os.PathLike, config: Mapping[str, Any], extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Write config.yaml-equivalent JSON and provenance.json (command, sha, machine) into `outdir`."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    write_json(outdir / "config.json", dict(config))
    write_json(outdir / "provenance.json", {**prov, **(dict(extra) if extra else {})})
    return prov


def _fmt(value: Any, floatfmt: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return format(value, floatfmt)
    return "" if value is None else str(value)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], headers: Optional[Sequence[str]] = None,
                   floatfmt: str = ".2f") -> str:
    """A GitHub markdown table of `rows` restricted to `columns`."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), floatfmt) for c in columns) + " |")
    return "\n".join(lines)


class ResultsConflictError(ConfigError):
    """An output folder holds results computed under other settings than the current run's."""


def _coerce_cell(name: str, typ: Any, value: Any) -> Any:
    """A CSV cell (or a freshly measured value) as the column's type; '' and None mean 'not measured'."""
    if value is None or value == "":
        return None
    if typ is str:
        return str(value)
    if typ is float:
        return float(value)
    if typ is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"column {name!r} holds ints, got {value!r}")
        return int(float(value)) if isinstance(value, str) and "." in value else int(value)
    if typ == "int|str":  # e.g. rank: an int, or "full" for the dense model
        try:
            return int(value)
        except (TypeError, ValueError):
            return str(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        return {"true": True, "false": False}[str(value).lower()]
    raise ValueError(f"column {name!r} has an unknown type {typ!r}")


class ResultsTable:
    """A summary.csv that a sweep updates one row at a time (rows keyed by `key` columns), typed.

    `columns` is a mapping name -> type (int, float, str, bool or "int|str"); a plain list means all
    str. Rows read from disk and rows just added are coerced the same way (a just-added row passes
    through its CSV text), so consumers never re-parse. Re-adding a key replaces its row; writes are
    atomic (temp file + rename).
    """

    def __init__(self, path: os.PathLike, columns: Any, key: Sequence[str]):
        self.path = Path(path)
        if isinstance(columns, Mapping):
            self.types: Dict[str, Any] = dict(columns)
        else:
            self.types = {c: str for c in columns}
        self.columns = list(self.types)
        self.key = list(key)
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key columns {missing} are not among the columns {self.columns}")
        self.rows: List[Dict[str, Any]] = []
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                # An older file may lack columns added since (read as None); unknown columns are an error.
                if reader.fieldnames and not set(reader.fieldnames) <= set(self.columns):
                    raise ValueError(
                        f"{self.path} has columns {reader.fieldnames}, expected {self.columns}; "
                        "move it away or use another output directory"
                    )
                self.rows = [self._coerce(r, where=f"{self.path} line {i + 2}") for i, r in enumerate(reader)]

    def _coerce(self, row: Mapping[str, Any], where: str = "row") -> Dict[str, Any]:
        out = {}
        for c in self.columns:
            try:
                out[c] = _coerce_cell(c, self.types[c], row.get(c))
            except (TypeError, ValueError, KeyError):
                raise ValueError(f"{where}: column {c!r} expects {getattr(self.types[c], '__name__', self.types[c])}, "
                                 f"got {row.get(c)!r}") from None
        return out

    def _key_of(self, row: Mapping[str, Any]) -> tuple:
        return tuple(_coerce_cell(k, self.types[k], row.get(k)) for k in self.key)

    def has(self, **key: Any) -> bool:
        return self.get(**key) is not None

    def get(self, **key: Any) -> Optional[Dict[str, Any]]:
        want = self._key_of(key)
        return next((r for r in self.rows if self._key_of(r) == want), None)

    def select(self, **where: Any) -> List[Dict[str, Any]]:
        """Rows whose columns equal the given (coerced) values."""
        want = {k: _coerce_cell(k, self.types[k], v) for k, v in where.items()}
        return [r for r in self.rows if all(r.get(k) == v for k, v in want.items())]

    def add(self, row: Mapping[str, Any], save: bool = True) -> Dict[str, Any]:
        unknown = [c for c in row if c not in self.columns]
        if unknown:
            raise ValueError(f"row has columns {unknown} not in the table's columns {self.columns}")
        typed = self._coerce({c: _csv_value(row.get(c)) for c in self.columns})
        k = self._key_of(typed)
        self.rows = [r for r in self.rows if self._key_of(r) != k] + [typed]
        if save:
            self.save()
        return typed

    def save(self, path: Optional[os.PathLike] = None) -> None:
        path = Path(path) if path is not None else self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({c: _csv_value(r.get(c)) for c in self.columns})
        os.replace(tmp, path)


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(round(v, 6)) if math.isfinite(v) else str(v)
    return v


def verdict_lines(comparisons: Sequence[PairedComparison], label: str = "k", labels: Optional[Sequence[Any]] = None,
                  fmt: str = "+.2f") -> str:
    """A markdown table of paired comparisons: label, seeds, mean difference, 95% interval, verdict."""
    rows = []
    for i, c in enumerate(comparisons):
        rows.append({"label": "" if labels is None else str(labels[i]), "n": c.n,
                     "diff": c.interval_text(fmt), "verdict": c.verdict})
    head = [label, "paired seeds", f"{comparisons[0].b_name} - {comparisons[0].a_name}: mean [95% t-interval]"
            if comparisons else "difference", "verdict"]
    return markdown_table(rows, ["label", "n", "diff", "verdict"], head)


def provenance_lines(folder: os.PathLike) -> List[str]:
    """Markdown bullets naming the commands (with git sha and date) that computed a folder's rows,
    read from its provenance.json (the runner's list of runs, or an older single-run file), and the
    command that rendered this summary."""
    path = Path(folder) / "provenance.json"
    runs: List[Mapping[str, Any]] = []
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
        runs = data.get("runs") if isinstance(data.get("runs"), list) else ([data] if data.get("command") else [])
    elif (Path(folder) / "runs.jsonl").is_file():  # the ViT recipe's older per-run log
        seen: Dict[str, Mapping[str, Any]] = {}
        for line in (Path(folder) / "runs.jsonl").read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                seen.setdefault(f"{rec.get('command')} {rec.get('git_sha')}", rec)
        runs = list(seen.values())
    now = provenance()
    lines = [f"- rows computed by: `{r.get('command')}` (git sha {r.get('git_sha')}, {r.get('date')}, "
             f"{r.get('machine', 'machine not recorded')})" for r in runs]
    if not lines:
        lines = ["- rows computed by: not recorded"]
    lines.append(f"- summary rendered by: `{now['command']}` (git sha {now['git_sha']}, {now['date']})")
    return lines

# ------------------------------------------------------------------------------------------------
# Generic helpers of recipe summaries (added for the GLUE recipe; any recipe may use them).

__all__ += ["seeds_text", "plot_mean_std"]

def seeds_text(rows: Sequence[Mapping[str, Any]], by: str = "rank") -> str:
    """The seeds of `rows`: '[0, 1, 2]', or per value of `by` when those differ ('k=4: [0, 1]; k=8: [0]')."""
    groups: Dict[Any, set] = {}
    for r in rows:
        groups.setdefault(r[by], set()).add(int(r["seed"]))
    every = sorted(set().union(*groups.values())) if groups else []
    if len({frozenset(v) for v in groups.values()}) <= 1:
        return str(every)
    name = "k" if by == "rank" else by
    return "; ".join(f"{name}={g}: {sorted(v)}" for g, v in sorted(groups.items(), key=lambda kv: str(kv[0])))


def plot_mean_std(path: os.PathLike, series: Mapping[str, Mapping[float, Sequence[float]]], xlabel: str,
                  ylabel: str, title: str, logx: bool = False,
                  hlines: Optional[Mapping[str, Sequence[float]]] = None) -> Path:
    """A PNG of mean +- std (over seeds) per x for each named series, with optional horizontal
    reference bands (mean +- std of a baseline's values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    xs_all: List[float] = []
    for name, by_x in series.items():
        xs = sorted(by_x)
        xs_all += xs
        stats = [mean_std(by_x[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=name)
    for name, values in (hlines or {}).items():
        m, s = mean_std(values)
        ax.axhline(m, color="gray", ls="--", label=name)
        ax.axhspan(m - s, m + s, color="gray", alpha=0.15)
    if logx:
        ax.set_xscale("log")
        ticks = sorted(set(xs_all))
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
