"""The one sweep runner of every recipe: grid points in, typed records out, resumable and atomic.

A recipe gives the points of its grid and `run_one(point, run_folder) -> record`; the runner

- refuses to mix results: an output folder remembers the settings its rows were computed under
  (the whole config minus the grid axes and the keys declared as not changing any number); a run with
  other settings stops before writing anything and names the keys that differ;
- skips points whose key (always including the seed) is already in `summary.csv`;
- keeps a setting chosen per point (a row setting: the learning rate of each method) in the rows rather than
  in the folder's settings: rows at other values share the folder (a method tuned later joins a table at its
  own rate), and a point whose existing row recorded another value is refused, naming both;
- gives every point its own run folder `<run_dir>/<slug>-<fingerprint>/` (config.json, metrics.json,
  checkpoint/), where the fingerprint covers every training key, so a changed key trains anew and an
  interrupted point resumes from its checkpoint;
- publishes each record with the summary, figures and metadata re-rendered from all rows in a staging
  copy of the output folder that replaces the folder in one step: interrupted (Ctrl-C) or failing at
  any moment, the folder's files always describe the same set of rows; provenance.json lists every
  command that added rows (git sha, date, machine, its points and its own config; config.json is the
  last command's config, settings.json what every row shares);
- lets the same command run in several processes at once (one per core): each point is claimed by the
  process that runs it and each row is added under a lock to the rows already on disk.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from .errors import ConfigError
from .report import ResultsConflictError, ResultsTable, format_duration, provenance, write_json

__all__ = ["SweepSpec", "Sweep", "fingerprint_of", "training_config", "publish_folder", "recover_folder",
           "ResultsConflictError", "PointNotFinished"]


class PointNotFinished(Exception):
    """Raised by a recipe's run_one when a point stopped early on purpose (its checkpoint is kept):
    the sweep records nothing for it and stops; a rerun resumes it."""

Point = Dict[str, Any]
Record = Dict[str, Any]


def fingerprint_of(values: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able mapping (key order does not matter)."""
    text = json.dumps(_plain(values), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def training_config(config: Mapping[str, Any], exclude: Iterable[str]) -> Dict[str, Any]:
    """The config without the excluded keys (as plain JSON values)."""
    ex = set(exclude)
    return {k: _plain(v) for k, v in config.items() if k not in ex}


@dataclass
class SweepSpec:
    """What a recipe declares once.

    columns: summary.csv schema (name -> type); key: the columns that identify a row (must hold 'seed');
    grid_keys: config keys that only choose which points run (their values are in the row key);
    not_in_results: config keys that change no number (output/run folders, device, progress, ...);
    not_in_training: further keys that change the reported numbers but not the trained weights
    (evaluation settings): a point's checkpoint is reused across them, its row is not.
    added_keys: keys added to the config after folders were written, each with the value that reproduces
    the behaviour from before it existed: at that value the key is left out of the settings and of the
    run-folder fingerprints, so older folders keep resuming and re-rendering.
    row_settings: {column: the config keys it is chosen from} for a setting chosen per point (e.g. {"lr": ("lr",
    "method_lr")}: each method's learning rate). Every point carries the column and its row records it; the
    config keys are left out of the folder's settings and of the run-folder fingerprint (the point's value is in
    it); a point whose existing row recorded another value is refused. A folder written before the recipe
    declared the setting (its settings.json holds those keys) is accepted when every row records the column.
    """

    name: str
    columns: Dict[str, Any]
    key: List[str]
    grid_keys: Sequence[str] = ()
    not_in_results: Sequence[str] = ("output_dir", "run_dir", "device", "checkpoint_every", "progress")
    not_in_training: Sequence[str] = ()
    added_keys: Mapping[str, Any] = field(default_factory=dict)
    row_settings: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "seed" not in self.key:
            raise ValueError(f"{self.name}: the row key must include 'seed', got {self.key}")
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"{self.name}: key columns {missing} are not among the columns {list(self.columns)}")
        bad = [c for c in self.row_settings if c not in self.columns or c in self.key]
        if bad:
            raise ValueError(f"{self.name}: row settings {bad} must be columns outside the key {self.key}")

    @property
    def row_setting_keys(self) -> List[str]:
        """The config keys the row settings are chosen from (left out of the folder's settings)."""
        return [k for keys in self.row_settings.values() for k in keys]


