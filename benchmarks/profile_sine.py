"""Where the time of a sine layer's fwd+bwd goes: torch.profiler of dense vs SineLowRankLinear (eager / compiled).

With --peft it profiles a sine-LoRA PEFT layer (frozen nn.Linear base + adapter, omega 200) against
the frozen base and its 3-GEMM floor (a trainable nn.Linear) instead. For one shape it profiles `--steps` forward+backward calls of each method (after a warm-up that also
compiles the fused chain) and reports self CPU time per op, grouped into large GEMMs, thin GEMMs,
elementwise passes, the fused (compiled) chain and the rest, plus the top ops. The load check of
the other benchmarks applies (refusal on a busy machine unless --allow-busy; the report is then
marked BUSY).

    OMP_NUM_THREADS=1 python benchmarks/profile_sine.py --out results/bench/profile_cpu_2048.md
    OMP_NUM_THREADS=2 python benchmarks/profile_sine.py --peft --fin 4096 --fout 4096 --tokens 1024 \
        --out results/bench/profile_peft_cpu_4096.md     # sine-LoRA layer vs frozen base and 3-GEMM floor
    python benchmarks/profile_sine.py --fin 512 --fout 512 --tokens 512 --allow-busy   # seconds
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sinelr.layers import SineLowRankLinear  # noqa: E402

from _common import compile_env, provenance, start_load_check, write_report  # noqa: E402

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_addmm_activation")
ELEMENTWISE = ("aten::sin", "aten::cos", "aten::mul", "aten::add", "aten::div", "aten::copy_", "aten::fill_",
               "aten::zero_", "aten::sum", "aten::to", "aten::_to_copy", "aten::clone", "aten::empty")


def category(name: str) -> str:
    if "compiled" in name.lower() or name.startswith(("Torch-Compiled", "graph_", "cpp_fused", "triton_")):
        return "fused chain (compiled)"
    if name.startswith(GEMMS):
        return "GEMMs (aten::mm / addmm / linear)"
    if name.startswith(ELEMENTWISE):
        return "elementwise (sin, cos, mul, add, copy, ...)"
    return "other"


def profile_method(module: nn.Module, x: torch.Tensor, gy: torch.Tensor, mode: Optional[str], steps: int,
                   warmup: int) -> Dict:
    def step() -> None:
        for p in module.parameters():
            p.grad = None
        x.grad = None
        with compile_env(mode):
            module(x).backward(gy)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = time.perf_counter() - t0
    averages = prof.key_averages()
    groups: Dict[str, float] = defaultdict(float)
    for ev in averages:
        groups[category(ev.key)] += ev.self_cpu_time_total / 1e3  # ms
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {"wall_ms": 1e3 * wall / steps, "groups": {k: v / steps for k, v in groups.items()},
            "top": [(e.key, e.count // steps, e.self_cpu_time_total / 1e3 / steps) for e in top]}


def _sine_lora(fin: int, fout: int, rank: int, omega: float) -> nn.Module:
    """A one-layer PEFT model with a sine-LoRA adapter whose B is non-zero, as after some training."""
    from peft import get_peft_model

    from sinelr.peft import SineLoraConfig

    base = nn.Sequential(nn.Linear(fin, fout))
    model = get_peft_model(base, SineLoraConfig(r=rank, lora_alpha=2 * rank, omega=omega, target_modules=["0"]))
    with torch.no_grad():
        for name, q in model.named_parameters():
            if "lora_B" in name:
                q.copy_(torch.randn_like(q) * 0.01)
    return model


def _methods(args) -> Dict[str, tuple]:
    if not args.peft:
        return {
            "dense nn.Linear": (nn.Linear(args.fin, args.fout), None),
            "sine, eager chain": (SineLowRankLinear(args.fin, args.fout, args.rank, omega=args.omega), "0"),
            "sine, compiled chain": (SineLowRankLinear(args.fin, args.fout, args.rank, omega=args.omega), "1"),
        }
    return {
        "frozen base nn.Linear": (nn.Linear(args.fin, args.fout).requires_grad_(False), None),
        "3-GEMM floor (trainable nn.Linear)": (nn.Linear(args.fin, args.fout), None),
        "sine-LoRA, eager chain": (_sine_lora(args.fin, args.fout, args.rank, args.omega), "0"),
        "sine-LoRA, compiled chain": (_sine_lora(args.fin, args.fout, args.rank, args.omega), "1"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fin", type=int, default=2048)
    p.add_argument("--fout", type=int, default=2048)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--omega", type=float, default=None, help="default 100 (layer), 200 with --peft")
    p.add_argument("--peft", action="store_true", help="profile the sine-LoRA PEFT layer against its floor")
    p.add_argument("--steps", type=int, default=5, help="profiled fwd+bwd calls per method")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--allow-busy", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.omega is None:
        args.omega = 200.0 if args.peft else 100.0
    load = start_load_check(args)
    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.fin, requires_grad=True)
    gy = torch.randn(args.tokens, args.fout)
    methods = _methods(args)
    with profile(activities=[ProfilerActivity.CPU]):  # the profiler's own start-up, outside the measurements
        torch.randn(8, 8) @ torch.randn(8, 8)
    results = {name: profile_method(mod, x, gy, mode, args.steps, args.warmup) for name, (mod, mode) in methods.items()}
    load.finish()
    lines = provenance(
        f"Profile: fwd+bwd of a {args.fout}x{args.fin} {'sine-LoRA ' if args.peft else ''}layer "
        f"(rank {args.rank}, omega {args.omega:g}, {args.tokens} tokens)",
        "benchmarks/profile_sine.py", "cpu",
        [f"- torch.profiler (CPU), {args.steps} profiled calls per method after {args.warmup} warm-up; self CPU time "
         "per call; methods profiled one after the other (not interleaved: compare shares, not absolute times)",
         *load.lines(), *load.banner()])
    groups = sorted({g for r in results.values() for g in r["groups"]})
    lines += ["", "## Self CPU time per fwd+bwd call, by kind of op (ms)", "",
              "| method | wall ms (profiled) | " + " | ".join(groups) + " |", "|---|---:|" + "---:|" * len(groups)]
    for name, r in results.items():
        lines.append(f"| {name} | {r['wall_ms']:.1f} | " + " | ".join(f"{r['groups'].get(g, 0.0):.1f}" for g in groups) + " |")
    for name, r in results.items():
        lines += ["", f"## Top ops: {name}", "", "| op | calls per fwd+bwd | self CPU ms per fwd+bwd |", "|---|---:|---:|"]
        lines += [f"| `{key}` | {count} | {ms:.1f} |" for key, count, ms in r["top"]]
    write_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
