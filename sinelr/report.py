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
from dataclasses import dataclass, replace
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
    "provenance_lines",
    "PAPER_NERF_BD_RATE",
    "PAPER_NERF_BD_PSNR",
    "RD_COLUMNS",
    "RDCurve",
    "read_rd_rows",
    "rd_omega",
    "rd_curves",
    "rd_bd_figures",
    "rd_bd_lines",
    "rd_plot",
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
    """'GPU: <name>' when CUDA is in use, else 'CPU: <model>, <kernel ISA>, N torch threads'.

    The ISA is the instruction set torch's CPU kernels dispatch to (AVX2, AVX512, ...): fp32 training is
    bit-reproducible on the same ISA, and it drifts apart (rounding, then seed-noise size) across ISAs."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
        try:
            isa = f"{torch.backends.cpu.get_cpu_capability()} kernels, "
        except (AttributeError, RuntimeError):  # pragma: no cover - torch older than 2.1
            isa = ""
        return f"CPU: {_cpu_model()}, {isa}{torch.get_num_threads()} torch threads"
    except Exception:  # pragma: no cover - torch is a hard dependency
        return f"CPU: {_cpu_model()}"


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h' or '2.1 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


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


REPORT_TEXT_FILE = "report_text.json"


def carry_report_text(config: Any, folder: os.PathLike, n_rows: int) -> Any:
    """`config` with the summary's hand-written text (`protocol` lines, `note`) carried across re-renders.

    A render whose command states them (a `--render-only` with `--protocol` / `--note`) stores them in
    `folder/report_text.json`; a render whose command states neither (a row landing during a sweep) takes the
    stored ones, so a table never loses its protocol lines between two re-renders. The note is a statement about
    the table when it was written: carried to a table with other rows, it says how many rows it was written for.
    A command that states any of them replaces all (`--note ""` beside `--protocol` states "no note"); deleting the
    file drops them.
    """
    fields = [f for f in ("protocol", "note") if hasattr(config, f)]
    path = Path(folder) / REPORT_TEXT_FILE
    if any(getattr(config, f) for f in fields):
        write_json(path, {**{f: getattr(config, f) for f in fields}, "rows": n_rows})
        return config
    if not path.is_file():
        return config
    try:
        stored = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); delete it (it only holds the summary's protocol "
                          "lines and note) or re-render with --protocol / --note") from None
    carried = {f: stored[f] for f in fields if stored.get(f)}
    if isinstance(carried.get("protocol"), str):
        carried["protocol"] = [carried["protocol"]]
    if carried.get("note") and stored.get("rows") != n_rows:
        carried["note"] += f" [note written for {stored.get('rows')} rows; the table has {n_rows} now]"
    return replace(config, **carried) if carried else config


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


def compute_line(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """The compute behind a folder's rows: how many runs and their training time summed (each row's
    train_seconds: the wall time of its training in its own process; evaluation and rendering not counted).
    No line when no row records a time."""
    times = [r["train_seconds"] for r in rows if r.get("train_seconds") is not None]
    if not times:
        return []
    missing = len(rows) - len(times)
    return [f"- compute: {len(rows)} runs, {sum(times) / 3600:.2f} h of training summed over them (each row's "
            "train_seconds, one process per run; with runs side by side the wall-clock time is shorter)"
            + (f"; {missing} rows record no time" if missing else "")]


# How a summary's header names the runner's config files (sinelr.sweep writes them).
CONFIG_FILES = "config.json (the last command's config; each command's own: provenance.json)"
__all__ += ["CONFIG_FILES"]


def provenance_lines(folder: os.PathLike, rows: Optional[Sequence[Mapping[str, Any]]] = None) -> List[str]:
    """Markdown bullets naming the commands (with git sha and date) that computed a folder's rows,
    read from its provenance.json (the runner's list of runs, or an older single-run file), the
    command that rendered this summary and, given the rows, their compute (`compute_line`)."""
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
    lines = [f"- rows computed by: `{r.get('command')}` ("
             + (f"{len(r['points'])} rows; " if isinstance(r.get("points"), list) else "")
             + f"git sha {r.get('git_sha')}, {r.get('date')}, {r.get('machine', 'machine not recorded')})" for r in runs]
    if not lines:
        lines = ["- rows computed by: not recorded"]
    lines.append(f"- summary rendered by: `{now['command']}` (git sha {now['git_sha']}, {now['date']})")
    return lines + (compute_line(rows) if rows is not None else [])

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


def seed_counts(series: Mapping[str, Mapping[float, Sequence[float]]]) -> Dict[tuple, str]:
    """{(series, x): 'n=K'} for the points of a mean +- std plot when they do not all rest on the same number of
    seeds (a point with one seed has no bar, which reads as no spread), else {}."""
    counts = {(name, x): len(v) for name, by_x in series.items() for x, v in by_x.items()}
    if len(set(counts.values())) <= 1:
        return {}
    return {k: f"n={n}" for k, n in counts.items()}


def plot_mean_std(path: os.PathLike, series: Mapping[str, Mapping[float, Sequence[float]]], xlabel: str,
                  ylabel: str, title: str, logx: bool = False,
                  hlines: Optional[Mapping[str, Sequence[float]]] = None,
                  band_of: Optional[Mapping[str, str]] = None) -> Path:
    """A PNG of mean +- std (over seeds) per x for each named series, with optional horizontal
    reference bands (mean +- std of a baseline's values; gray, or the colour of the series `band_of` names for
    that band); each point is labelled with its number of seeds when they differ (`seed_counts`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    xs_all: List[float] = []
    counts = seed_counts(series)
    colours: Dict[str, Any] = {}
    for name, by_x in series.items():
        xs = sorted(by_x)
        xs_all += xs
        stats = [mean_std(by_x[x]) for x in xs]
        drawn = ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=name)
        colours[name] = drawn[0].get_color()
        for x, (m, _) in zip(xs, stats):
            if (name, x) in counts:
                ax.annotate(counts[name, x], (x, m), textcoords="offset points", xytext=(5, 4), ha="left", fontsize=7)
    for name, values in (hlines or {}).items():
        m, s = mean_std(values)
        colour = colours.get((band_of or {}).get(name), "gray")
        ax.axhline(m, color=colour, ls="--", label=name)
        ax.axhspan(m - s, m + s, color=colour, alpha=0.15)
    if counts:
        ax.margins(x=0.08, y=0.12)  # room for the labels
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


def plot_paired(path: os.PathLike, comparisons: Sequence[tuple], xlabel: str, title: str) -> Path:
    """A PNG of paired differences, one line each (top to bottom): the mean, its 95% t-interval (when 2 or more
    seeds are paired) and every seed's difference as a dot, against a line at 0. `comparisons` holds
    (label, PairedComparison, emphasised) triples; an emphasised line (a verdict) is drawn black, the others
    gray. The label gets the number of paired seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.32 * len(comparisons)), dpi=120)
    labels = []
    for y, (label, comp, strong) in enumerate(comparisons):
        colour = "black" if strong else "gray"
        labels.append(f"{label} (n={comp.n})")
        if comp.n == 0:
            continue
        if comp.n >= 2:
            ax.plot([comp.low, comp.high], [y, y], color=colour, lw=2.2 if strong else 1.4)
        ax.plot([comp.mean], [y], marker="D" if strong else "o", color=colour, ms=6 if strong else 4.5)
        ax.plot(list(comp.diffs), [y + 0.22] * comp.n, ls="none", marker=".", color=colour, ms=3, alpha=0.7)
    ax.axvline(0.0, color="tab:red", lw=1, ls="--")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylim(len(labels) - 0.5, -0.7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ += ["plot_paired"]


# ---------------------------------------------------------------------------------------------------
# Rate-distortion curves of NeRF-style sweeps (rate = parameters, quality = PSNR) and their BD figures,
# shared by `sinelr nerf` (its summary) and `sinelr bdrate` (any finished sweep).

# Paper Fig. 5 / Sec. 4.3: sine low-rank vs low-rank NeRF on LLFF, rate = parameters, Akima.
PAPER_NERF_BD_RATE, PAPER_NERF_BD_PSNR = -64.72, 2.72
# The columns an RD sweep's summary.csv must hold (rank 0 = full model, omega 0 = not a sine run).
RD_COLUMNS: Dict[str, Any] = {"scene": str, "method": str, "rank": int, "omega": float, "seed": int,
                              "params": int, "psnr": float}


@dataclass
class RDCurve:
    """One method's points in order of rate: the mean and sd of PSNR over seeds at each rank."""

    ranks: List[int]
    rates: List[float]
    means: List[float]
    sds: List[float]
    seeds: List[int]


def read_rd_rows(path: os.PathLike) -> List[Dict[str, Any]]:
    """Typed RD rows of a results folder's summary.csv (or of the file itself); other columns are ignored."""
    p = Path(path)
    csv_path = p / "summary.csv" if p.is_dir() else p
    if not csv_path.is_file():
        raise FileNotFoundError(f"no summary.csv at {csv_path} (run `sinelr nerf` first or pass its results folder)")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in RD_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} lacks the columns {missing}; is it a `sinelr nerf` summary?")
        raw = list(reader)
    out = []
    for i, r in enumerate(raw):
        try:
            out.append({c: _coerce_cell(c, t, r[c]) for c, t in RD_COLUMNS.items()})
        except (TypeError, ValueError, KeyError):
            raise ValueError(f"{csv_path} line {i + 2}: a value does not fit the columns {list(RD_COLUMNS)}: {r}") from None
    return out


