"""One small training loop shared by every recipe: seeds, progress bar, non-finite checks,
safetensors checkpoints with exact resume, mixed precision, and DDP through `accelerate`.

A recipe hands the loop a `step_fn(step) -> loss` that draws the batch for that step itself from a
generator seeded by (seed, step) or (seed, epoch): the batch of every step is then a function of the
step number, which is what makes resuming from a checkpoint exact.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from .errors import NonFiniteLossError, StopRequested
from .report import format_duration  # noqa: F401  (part of this module's interface)

__all__ = [
    "seed_everything",
    "resolve_device",
    "NonFiniteLossError",
    "CheckpointMismatchError",
    "StopRequested",
    "TrainResult",
    "train_loop",
    "progress",
    "fingerprint",
    "save_checkpoint",
    "load_checkpoint",
    "cosine_with_warmup",
]


class CheckpointMismatchError(ValueError):
    """A checkpoint on disk was written by a run with another config."""


class _StopOnSignal:
    """While active, the first SIGINT / SIGTERM only sets `signum` (the loop checks it between steps); a
    second one raises KeyboardInterrupt at once. Inactive (nothing installed) outside the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, active: bool) -> None:
        self.active = active and threading.current_thread() is threading.main_thread()
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped at once")
        self.signum = signum
        print(f"\n[train] {signal.Signals(signum).name}: finishing this step, then a checkpoint and stop "
              "(send it again to stop at once)", flush=True)

    def __enter__(self) -> "_StopOnSignal":
        if self.active:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; anything else is passed to torch.device (validated)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev


def progress(iterable=None, **kwargs):
    """tqdm when it is installed (and stderr is used for it), else the plain iterable."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the recipe extras
        return iterable if iterable is not None else range(kwargs.get("total", 0))
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("disable", os.environ.get("SINELR_NO_PROGRESS") == "1")
    return tqdm(iterable, **kwargs)


def fingerprint(config: Dict[str, Any]) -> str:
    """A short hash of the config values that define a run (used to refuse foreign checkpoints)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.0):
    """LambdaLR: linear warmup over `warmup` steps, then cosine decay to `min_ratio` at `total`."""
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _unwrap(model: nn.Module, accelerator=None) -> nn.Module:
    if accelerator is not None:
        return accelerator.unwrap_model(model)
    return getattr(model, "module", model)


