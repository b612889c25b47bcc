"""Speed and memory of one layer: dense nn.Linear vs LowRankLinear vs the naive sine formula vs SineLowRankLinear.

For each shape (the paper's: ViT-S/B MLP layers and a 4096x4096 LLM projection) it measures
- forward+backward time: `--repeats` rounds after `--warmup`, methods interleaved round-robin within a
  round so that load changes hit every method alike; min, median and interquartile spread per method,
  and the ratio to dense as the median (and IQR) of the per-round ratios. Dense (trainable nn.Linear)
  is also the floor of the sine layer: both do three m x n x tokens GEMMs (y, grad_x, dL/dW);
- the sine layer twice: eager elementwise chain (SINELR_COMPILE=0) and fused by torch.compile
  (SINELR_COMPILE=1; compiled during warm-up);
- bytes saved for backward (saved_tensors_hooks, deduplicated by storage, with/without parameters);
- eval-mode inference under torch.no_grad (SineLowRankLinear uses its cached weight);
- the load average and other processes' CPU use before and during the run: on a busy machine it refuses
  to measure unless --allow-busy, and then marks the report BUSY.

    OMP_NUM_THREADS=2 python benchmarks/bench_layers.py --runs 3 --out results/bench/layers_cpu.md
    python benchmarks/bench_layers.py --quick --allow-busy   # small shapes, seconds (plus compile)
    python benchmarks/bench_layers.py --dtype bf16           # autocast(bfloat16) on the device
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sinelr.functional import naive_sine_lowrank_linear  # noqa: E402
from sinelr.layers import LowRankLinear, SineLowRankLinear  # noqa: E402

from _common import (  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
    Stats, add_common_args, check_args, compile_env, fmt_ratio, interleaved, provenance, ratio_stats,
    saved_bytes, start_load_check, write_report,
)

# (in_features, out_features, rank, tokens): ViT-S MLP fc1 (384 -> 1536) at k=1 and 10, ViT-B fc1
# (768 -> 3072) at k=10, and a 4096x4096 projection at k=8 (LLaMA-7B attention size).
PAPER_SHAPES = [(384, 1536, 1, 4096), (384, 1536, 10, 4096), (768, 3072, 10, 2048), (4096, 4096, 8, 2048)]
QUICK_SHAPES = [(64, 256, 4, 512), (256, 256, 8, 256)]
OMEGA = 100.0
# method -> SINELR_COMPILE while it runs (None: not a sine layer)
METHODS: Dict[str, Optional[str]] = {
    "dense": None, "lowrank": None, "naive_sine": None, "sine (eager)": "0", "sine (compiled)": "1",
}
TARGET = 1.05  # issue 19: SineLowRankLinear fwd+bwd <= 1.05x dense (its 3-GEMM floor)


class NaiveSine(nn.Module):
    """The textbook formula with plain autograd (keeps the m x n argument and weight for backward)."""

    def __init__(self, layer: SineLowRankLinear) -> None:
        super().__init__()
        self.U, self.V, self.bias = layer.U, layer.V, layer.bias
        self.omega, self.gain = layer.omega, layer.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return naive_sine_lowrank_linear(x, self.U, self.V, self.bias, self.omega, self.gain)


def build(method: str, fin: int, fout: int, k: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    if method == "dense":
        return nn.Linear(fin, fout, device=device)
    if method == "lowrank":
        return LowRankLinear(fin, fout, k, device=device)
    sine = SineLowRankLinear(fin, fout, k, omega=OMEGA, device=device)
    return NaiveSine(sine) if method == "naive_sine" else sine


def bench_shape(fin: int, fout: int, k: int, tokens: int, repeats: int, warmup: int, device: torch.device,
                dtype: str, with_memory: bool) -> List[Dict]:
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if dtype == "bf16" else nullcontext
    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(tokens, fin, generator=gen).to(device).requires_grad_(True)
    gy = torch.randn(tokens, fout, generator=gen).to(device)
    if dtype == "bf16":
        gy = gy.bfloat16()
    modules = {m: build(m, fin, fout, k, device) for m in METHODS}

    def train_step(name: str):
        mod, mode = modules[name], METHODS[name]

        def step() -> None:
            for p in mod.parameters():
                p.grad = None
            x.grad = None
            with compile_env(mode), autocast():
                y = mod(x)
            with compile_env(mode):
                y.backward(gy)
        return step

    def eval_step(name: str):
        mod = modules[name]

        def step() -> None:
            with torch.no_grad(), autocast():
                mod(x)
        return step

    times = interleaved({m: train_step(m) for m in METHODS}, warmup, repeats, device)
    eval_methods = ["dense", "lowrank", "sine (eager)"]  # the sine layer's eval is a cached F.linear
    for m in eval_methods:
        modules[m].eval()
    etimes = interleaved({m: eval_step(m) for m in eval_methods}, warmup, repeats, device)
    rows = []
    for m in METHODS:
        modules[m].train()
        row = {"method": m, "train": Stats.of(times[m]), "train_x": ratio_stats(times[m], times["dense"]),
               "params": sum(p.numel() for p in modules[m].parameters())}
        if m in etimes:
            row["eval"], row["eval_x"] = Stats.of(etimes[m]), ratio_stats(etimes[m], etimes["dense"])
        if with_memory:
            total, no_params = saved_bytes(modules[m], x, autocast)
            row["saved_mb"], row["saved_noparam_mb"] = total / 2**20, no_params / 2**20
        rows.append(row)
    return rows


def fmt_table(rows: List[Dict]) -> str:
    mem = "saved_mb" in rows[0]
    head = ("| method | params | fwd+bwd min ms | median ms | IQR | / dense (per-round median [IQR]) | "
            "eval min ms | eval / dense |" + (" saved MB (incl. params) | saved MB (excl. params) |" if mem else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ev = f"{1e3 * r['eval'].min:.2f} | {fmt_ratio(r['eval_x'])}" if "eval" in r else "n/a | n/a"
        line = f"| {r['method']} | {r['params']:,} | {r['train'].ms()} | {fmt_ratio(r['train_x'])} | {ev} |"
        if mem:
            line += f" {r['saved_mb']:.2f} | {r['saved_noparam_mb']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes only (seconds, plus the one-time compile)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = torch.autocast(bfloat16)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--tokens-4096", type=int, default=None,
                   help="tokens for the 4096x4096 shape (default 2048; lower it on a slow CPU)")
    p.add_argument("--skip-large", action="store_true", help="leave out the 4096x4096 shape")
    p.add_argument("--only-large", action="store_true", help="only the 4096x4096 shape")
    add_common_args(p)
    args = p.parse_args(argv)
    check_args(p, args)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    shapes = QUICK_SHAPES if args.quick else PAPER_SHAPES
    if args.only_large:
        shapes = [s_ for s_ in shapes if s_[:2] == (4096, 4096)]
    if args.skip_large:
        shapes = [s_ for s_ in shapes if s_[:2] != (4096, 4096)]
    if args.tokens_4096:
        shapes = [(a, b, k, args.tokens_4096 if (a, b) == (4096, 4096) else t) for a, b, k, t in shapes]
    load = start_load_check(args)
    t0 = time.perf_counter()
    body, verdicts = [], {}
    for run in range(args.runs):
        for fin, fout, k, tokens in shapes:
            rows = bench_shape(fin, fout, k, tokens, args.repeats, args.warmup, device, args.dtype, with_memory=run == 0)
            title = f"## Run {run + 1}: {fin} -> {fout} (weight {fout}x{fin}), rank {k}, {tokens} tokens"
            block = f"{title}\n\n{fmt_table(rows)}\n"
            print(block, flush=True)
            body.append(block)
            ratio = next(r for r in rows if r["method"] == "sine (compiled)")["train_x"].median
            verdicts.setdefault((fin, fout, k, tokens), []).append(ratio)
    load.finish()
    targets = ["## Target (issue 19): sine fwd+bwd <= 1.05x dense (= its 3-GEMM floor), compiled chain", ""]
    for (fin, fout, k, tokens), ratios in verdicts.items():
        held = sum(r <= TARGET for r in ratios)
        targets.append(f"- {fin} -> {fout} k={k}, {tokens} tokens: " + ", ".join(f"{r:.2f}x" for r in ratios)
                       + f" -> held in {held} of {len(ratios)} runs")
    header = provenance(
        "Layer benchmark: dense vs low-rank vs naive sine formula vs SineLowRankLinear (eager / compiled chain)",
        "benchmarks/bench_layers.py", device,
        [f"- dtype {args.dtype}" + (" (torch.autocast bfloat16; sine argument and sine in fp32)" if args.dtype == "bf16" else ""),
         f"- fwd+bwd: {args.repeats} rounds after {args.warmup} warm-up per run, {args.runs} run(s), methods interleaved; "
         f"x requires grad; omega={OMEGA:g}, gain=sqrt(in). Ratios are the median [IQR] of per-round ratios.",
         "- saved bytes (first run): distinct storages packed by saved_tensors_hooks.",
         *load.lines(), *load.banner(),
         f"- wall time {time.perf_counter() - t0:.0f} s", ""])
    write_report("\n".join(header) + "\n" + "\n".join(body) + "\n" + "\n".join(targets) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