def rd_omega(rows: Sequence[Mapping[str, Any]], omega: Optional[float]) -> Optional[float]:
    """The sine omega of the curves: `omega` when given, else the only one in the rows (several: an error)."""
    omegas = sorted({float(r["omega"]) for r in rows if r["method"] == "sine"})
    if omega is not None:
        return float(omega)
    if len(omegas) > 1:
        raise ValueError(f"the results hold sine runs at several omegas {omegas}; name one (--omega)")
    return omegas[0] if omegas else None


def _rd_points(rows: Sequence[Mapping[str, Any]], method: str, omega: Optional[float]) -> Dict[int, Dict[int, Mapping]]:
    """{rank: {seed: row}} of one method (sine rows only at `omega`)."""
    out: Dict[int, Dict[int, Mapping]] = {}
    for r in rows:
        if r["method"] == method and (method != "sine" or r["omega"] == omega):
            out.setdefault(int(r["rank"]), {})[int(r["seed"])] = r
    return out


def rd_curves(rows: Sequence[Mapping[str, Any]], omega: Optional[float]) -> Dict[str, Dict[str, RDCurve]]:
    """{scene (and 'mean' for several scenes): {'lowrank'|'sine'|'full': RDCurve}} from typed rows.

    Per scene, each rank's PSNR is averaged over its seeds. The mean curve keeps the ranks and seeds
    every scene has; per seed it averages PSNR over the scenes, then takes mean and sd over seeds.
    """
    scenes = sorted({r["scene"] for r in rows})
    out: Dict[str, Dict[str, RDCurve]] = {}
    for name in scenes + (["mean"] if len(scenes) > 1 else []):
        groups = [[r for r in rows if r["scene"] == s] for s in (scenes if name == "mean" else [name])]
        out[name] = {}
        for method in ("lowrank", "sine", "full"):
            per_scene = [_rd_points(g, method, omega) for g in groups]
            ranks = sorted(set.intersection(*[set(p) for p in per_scene]))
            curve = RDCurve([], [], [], [], [])
            for k in ranks:
                seeds = sorted(set.intersection(*[set(p[k]) for p in per_scene]))
                vals = [sum(float(p[k][s]["psnr"]) for p in per_scene) / len(per_scene) for s in seeds]
                m, sd = mean_std(vals)
                curve.ranks.append(k)
                curve.rates.append(float(per_scene[0][k][seeds[0]]["params"]))
                curve.means.append(m)
                curve.sds.append(sd)
                curve.seeds = sorted(set(curve.seeds) | set(seeds))
            out[name][method] = curve
    return out


