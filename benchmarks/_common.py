"""Measurement helpers shared by the benchmark scripts (run as `python benchmarks/bench_*.py`).

- `saved_bytes`: what autograd keeps for backward; `saved_bytes_allocated`: the part of it a forward allocates
  itself (not parameters, buffers, caches or the input, which live across steps anyway);
- `interleaved`: round-robin timing of several methods, so load drift hits all of them alike;
- `Stats` / `ratio_stats`: min, median, spread, and per-round ratios between methods;
- `MachineLoad`: load average and the CPU time used by *other* processes before and during a run,
  a busy-machine verdict, the refusal to measure on a busy machine (unless --allow-busy) and the
  banner that marks a report taken on one.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import resource
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]

# A machine is "busy" when other processes use more than this many cores on average (sampled from
# /proc/stat over a few seconds before the run, and over the whole run), or when the 1-minute load
# average before the run exceeds BUSY_LOAD. A quiet machine shows ~0.0-0.1 cores of others' work.
BUSY_OTHER_CORES = 0.25
BUSY_LOAD = 1.0


def saved_bytes(module: nn.Module, x: torch.Tensor, autocast: Callable = contextlib.nullcontext) -> Tuple[int, int]:
    """Bytes of the distinct storages autograd keeps for backward after one forward of `module(x)`:
    (all, excluding the module's parameters)."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: Dict[int, Tuple[int, bool]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = (storage.nbytes(), storage.data_ptr() in param_ptrs)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast():
            y = module(x)
    del y
    total = sum(n for n, _ in seen.values())
    return total, sum(n for n, is_param in seen.values() if not is_param)


def saved_bytes_allocated(module: nn.Module, x: torch.Tensor, autocast: Callable = contextlib.nullcontext) -> int:
    """Bytes of the storages a forward of `module(x)` saves for backward that it allocated itself: those saved by a
    second forward and not by the first while the first one's graph is alive (a storage both save lives across
    steps: a parameter, buffer, cache or the input; a fresh one cannot sit at an address the first still holds)."""
    seen: List[Dict[int, int]] = [{}, {}]
    outs = []
    for i in range(2):
        def pack(t: torch.Tensor, i: int = i) -> torch.Tensor:
            seen[i][t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with autocast():
                outs.append(module(x))
    del outs
    return sum(n for ptr, n in seen[1].items() if ptr not in seen[0])


# ---- timing ------------------------------------------------------------------------------------------
def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(steps: Dict[str, Callable[[], None]], warmup: int, repeats: int,
                device: torch.device | str = "cpu") -> Dict[str, List[float]]:
    """Seconds per call of each step, `repeats` rounds after `warmup`, methods round-robin within a round."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync(device)
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def _quantile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Stats:
    """min / median / interquartile spread of a list of timings (seconds)."""

    n: int
    min: float
    median: float
    q1: float
    q3: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        return cls(len(values), min(values), statistics.median(values), _quantile(values, 0.25),
                   _quantile(values, 0.75), max(values))

    @property
    def spread(self) -> float:
        """(q3 - q1) / median: the relative interquartile range."""
        return (self.q3 - self.q1) / self.median if self.median > 0 else float("nan")

    def ms(self) -> str:
        return f"{1e3 * self.min:.1f} | {1e3 * self.median:.1f} | {100 * self.spread:.0f}%"


def ratio_stats(num: Sequence[float], den: Sequence[float]) -> Stats:
    """Per-round ratios num[i] / den[i] (both timed in the same round, so load drift cancels)."""
    return Stats.of([a / b for a, b in zip(num, den)])


def fmt_ratio(r: Stats) -> str:
    """'1.23x [1.10-1.40]': median of per-round ratios and their interquartile range."""
    return f"{r.median:.2f}x [{r.q1:.2f}-{r.q3:.2f}]"


# ---- machine load ----------------------------------------------------------------------------------
def _cpu_jiffies() -> Optional[int]:
    """Busy jiffies of all CPUs since boot (user+nice+system+irq+softirq+steal), None off Linux."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    vals = [int(v) for v in parts[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = vals
    return user + nice + system + irq + softirq + steal


def _own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


class MachineLoad:
    """Load average and other processes' CPU use before and during a run, and the busy verdict."""

    def __init__(self, probe_seconds: float = 3.0) -> None:
        self.cores = os.cpu_count() or 1
        self.load_before = os.getloadavg()
        self.others_before = self._others_over(probe_seconds)
        self._j0, self._own0, self._t0 = _cpu_jiffies(), _own_cpu_seconds(), time.perf_counter()
        self.load_after: Optional[Tuple[float, float, float]] = None
        self.others_during: Optional[float] = None

    @staticmethod
    def _others_over(seconds: float) -> Optional[float]:
        """Cores used by other processes while this one sleeps for `seconds`."""
        j0 = _cpu_jiffies()
        if j0 is None:
            return None
        own0, t0 = _own_cpu_seconds(), time.perf_counter()
        time.sleep(seconds)
        busy = (_cpu_jiffies() - j0) / os.sysconf("SC_CLK_TCK")
        return max(0.0, busy - (_own_cpu_seconds() - own0)) / (time.perf_counter() - t0)

    def finish(self) -> None:
        self.load_after = os.getloadavg()
        if self._j0 is not None:
            busy = (_cpu_jiffies() - self._j0) / os.sysconf("SC_CLK_TCK")
            own = _own_cpu_seconds() - self._own0
            self.others_during = max(0.0, busy - own) / (time.perf_counter() - self._t0)

    def busy_before(self) -> List[str]:
        why = []
        if self.load_before[0] > BUSY_LOAD:
            why.append(f"1-min load average {self.load_before[0]:.2f} > {BUSY_LOAD}")
        if self.others_before is not None and self.others_before > BUSY_OTHER_CORES:
            why.append(f"other processes used {self.others_before:.2f} cores (> {BUSY_OTHER_CORES}) just before")
        return why

    def busy_during(self) -> List[str]:
        if self.others_during is not None and self.others_during > BUSY_OTHER_CORES:
            return [f"other processes used {self.others_during:.2f} cores on average during the run (> {BUSY_OTHER_CORES})"]
        return []

    def busy(self) -> List[str]:
        return self.busy_before() + self.busy_during()

    def lines(self) -> List[str]:
        fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
        out = [f"- load average (1, 5, 15 min) before: {fmt(self.load_before)}; after: "
               f"{fmt(self.load_after) if self.load_after else 'n/a'} ({self.cores} cores)"]
        ob = "n/a" if self.others_before is None else f"{self.others_before:.2f}"
        od = "n/a" if self.others_during is None else f"{self.others_during:.2f}"
        out.append(f"- CPU used by other processes (cores): {ob} just before, {od} on average during the run "
                   f"(busy above {BUSY_OTHER_CORES})")
        return out

    def banner(self) -> List[str]:
        why = self.busy()
        if not why:
            return ["- machine: quiet by the checks above (no other process used more than "
                    f"{BUSY_OTHER_CORES} cores)"]
        return ["", "> **BUSY MACHINE: NOT A MEASUREMENT.** " + "; ".join(why) + ". Other processes compete for "
                "the cores, which inflates the elementwise passes more than the GEMMs: ratios from this run "
                "are pessimistic and noisy. Re-run on a quiet machine.", ""]


def add_common_args(p: argparse.ArgumentParser, repeats: int = 20, warmup: int = 3) -> None:
    p.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds per run (>= 20 for a report; default {repeats})")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed warm-up rounds")
    p.add_argument("--runs", type=int, default=1, help="independent runs in one invocation (targets: held in how many)")
    p.add_argument("--allow-busy", action="store_true",
                   help="measure even when other processes load the machine (the report is then marked BUSY)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown report here")


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.repeats < 1 or args.warmup < 0 or args.runs < 1:
        p.error(f"--repeats and --runs must be >= 1 and --warmup >= 0, got {args.repeats}, {args.runs}, {args.warmup}")


def start_load_check(args: argparse.Namespace) -> MachineLoad:
    """Sample the machine; refuse (exit 3) on a busy one unless --allow-busy, else warn loudly."""
    load = MachineLoad()
    why = load.busy_before()
    if why:
        msg = "BUSY MACHINE: " + "; ".join(why)
        if not args.allow_busy:
            print(f"{msg}.\nRefusing to measure: timings on a busy machine are not a measurement. Stop the other "
                  "jobs, or pass --allow-busy to run anyway (the report is then marked BUSY).", file=sys.stderr)
            raise SystemExit(3)
        print(f"WARNING: {msg}; measuring anyway (--allow-busy), the report is marked BUSY.", file=sys.stderr)
    return load


def provenance(title: str, script: str, device: torch.device | str, extra: Sequence[str] = ()) -> List[str]:
    """Header lines: command (with thread env), torch, machine, git sha, date."""
    sys.path.insert(0, str(ROOT))
    from sinelr.report import git_sha, machine_description

    command = " ".join(shlex.quote(a) for a in ["python", script] + sys.argv[1:])
    env = " ".join(f"{v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SINELR_COMPILE")
                   if v in os.environ)
    return [
        f"# {title}",
        "",
        f"- command: `{(env + ' ') if env else ''}{command}` ({torch.get_num_threads()} torch threads)",
        f"- torch {torch.__version__}; {machine_description()}; device {device}",
        f"- git {git_sha()}; date {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        *extra,
    ]


def write_report(text: str, out: Optional[Path]) -> None:
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


@contextlib.contextmanager
def compile_env(value: Optional[str]):
    """Set SINELR_COMPILE for the duration (None: leave it as it is); read by sinelr at every call."""
    if value is None:
        yield
        return
    old = os.environ.get("SINELR_COMPILE")
    os.environ["SINELR_COMPILE"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SINELR_COMPILE", None)
        else:
            os.environ["SINELR_COMPILE"] = old