def save_checkpoint(directory: os.PathLike, model: nn.Module, optimizer=None, scheduler=None, step: int = 0,
                    fingerprint_: str = "", extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write model.safetensors + trainer_state.pt + meta.json into `directory` atomically."""
    from safetensors.torch import save_model

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    state = {
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, tmp / "trainer_state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint_, **(extra or {})}, indent=2))
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)
    return directory


def _recover_checkpoint(directory: Path) -> None:
    """A kill between the two renames of `save_checkpoint` leaves the previous checkpoint as <dir>.old and no
    <dir>: put it back (it is complete; the newer one in <dir>.tmp may not be)."""
    old = directory.with_name(directory.name + ".old")
    if not (directory / "meta.json").is_file() and (old / "meta.json").is_file():
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(old, directory)


def load_checkpoint(directory: os.PathLike, model: nn.Module, optimizer=None, scheduler=None,
                    fingerprint_: Optional[str] = None) -> Dict[str, Any]:
    """Restore what `save_checkpoint` wrote; returns meta.json. Refuses a checkpoint of another config."""
    from safetensors.torch import load_model

    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {directory} (meta.json missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint {meta_path} is corrupt: {exc}") from None
    if fingerprint_ is not None and meta.get("fingerprint") != fingerprint_:
        raise CheckpointMismatchError(
            f"checkpoint in {directory} was written by a run with another config (fingerprint "
            f"{meta.get('fingerprint')!r}, this run {fingerprint_!r}); use another output directory or delete it"
        )
    try:
        load_model(model, str(directory / "model.safetensors"))
        state = torch.load(directory / "trainer_state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors/torch raise several types for truncated files
        raise ValueError(f"checkpoint in {directory} could not be read ({type(exc).__name__}: {exc})") from None
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return meta


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    losses: List[float] = field(default_factory=list)
    resumed_from: int = 0


def train_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: Callable[[int], torch.Tensor],
    total_steps: int,
    *,
    scheduler=None,
    checkpoint_dir: Optional[os.PathLike] = None,
    checkpoint_every: int = 0,
    config_fingerprint: str = "",
    accelerator=None,
    amp_dtype: Optional[torch.dtype] = None,
    grad_clip: Optional[float] = None,
    desc: str = "train",
    loss_window: int = 50,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> TrainResult:
    """Run `total_steps` optimisation steps of `step_fn(step) -> loss` on `model`.

    - Resumes from `checkpoint_dir` when it holds a checkpoint of the same `config_fingerprint`, and
      writes one every `checkpoint_every` steps and at the end (main process only).
    - `TrainResult.seconds` is the training time of every step the model kept: a resumed run adds the time its
      checkpoint recorded (meta.json `train_seconds`) to its own; steps done after the last checkpoint of an
      interrupted run were lost, and so is their time. The loss window (`final_loss`, the mean of the last
      `loss_window` losses) is kept in the checkpoint too: a resumed run reports the uninterrupted run's value.
    - Stops with NonFiniteLossError on a NaN/inf loss, naming the step.
    - With a `checkpoint_dir` in a single process, SIGINT (Ctrl-C) or SIGTERM (`kill`) stops it between steps:
      the step under way finishes, a checkpoint is written at it, and StopRequested is raised, so an
      interrupted run loses no step (a second signal stops at once, losing the steps since the last checkpoint).
    - With an `accelerate.Accelerator` (model/optimizer already prepared), backward and autocast go
      through it, so the same loop runs under `accelerate launch` (DDP) unchanged. Without one,
      `amp_dtype` turns on torch.autocast on the model's device.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    start, before = 0, 0.0
    meta: Dict[str, Any] = {}
    is_main = accelerator is None or accelerator.is_main_process
    if checkpoint_dir is not None:
        if is_main:
            _recover_checkpoint(Path(checkpoint_dir))
        if accelerator is not None:
            accelerator.wait_for_everyone()
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "meta.json").is_file():
        meta = load_checkpoint(checkpoint_dir, _unwrap(model, accelerator), optimizer, scheduler, config_fingerprint)
        start = int(meta["step"])
        before = float(meta.get("train_seconds", 0.0))  # checkpoints before this field: their time is unknown
    device_type = next(model.parameters()).device.type
    losses: List[float] = []
    window: List[float] = []
    if start:  # the loss window goes on across a resume, so final_loss is the uninterrupted run's
        window = [float(v) for v in meta.get("loss_window", [])][-loss_window:]
    t0 = time.perf_counter()
    model.train()
    bar = progress(range(start, total_steps), total=total_steps, initial=start, desc=desc, disable=not is_main
                   or os.environ.get("SINELR_NO_PROGRESS") == "1")
    loss_value = float("nan")

    def checkpoint(done: int) -> None:
        save_checkpoint(checkpoint_dir, _unwrap(model, accelerator), optimizer, scheduler, done, config_fingerprint,
                        extra={"final_loss": sum(window) / len(window), "loss_window": window,
                               "train_seconds": before + time.perf_counter() - t0})

    single = accelerator is None or accelerator.num_processes == 1  # under DDP every rank would have to agree
    with _StopOnSignal(checkpoint_dir is not None and single) as stop:
        try:
            for step in bar:
                if accelerator is not None:
                    with accelerator.autocast():
                        loss = step_fn(step)
                elif amp_dtype is not None:
                    with torch.autocast(device_type, dtype=amp_dtype):
                        loss = step_fn(step)
                else:
                    loss = step_fn(step)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"non-finite loss {loss_value} at step {step} ({desc}); lower the learning rate or omega, "
                        "or enable gradient clipping"
                    )
                optimizer.zero_grad(set_to_none=True)
                if accelerator is not None:
                    accelerator.backward(loss)
                    if grad_clip:
                        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
                else:
                    loss.backward()
                    if grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                losses.append(loss_value)
                window = (window + [loss_value])[-loss_window:]
                if on_step is not None:
                    on_step(step, loss_value)
                if hasattr(bar, "set_postfix") and (step % 10 == 0 or step == total_steps - 1):
                    bar.set_postfix(loss=f"{sum(window) / len(window):.4g}")
                done = step + 1
                periodic = bool(checkpoint_every) and done % checkpoint_every == 0
                if checkpoint_dir is not None and is_main and (periodic or done == total_steps
                                                               or stop.signum is not None):
                    checkpoint(done)
                if accelerator is not None and checkpoint_dir is not None and periodic:
                    accelerator.wait_for_everyone()
                if stop.signum is not None:
                    raise StopRequested(
                        f"stopped by {signal.Signals(stop.signum).name} after step {done} of {total_steps} ({desc}); "
                        f"the checkpoint in {checkpoint_dir} holds it: run the same command again to resume",
                        done, Path(checkpoint_dir))
        finally:
            if hasattr(bar, "close"):
                bar.close()
    final = sum(window) / len(window) if window else float(meta.get("final_loss", float("nan")))
    return TrainResult(steps=total_steps, final_loss=final, seconds=before + time.perf_counter() - t0, losses=losses,
                       resumed_from=start)