def rd_bd_figures(curves: Mapping[str, Mapping[str, RDCurve]]) -> Dict[str, Any]:
    """{curve name: sinelr.metrics.BDFigures} of sine against the low-rank anchor, on the mean curves."""
    from .metrics import bd_figures

    return {name: bd_figures(c["lowrank"].rates, c["lowrank"].means, c["sine"].rates, c["sine"].means)
            for name, c in curves.items()}


def _pct(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:+.2f}%" if abs(v) < 1e4 else f"{v:+.3g}%"


def rd_bd_lines(curves: Mapping[str, Mapping[str, RDCurve]], bd: Mapping[str, Any]) -> List[str]:
    """A markdown table of BD figures (paper row first) with a warning beside every unreliable figure."""
    head = ["| curve | BD-rate (Akima) | BD-rate (PCHIP) | BD-PSNR (Akima) | BD-PSNR (PCHIP) | warning |",
            "|---|---|---|---|---|---|",
            f"| paper (LLFF mean, k = 1..60, Akima) | {PAPER_NERF_BD_RATE:+.2f}% | | {PAPER_NERF_BD_PSNR:+.2f} dB | | |"]
    for name, b in bd.items():
        ranks = sorted(set(curves[name]["lowrank"].ranks) & set(curves[name]["sine"].ranks))
        label = f"ours: {name} (k = {', '.join(map(str, ranks)) or 'none'})"
        if b.error:
            head.append(f"| {label} | n/a | n/a | n/a | n/a | not computable: {b.error} |")
            continue
        warn = "; ".join(f"UNRELIABLE, {w}" for w in b.warnings)
        head.append(f"| {label} | {_pct(b.rate_akima)} | {_pct(b.rate_pchip)} | {b.psnr_akima:+.2f} dB | "
                    f"{b.psnr_pchip:+.2f} dB | {warn} |")
    return head + ["", "Low-rank is the anchor: a negative BD-rate means sine needs fewer parameters for the same PSNR. "
                   "A figure is flagged UNRELIABLE when Akima (the paper's interpolation, not shape-preserving) and PCHIP "
                   "(shape-preserving) disagree in sign or differ by more than a few points (metrics.BD_RATE_TOLERANCE, "
                   "BD_PSNR_TOLERANCE): the curve is then too flat or too short for a BD figure to mean anything."]