def _staging(folder: Path) -> Path:
    return folder.with_name(folder.name + ".staging")


def _marker(folder: Path) -> Path:
    return folder.with_name(folder.name + ".staging-complete")


def _old(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def recover_folder(folder: os.PathLike) -> None:
    """Finish or undo a publish that was interrupted (leftover staging / old copies of `folder`)."""
    folder = Path(folder)
    staging, marker, old = _staging(folder), _marker(folder), _old(folder)
    if marker.exists() and staging.is_dir() and not folder.exists():
        os.replace(staging, folder)  # the staged copy was complete: finish the swap
    if staging.exists():
        shutil.rmtree(staging)  # an incomplete staged copy: the folder is still the old one
    if not folder.exists() and old.is_dir():
        os.replace(old, folder)
    if old.exists():
        shutil.rmtree(old)
    if marker.exists():
        marker.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


LOCK_TIMEOUT_S = 600.0  # how long a process waits for another one to finish adding its row


class _PidFile:
    """A file created exclusively that holds this process's pid; one left by a process that no longer
    runs is taken over. `acquire()` returns None when it holds the file, else the live holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self) -> Optional[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    return pid
                if not pid:  # being written this instant, or left empty by a killed process
                    time.sleep(0.05)
                    try:
                        if self.path.read_text().strip():
                            continue
                    except OSError:
                        continue
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return None
        raise ConfigError(f"could not take {self.path} (another process keeps replacing it)")

    def release(self) -> None:
        try:
            if int(self.path.read_text().strip() or 0) == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


class _FolderLock:
    """`<folder>.lock` holding this process's pid while it reads or adds rows of `folder`. Processes that
    share a sweep hold it only for that moment; one that finds it held waits (up to `timeout` seconds,
    then it is refused with the holder's pid). A lock left by a process that no longer runs is taken over."""

    def __init__(self, folder: Path, timeout: Optional[float] = None) -> None:
        self.folder = folder
        self.file = _PidFile(folder.with_name(folder.name + ".lock"))
        self.path = self.file.path
        self.timeout = LOCK_TIMEOUT_S if timeout is None else timeout

    def __enter__(self) -> "_FolderLock":
        deadline = time.monotonic() + self.timeout
        while True:
            pid = self.file.acquire()
            if pid is None:
                return self
            if time.monotonic() >= deadline:
                raise ConfigError(f"another sinelr process (pid {pid}) has held {self.path} for over "
                                  f"{self.timeout:.0f} s while adding rows to {self.folder}; if it hangs, stop it, "
                                  "or give this run its own --output-dir")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.file.release()


def _run_key(run: Mapping[str, Any]) -> tuple:
    """What makes two provenance entries one run: command, git sha and the config the command resolved
    (an edited config file under the same command is a different run)."""
    return run.get("command"), run.get("git_sha"), json.dumps(run.get("config"), sort_keys=True)


def _merge_runs(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """provenance.json's runs with the entries of one (command, git sha, config) united in the first one
    (their points concatenated, the latest date kept): two processes sharing a sweep alternate their rows."""
    merged: Dict[tuple, Dict[str, Any]] = {}
    for r in runs:
        key = _run_key(r)
        if key in merged:
            first = merged[key]
            first["points"] = list(first.get("points", [])) + list(r.get("points", []))
            first["date"] = max(str(first.get("date", "")), str(r.get("date", "")))
        else:
            merged[key] = dict(r)
    return list(merged.values())


def publish_folder(folder: os.PathLike, write: Callable[[Path], None]) -> None:
    """Apply `write(staging)` to a copy of `folder` and swap it in; `folder` never holds a partial update."""
    folder = Path(folder)
    recover_folder(folder)
    staging = _staging(folder)
    if folder.is_dir():
        shutil.copytree(folder, staging)
    else:
        staging.mkdir(parents=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _marker(folder).touch()
    if folder.exists():
        os.replace(folder, _old(folder))
    os.replace(staging, folder)
    recover_folder(folder)  # removes the old copy and the marker


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _slug(point: Mapping[str, Any]) -> str:
    text = "_".join(f"{k}{v}" for k, v in point.items() if v is not None and v != "")
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", text)[:120]


@dataclass
class Sweep:
    """Runs the points of one recipe config into `output_dir` (summary.csv + rendered files).

    `extra` holds facts that change the numbers without being config keys (e.g. a dataset's sha256).
    `render(rows, folder)` writes summary.md and figures from all typed rows into `folder`.
    """

    spec: SweepSpec
    config: Dict[str, Any]
    output_dir: Path
    run_dir: Path
    render: Callable[[List[Record], Path], None]
    extra: Dict[str, Any] = field(default_factory=dict)
    is_main: bool = True  # under DDP, other processes run the points but write nothing
    share: bool = True  # the same command in several processes shares the points (not under DDP)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.run_dir = Path(self.run_dir)
        for name, path in (("output_dir", self.output_dir), ("run_dir", self.run_dir)):
            if path.exists() and not path.is_dir():
                raise ConfigError(f"{name} {str(path)!r} is an existing file, not a folder")
        excluded = set(self.spec.grid_keys) | set(self.spec.not_in_results) | set(self.spec.row_setting_keys)
        excluded |= {k for k, v in self.spec.added_keys.items() if self.config.get(k, v) == v}
        self.results_settings = {**training_config(self.config, excluded), **_plain(self.extra)}
        self.training_settings = training_config(self.results_settings, self.spec.not_in_training)
        self.results_fingerprint = fingerprint_of(self.results_settings)
        # The code that computes this sweep's rows is the code loaded now: its git sha is taken once.
        self.started = provenance()

    # -- before anything is written -------------------------------------------------------------
    def table(self) -> ResultsTable:
        if self.is_main:
            recover_folder(self.output_dir)
        return ResultsTable(self.output_dir / "summary.csv", self.spec.columns, self.spec.key)

    def check_settings(self, table: ResultsTable, points: Sequence[Point] = ()) -> None:
        """Refuse when the folder's rows were computed under other settings (names the keys), or when one of
        `points` already has a row that recorded another value of a row setting (names both values)."""
        path = self.output_dir / "settings.json"
        if not table.rows:
            return
        if not path.is_file():
            raise ResultsConflictError(
                f"{self.output_dir} holds {len(table.rows)} rows but no settings.json recording how they were "
                "computed (written by an older sinelr?); use another --output-dir, or rerun with --render-only "
                "to re-render them")
        old = self._without_row_settings(table, json.loads(path.read_text()).get("settings", {}))
        keys = sorted(set(old) | set(self.results_settings))
        diff = [k for k in keys if old.get(k, "<absent>") != self.results_settings.get(k, "<absent>")]
        if diff:
            shown = "; ".join(f"{k}: {old.get(k, '<absent>')!r} there, {self.results_settings.get(k, '<absent>')!r} now"
                              for k in diff[:8])
            raise ResultsConflictError(
                f"{self.output_dir} holds results computed with other settings ({shown}); "
                "use another --output-dir for the new settings (rows are never mixed)")
        self._check_row_settings(table, points)

    def _without_row_settings(self, table: ResultsTable, old: Dict[str, Any]) -> Dict[str, Any]:
        """A folder's settings less the config keys of the row settings, which a folder written before the
        recipe declared them still holds: accepted when every row records the value it was computed at."""
        for column, keys in self.spec.row_settings.items():
            held = [k for k in keys if k in old]
            if not held:
                continue
            unrecorded = [r for r in table.rows if r.get(column) is None]
            if unrecorded:
                raise ResultsConflictError(
                    f"{self.output_dir} keeps {', '.join(held)} as a setting of the whole folder, and {len(unrecorded)} of "
                    f"its rows do not record their {column}; use another --output-dir (rows are never mixed)")
            old = {k: v for k, v in old.items() if k not in held}
        return old

    def _check_row_settings(self, table: ResultsTable, points: Sequence[Point]) -> None:
        for p in points:
            row = table.get(**{k: p[k] for k in self.spec.key})
            for column in self.spec.row_settings if row is not None else ():
                was, asked = row.get(column), p[column]
                if was is None or _same(was, asked):
                    continue
                name = " ".join(f"{k}={p[k]}" for k in self.spec.key if p[k] is not None and p[k] != "")
                raise ResultsConflictError(
                    f"{self.output_dir} holds the row {name} computed at {column} {_text(was)}, and this run asks "
                    f"{column} {_text(asked)} for it; use another --output-dir for the new value (rows are never mixed)")

    def pending(self, table: ResultsTable, points: Sequence[Point]) -> List[Point]:
        keys = [{k: p.get(k) for k in self.spec.key} for p in points]
        return [p for p, k in zip(points, keys) if not table.has(**k)]

    def run_folder(self, point: Mapping[str, Any]) -> Path:
        return self.run_dir / f"{_slug(point)}-{self.checkpoint_fingerprint(point)}"

    def row_point(self, row: Mapping[str, Any]) -> Point:
        """The point a finished row was computed for: its key columns, then its row settings (the order of the
        recipes' points, which the run folder's name follows), e.g. to find the files its run folder kept."""
        return {k: row[k] for k in list(self.spec.key) + list(self.spec.row_settings)}

    def checkpoint_fingerprint(self, point: Mapping[str, Any]) -> str:
        return fingerprint_of({**self.training_settings, "point": dict(point)})

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, points: Sequence[Point], run_one: Callable[[Point, Path], Record],
            render_only: bool = False) -> List[Record]:
        """Run every pending point, publishing after each; returns all typed rows of the folder."""
        for p in points:
            missing = [k for k in list(self.spec.key) + list(self.spec.row_settings) if k not in p]
            if missing:
                raise ValueError(f"{self.spec.name}: point {p} lacks the columns {missing}")
        if render_only:
            table = self.table()
            if not self.is_main:
                return table.rows
            if not table.rows:
                raise FileNotFoundError(f"no summary.csv rows in {self.output_dir} to render")
            publish_folder(self.output_dir, lambda d: self.render(table.rows, d))
            return table.rows
        if not self.is_main or not self.share:
            # under DDP every process runs every point in step; the main one holds the folder throughout
            with _FolderLock(self.output_dir) if self.is_main else contextlib.nullcontext():
                table = self.table()
                self.check_settings(table, points)
                return self._run_alone(table, points, run_one)
        return self._run_shared(points, run_one)

    def _announce_skipped(self, table: ResultsTable, points: Sequence[Point], todo: Sequence[Point]) -> None:
        skipped = len(points) - len(todo)
        if skipped:
            print(f"[{self.spec.name}] {skipped} of {len(points)} points already in {self.output_dir / 'summary.csv'}",
                  flush=True)
        cost = self.time_left(table, todo)
        if cost:
            print(f"[{self.spec.name}] {cost}", flush=True)

    def time_left(self, table: ResultsTable, todo: Sequence[Point]) -> str:
        """What the pending points will cost, from the train_seconds of this folder's finished rows: each point
        is timed by the rows of its kind (every key column but the seed), else of the nearest kind (the key's
        leading columns, e.g. the same task and method at another rank); '' when the table has no train_seconds."""
        if "train_seconds" not in self.spec.columns or not todo:
            return ""
        kind = [k for k in self.spec.key if k != "seed"]
        seconds: Dict[tuple, List[float]] = {}
        for r in table.rows:
            if r.get("train_seconds") is not None:
                for depth in range(1, len(kind) + 1):
                    seconds.setdefault(tuple(r[k] for k in kind[:depth]), []).append(float(r["train_seconds"]))
        timed = []
        for p in todo:
            near = next((seconds[c] for c in (tuple(p[k] for k in kind[:d]) for d in range(len(kind), 0, -1))
                         if c in seconds), None)
            if near:
                timed.append(sum(near) / len(near))
        n = f"{len(todo)} point{'s' if len(todo) != 1 else ''} to run"
        if not timed:
            return f"{n}, none like a finished row of this folder"
        text = (f"{n}: about {format_duration(sum(timed))} of training in one process for "
                f"{'all of them' if len(timed) == len(todo) else f'the {len(timed)} like a finished row'}, at the "
                "speed of this folder's finished rows of the same or the nearest kind")
        untimed = len(todo) - len(timed)
        return text + (f"; {untimed} more not like any finished row" if untimed else "")

    def _start_point(self, point: Point) -> Path:
        folder = self.run_folder(point)
        if self.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "config.json", {"config": _plain(self.config), "point": _plain(point),
                                                "extra": _plain(self.extra)})
        return folder

    def _record(self, table: ResultsTable, point: Point, folder: Path, record: Record) -> None:
        typed = table.add({**record, **{k: point[k] for k in list(self.spec.key) + list(self.spec.row_settings)}},
                          save=False)
        if self.is_main:
            write_json(folder / "metrics.json", {"record": typed, "provenance": {**self.started, "date": provenance()["date"]}})
            self._publish(table, [point])

    def _run_alone(self, table: ResultsTable, points: Sequence[Point], run_one: Callable[[Point, Path], Record]) -> List[Record]:
        todo = self.pending(table, points)
        self._announce_skipped(table, points, todo)
        if not todo and (self.output_dir / "summary.md").is_file():
            return table.rows
        for point in todo:
            folder = self._start_point(point)
            try:
                record = run_one(point, folder)
            except PointNotFinished as stop:
                print(f"[{self.spec.name}] stopped before the end of {point}: {stop} (rerun to resume)", flush=True)
                return table.rows
            self._record(table, point, folder, record)
        if not todo and self.is_main:
            self._publish(table, [])
        return table.rows

    def _run_shared(self, points: Sequence[Point], run_one: Callable[[Point, Path], Record]) -> List[Record]:
        """The same command started in several processes shares the points: each point is claimed
        (`<run folder>/claim` holds the pid) by the process that runs it, and each row is added to the
        rows on disk under the folder lock, so no process drops another's rows."""
        lock = _FolderLock(self.output_dir)
        with lock:
            table = self.table()
            self.check_settings(table, points)
            todo = self.pending(table, points)
            self._announce_skipped(table, points, todo)
            if not todo:
                if not (self.output_dir / "summary.md").is_file():
                    self._publish(table, [])
                return table.rows
        left_to_others = []
        for point in todo:
            folder = self.run_folder(point)
            claim = _PidFile(folder / "claim")
            with lock:
                table = self.table()
                if not self.pending(table, [point]):
                    continue  # another process finished it meanwhile
                holder = claim.acquire()
                if holder is not None:
                    left_to_others.append((point, holder))
                    continue
                folder = self._start_point(point)
            try:
                try:
                    record = run_one(point, folder)
                except PointNotFinished as stop:
                    print(f"[{self.spec.name}] stopped before the end of {point}: {stop} (rerun to resume)", flush=True)
                    with lock:
                        return self.table().rows
                with lock:
                    table = self.table()
                    self.check_settings(table)
                    self._record(table, point, folder, record)
            finally:
                claim.release()
        for point, holder in left_to_others:
            print(f"[{self.spec.name}] {point} was being run by process {holder}; its row is added by that process",
                  flush=True)
        with lock:
            return self.table().rows

    def _publish(self, table: ResultsTable, points: List[Point]) -> None:
        prov = {**self.started, "date": provenance()["date"]}

        def write(folder: Path) -> None:
            table.save(folder / "summary.csv")
            write_json(folder / "settings.json", {"settings": self.results_settings,
                                                  "fingerprint": self.results_fingerprint})
            write_json(folder / "config.json", _plain(self.config))
            log_path = folder / "provenance.json"
            log = json.loads(log_path.read_text()) if log_path.is_file() else {}
            runs = _merge_runs(log.get("runs", []) if isinstance(log.get("runs"), list) else [])
            # each command's own config (config.json holds the last one); processes sharing the points add to
            # one entry
            new = {**prov, "config": _plain(self.config), "points": []}
            run = next((r for r in runs if _run_key(r) == _run_key(new)), None)
            if run is None:
                run = new
                runs.append(run)
            run["points"] = run["points"] + [{k: p[k] for k in self.spec.key} for p in points]
            run["date"] = prov["date"]
            write_json(log_path, {**{k: v for k, v in prov.items()}, "runs": runs})
            self.render(table.rows, folder)

        publish_folder(self.output_dir, write)