@dataclass
class RunEstimate:
    """What a run will cost, from a few timed training steps: `models` x `steps_per_model` x `seconds_per_step`;
    `how` says what was timed (and how it was scaled to a real step), for the printed line."""

    models: int
    steps_per_model: int
    seconds_per_step: float
    device: str
    how: str

    @property
    def seconds_per_model(self) -> float:
        return self.steps_per_model * self.seconds_per_step

    def line(self) -> str:
        return (f"estimated {format_duration(self.seconds_per_model)} per model on {self.device} "
                f"({self.steps_per_model:,} steps x {self.seconds_per_step:.3g} s per step, {self.how}); "
                f"{self.models} model(s): {format_duration(self.models * self.seconds_per_model)} in all")


def time_steps(step: Callable[[], None], steps: int = 2, warmup: int = 1) -> float:
    """Seconds per call of `step` (a whole training step), the median of `steps` calls after `warmup` (the
    upper one for an even count)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def extrapolate_step_seconds(make_step: Callable[[int], Callable[[], None]], target: int, small: int,
                             large: int, steps: int = 2) -> float:
    """Seconds per training step at batch `target`, from steps timed at two smaller batches.

    `make_step(b)` returns one training step at batch b. The time is fitted as a line in the batch
    (a fixed part, e.g. building sine weights, plus a part per example) through the batches `small`
    and `large`; at or below `large` the target batch is timed directly."""
    if not 0 < small < large:
        raise ValueError(f"need 0 < small < large, got small={small}, large={large}")
    if target <= large:
        return time_steps(make_step(target), steps)
    t_small = time_steps(make_step(small), steps)
    t_large = time_steps(make_step(large), steps)
    per_example = max(0.0, (t_large - t_small) / (large - small))
    return t_large + per_example * (target - large)


__all__ += ["matmul_gflops", "cpu_bf16_warning"]

# bf16 autocast on a CPU is worth it only with native bf16 matrix units (AVX512-BF16 / AMX); elsewhere PyTorch
# emulates it, and a bf16 matmul ran 15-41x slower than fp32 on an AVX2 AMD EPYC (0.8-1.5 against 18-61 GFLOP/s).
CPU_BF16_SLOWDOWN_LIMIT = 2.0


def matmul_gflops(dtype: torch.dtype, m: int = 768, k: int = 384, n: int = 1536, repeats: int = 3) -> float:
    """GFLOP/s of one (m x k) @ (k x n) CPU matmul in `dtype` on the current thread count (`time_steps`: the
    median of `repeats` after one warm-up): a probe of well under a second."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    return 2 * m * k * n / max(time_steps(lambda: a @ b, steps=repeats), 1e-9) / 1e9


def cpu_bf16_warning(fp32_gflops: Optional[float] = None, bf16_gflops: Optional[float] = None) -> Optional[str]:
    """A warning when bf16 autocast on this CPU would be much slower than fp32 (its matmul more than
    CPU_BF16_SLOWDOWN_LIMIT times slower), else None. The two rates are probed (`matmul_gflops`) unless given."""
    fp32 = matmul_gflops(torch.float32) if fp32_gflops is None else fp32_gflops
    bf16 = matmul_gflops(torch.bfloat16) if bf16_gflops is None else bf16_gflops
    if bf16 * CPU_BF16_SLOWDOWN_LIMIT >= fp32:
        return None
    return (f"bf16 autocast on this CPU (capability {torch.backends.cpu.get_cpu_capability()}) runs a matmul "
            f"{fp32 / bf16:.0f}x slower than fp32 ({bf16:.1f} against {fp32:.1f} GFLOP/s): it seems to lack native "
            "bf16 matrix units, so every step will be about that much slower. Use --mixed-precision no on this machine (into "
            "another --output-dir: rows of one table share a precision), or run bf16 on a CPU where it is fast.")