def rd_plot(curves: Mapping[str, Mapping[str, RDCurve]], bd: Mapping[str, Any], path: os.PathLike, title: str) -> None:
    """PSNR vs parameters (log x) per curve, mean ± sd over seeds as error bars, BD figures in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[name]
        for method, fmt, label in (("lowrank", "o-", "low-rank"), ("sine", "s-", "sine low-rank")):
            cur = c[method]
            if cur.rates:
                ax.errorbar(cur.rates, cur.means, yerr=cur.sds, fmt=fmt, capsize=3,
                            label=f"{label} ({len(cur.seeds)} seed{'s' if len(cur.seeds) != 1 else ''})")
                for x, y, k in zip(cur.rates, cur.means, cur.ranks):
                    ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7)
        if c["full"].means:
            ax.axhline(c["full"].means[0], color="gray", ls="--", lw=1, label="full rank")
        b = bd.get(name)
        text = "BD: n/a" if b is None or b.error else (
            f"BD-rate {_pct(b.rate_akima)} (Akima) / {_pct(b.rate_pchip)} (PCHIP)\n"
            f"BD-PSNR {b.psnr_akima:+.2f} / {b.psnr_pchip:+.2f} dB" + ("\nUNRELIABLE: interpolations disagree"
                                                                       if b.warnings else ""))
        ax.set_title(f"{name}\n{text}", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("parameters (all NeRF MLPs)")
        ax.set_ylabel("test PSNR (dB), mean ± sd over seeds")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
