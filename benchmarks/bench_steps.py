"""Whole training steps: dense vs low-rank vs sine ViT and NeRF at the sizes of the CPU recipes.

Users feel steps, not layers. The models are built from `sinelr.models` with the sizes of
configs/vit_fashion_mnist_cpu.yaml (ViT: 28x28x1 images, patch 7, width 192, MLP 768, 4 blocks, batch
128, AdamW; the MLP layers are converted) and configs/nerf_cpu.yaml (NeRF MLP width 128, depth 8, 32
coarse samples, 256 rays, Adam; trunk layers converted). Inputs are random tensors of the recipes'
shapes (data loading is not timed). Per method: time of one optimisation step (zero_grad, forward,
loss, backward, optimizer step), `--repeats` rounds after `--warmup` with methods interleaved; peak
tensor memory of one step (CUDA: max_memory_allocated; CPU: the peak of torch.profiler's memory
timeline); and the bytes autograd saves for backward. Sine runs twice: eager
elementwise chain (SINELR_COMPILE=0) and compiled (SINELR_COMPILE=1). Refuses on a busy machine unless
--allow-busy, and then marks the report BUSY.

    OMP_NUM_THREADS=1 python benchmarks/bench_steps.py --runs 3 --out results/bench/steps_cpu.md
    python benchmarks/bench_steps.py --quick --allow-busy     # 5 rounds, to try the script
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sinelr.convert import convert  # noqa: E402
from sinelr.models.nerf import NeRF, convert_nerf, render_rays  # noqa: E402
from sinelr.models.vit import MLP_TARGETS, VisionTransformer  # noqa: E402

from _common import (  # noqa: E402
    Stats, add_common_args, check_args, compile_env, fmt_ratio, interleaved, provenance, ratio_stats,
    start_load_check, sync, write_report,
)

TARGET = 1.10  # issue 19: sine step <= 1.10x dense step
# method label -> (kind for the converters, SINELR_COMPILE while it runs)
METHODS: Dict[str, Tuple[str, Optional[str]]] = {
    "dense": ("full", None), "lowrank": ("lowrank", None), "sine (eager)": ("sine", "0"), "sine (compiled)": ("sine", "1"),
}


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / name).read_text())


def vit_case(kind: str, rank: int, device: torch.device) -> Tuple[nn.Module, torch.optim.Optimizer, Callable]:
    c = _config("vit_fashion_mnist_cpu.yaml")
    torch.manual_seed(0)
    model = VisionTransformer(img_size=c["image_size"], patch_size=c["patch_size"], in_chans=1, num_classes=10,
                              embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                              mlp_dim=c["mlp_dim"])
    if kind != "full":
        convert(model, MLP_TARGETS, rank, kind=kind, omega=float(c["omega"]), init="fresh")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(c["batch_size"], 1, c["image_size"], c["image_size"], generator=g).to(device)
    y = torch.randint(0, 10, (c["batch_size"],), generator=g).to(device)
    return model, opt, lambda: F.cross_entropy(model(x), y, label_smoothing=c["label_smoothing"])


def nerf_case(kind: str, rank: int, device: torch.device) -> Tuple[nn.Module, torch.optim.Optimizer, Callable]:
    c = _config("nerf_cpu.yaml")
    torch.manual_seed(0)
    model = NeRF(c["width"], c["depth"], 4 if c["depth"] > 5 else -1, 10, 4, c["n_coarse"], c["n_fine"])
    convert_nerf(model, kind, rank, omega=float(c["omega"]))
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    g = torch.Generator().manual_seed(1)
    n = c["batch_rays"]
    rays_o = torch.randn(n, 3, generator=g).to(device)
    rays_d = torch.randn(n, 3, generator=g).to(device)
    viewdirs = F.normalize(rays_d, dim=-1)
    target = torch.rand(n, 3, generator=g).to(device)
    return model, opt, lambda: F.mse_loss(render_rays(model, rays_o, rays_d, viewdirs, perturb=False)["rgb"], target)


def step_fn(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable, mode: Optional[str],
            autocast: Callable) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with compile_env(mode):
            with autocast():
                loss = loss_fn()
            loss.backward()
        opt.step()
    return step


def saved_mib(loss_fn: Callable, mode: Optional[str], autocast: Callable) -> float:
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with compile_env(mode), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        loss = loss_fn()
    del loss
    return sum(seen.values()) / 2**20


def peak_mib(step: Callable[[], None], device: torch.device) -> Optional[float]:
    """Peak tensor memory during one step, in MiB. CUDA: max_memory_allocated. CPU: the peak of the
    memory timeline of torch.profiler (profile_memory=True; tensors alive during the step, including
    parameters, gradients and optimizer state), None if that (private) API is unavailable."""
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
            step()
        _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
        return max(sum(row) for row in sizes) / 2**20
    except Exception as exc:  # noqa: BLE001 - a private API: report n/a rather than fail the benchmark
        print(f"peak memory not measured ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def bench_model(name: str, build: Callable, rank: int, repeats: int, warmup: int, device: torch.device,
                autocast: Callable, with_memory: bool) -> List[Dict]:
    cases = {label: build(kind, rank, device) for label, (kind, _) in METHODS.items()}
    steps = {label: step_fn(*cases[label], METHODS[label][1], autocast) for label in METHODS}
    times = interleaved(steps, warmup, repeats, device)
    rows = []
    for label in METHODS:
        model, _, loss_fn = cases[label]
        row = {"model": name, "method": label, "t": Stats.of(times[label]),
               "x": ratio_stats(times[label], times["dense"]),
               "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        if with_memory:
            row["peak"] = peak_mib(steps[label], device)
            row["saved"] = saved_mib(loss_fn, METHODS[label][1], autocast)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = torch.autocast(bfloat16)")
    p.add_argument("--vit-rank", type=int, default=10, help="rank of the ViT MLP layers (the CPU sweep's k = 10)")
    p.add_argument("--nerf-rank", type=int, default=5, help="rank of the NeRF trunk layers (the CPU sweep's k = 5)")
    p.add_argument("--quick", action="store_true", help="5 rounds after 1 warm-up, one run (to try the script)")
    p.add_argument("--only", choices=["vit", "nerf"], default=None, help="one model only")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.runs = 5, 1, 1
    check_args(p, args)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else nullcontext
    models = [("ViT (vit_fashion_mnist_cpu.yaml)", vit_case, args.vit_rank),
              ("NeRF (nerf_cpu.yaml)", nerf_case, args.nerf_rank)]
    if args.only:
        models = [m for m in models if m[0].lower().startswith(args.only)]
    load = start_load_check(args)
    t0 = time.perf_counter()
    runs = []
    for run in range(args.runs):
        rows = []
        for name, build, rank in models:
            rows += bench_model(name, build, rank, args.repeats, args.warmup, device, autocast, with_memory=run == 0)
        runs.append(rows)
    load.finish()
    mem_label = "peak memory during step MiB" + (" (max_memory_allocated)" if device.type == "cuda" else " (profiler timeline)")
    lines = provenance(
        "Training-step benchmark: dense vs low-rank vs sine (ViT and NeRF CPU recipe sizes)",
        "benchmarks/bench_steps.py", device,
        [f"- dtype {args.dtype}; ranks: ViT k={args.vit_rank}, NeRF k={args.nerf_rank}; random inputs of the "
         "recipes' shapes, seed 0 weights / seed 1 inputs; one step = zero_grad, forward, loss, backward, optimizer step",
         f"- {args.repeats} rounds after {args.warmup} warm-up per run, {args.runs} run(s), methods interleaved; "
         "times are min | median | IQR/median; ratios are the median [IQR] of per-round ratios",
         *load.lines(), *load.banner(), f"- wall time {time.perf_counter() - t0:.0f} s"])
    for i, rows in enumerate(runs):
        mem = i == 0
        lines += ["", f"## Run {i + 1}", "",
                  "| model | method | trainable params | step min ms | median ms | IQR | / dense |"
                  + (f" {mem_label} | saved for backward MiB |" if mem else ""),
                  "|---|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if mem else "")]
        for r in rows:
            line = f"| {r['model']} | {r['method']} | {r['params']:,} | {r['t'].ms()} | {fmt_ratio(r['x'])} |"
            if mem:
                peak = "n/a" if r["peak"] is None else f"{r['peak']:.1f}"
                line += f" {peak} | {r['saved']:.1f} |"
            lines.append(line)
    lines += ["", f"## Target (issue 19): sine step <= {TARGET}x dense, over {args.runs} run(s)", ""]
    for name, _, _ in models:
        for label in ("sine (eager)", "sine (compiled)"):
            ratios = [next(r for r in rows if r["model"] == name and r["method"] == label)["x"].median for rows in runs]
            held = sum(v <= TARGET for v in ratios)
            lines.append(f"- {name}, {label}: " + ", ".join(f"{v:.2f}x" for v in ratios)
                         + f" -> held in {held} of {len(ratios)} runs")
    write_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
