"""Sine-LoRA cost against a frozen base layer, its 3-GEMM floor, plain PEFT LoRA and the authors' formulation.

For each layer size: fwd+bwd time (`--repeats` rounds after `--warmup`, methods interleaved within a
round so that load drift on a shared machine hits all of them alike; min, median, interquartile spread,
and ratios as the median [IQR] of per-round ratios) and the bytes autograd saves for backward. The
floor is a trainable nn.Linear of the same shape: like sine-LoRA it does three large GEMMs (y, grad_x
and dL/dW, which the sine factors need), where the frozen base does two. Sine-LoRA runs twice: eager
elementwise chain (SINELR_COMPILE=0) and fused by torch.compile (SINELR_COMPILE=1, compiled during
warm-up). Then inference of a merged and an unmerged sine-LoRA BERT (MiniLM-L6 shape) against the
base model. The machine's load is checked before and during the run: on a busy machine the script
refuses unless --allow-busy, and marks the report BUSY.

    OMP_NUM_THREADS=2 python benchmarks/bench_peft.py --runs 3 --out results/bench/peft_cpu.md
    python benchmarks/bench_peft.py --quick --allow-busy      # small shapes, to try the script
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import peft  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402

import sinelr.peft  # noqa: E402,F401
from sinelr.peft import SineLoraConfig  # noqa: E402

from _common import (  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
    Stats, add_common_args, check_args, compile_env, fmt_ratio, interleaved, provenance, ratio_stats,
    saved_bytes, saved_bytes_allocated, start_load_check, write_report,
)

MiB = 2**20
BASE, FLOOR = "frozen base nn.Linear", "3-GEMM floor (trainable nn.Linear)"
EAGER, COMPILED = "sinelr sine-LoRA, eager chain", "sinelr sine-LoRA, compiled chain"
OFFSET = "sinelr sine-LoRA, offset start (init_argument_rms=1), eager"
TARGET = 1.05  # issue 19: sine-LoRA fwd+bwd <= 1.05x its 3-GEMM floor, in every run
# set by main(): where and in which dtype to run (--device, --dtype)
DEVICE = torch.device("cpu")
AUTOCAST: Callable = contextlib.nullcontext


class AuthorsSineLora(nn.Module):
    """The authors' formulation: base(x) + x @ (sin(omega * A^T B^T) / s) * scaling, plain autograd."""

    def __init__(self, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, omega: float, gain: float, scaling: float):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(A.clone())  # (r, in)
        self.B = nn.Parameter(B.clone())  # (out, r)
        self.omega, self.gain, self.scaling = omega, gain, scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ (torch.sin(self.omega * (self.A.T @ self.B.T)) / self.gain) * self.scaling


def _layers(n_in: int, n_out: int, r: int, omega: float, seed: int = 0) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    base = nn.Linear(n_in, n_out).requires_grad_(False)
    lora = get_peft_model(nn.Sequential(copy.deepcopy(base)), LoraConfig(r=r, lora_alpha=2 * r, target_modules=["0"]))
    sine = get_peft_model(
        nn.Sequential(copy.deepcopy(base)), SineLoraConfig(r=r, lora_alpha=2 * r, omega=omega, target_modules=["0"])
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for model in (lora, sine):  # non-zero B, as after some training
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    sine_layer = sine.base_model.model[0]
    authors = AuthorsSineLora(
        copy.deepcopy(base), sine_layer.lora_A["default"].weight.detach(), sine_layer.lora_B["default"].weight.detach(),
        omega, math.sqrt(n_in), sine_layer.scaling["default"],
    )
    floor = copy.deepcopy(base).requires_grad_(True)
    # the offset start: non-zero frozen B0, A0 whose update is subtracted (one more out x in matrix, cached)
    offset = get_peft_model(nn.Sequential(copy.deepcopy(base)), SineLoraConfig(
        r=r, lora_alpha=2 * r, omega=omega, init_argument_rms=1.0, target_modules=["0"]))
    return {
        BASE: base,
        FLOOR: floor,
        "PEFT LoRA": lora.base_model.model[0],
        "authors' sine-LoRA (naive autograd)": authors,
        EAGER: sine_layer,
        COMPILED: copy.deepcopy(sine_layer),
        OFFSET: offset.base_model.model[0],
    }


def fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, compile_mode: Optional[str]) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        with compile_env(compile_mode):
            with AUTOCAST():
                y = module(x)
            y.backward(grad.to(y.dtype))

    return step


def bench_layers(n: int, r: int, tokens: int, omega: float, warmup: int, repeats: int, with_memory: bool) -> list[dict]:
    layers = {name: layer.to(DEVICE) for name, layer in _layers(n, n, r, omega).items()}
    x = torch.randn(tokens, n).to(DEVICE).requires_grad_(True)
    grad = torch.randn(tokens, n).to(DEVICE)
    with torch.no_grad():  # all sine forms compute the same function
        ref = layers["authors' sine-LoRA (naive autograd)"](x)
        ours = layers[EAGER](x)
        if not torch.allclose(ref, ours, atol=1e-3, rtol=1e-4):
            raise RuntimeError(f"sine-LoRA differs from the authors' form by {(ref - ours).abs().max():.3g}")
    modes = {COMPILED: "1", EAGER: "0", OFFSET: "0"}
    memory = {name: saved_bytes(layer, x, AUTOCAST) + (saved_bytes_allocated(layer, x, AUTOCAST),)
              for name, layer in layers.items()} if with_memory else {}
    times = interleaved({name: fwd_bwd(layer, x, grad, modes.get(name)) for name, layer in layers.items()},
                        warmup, repeats, DEVICE)
    rows = []
    for name in layers:
        row = {"shape": f"{n}x{n} r={r}", "method": name, "t": Stats.of(times[name]),
               "x_base": ratio_stats(times[name], times[BASE]), "x_floor": ratio_stats(times[name], times[FLOOR])}
        if with_memory:
            total, act, fresh = memory[name]
            row.update(saved_MiB=total / MiB, saved_ratio=total / memory[BASE][0], saved_act_MiB=act / MiB,
                       saved_fresh_MiB=fresh / MiB)
        rows.append(row)
    return rows


def bench_merged_inference(batch: int, seq: int, warmup: int, repeats: int) -> dict:
    """Merged sine-LoRA BERT (MiniLM-L6 shape, random weights) vs the same base model: eval forward time."""
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    torch.manual_seed(0)
    base = BertModel(config).eval().to(DEVICE)
    adapted = get_peft_model(
        copy.deepcopy(base), SineLoraConfig(r=8, omega=200.0, target_modules=["query", "value", "dense"])
    )
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    unmerged = adapted.eval()
    ids = torch.randint(0, config.vocab_size, (batch, seq)).to(DEVICE)
    with torch.no_grad():
        y_unmerged = unmerged(input_ids=ids).last_hidden_state
        merged = copy.deepcopy(unmerged).merge_and_unload().eval()
        assert torch.allclose(merged(input_ids=ids).last_hidden_state, y_unmerged, atol=1e-3)

        def run(model: nn.Module) -> Callable[[], None]:
            def call() -> None:
                with AUTOCAST():
                    model(input_ids=ids)
            return call

        times = interleaved({"base": run(base), "merged": run(merged), "unmerged": run(unmerged)}, warmup, repeats,
                            DEVICE)
    return times


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="tokens (batch x sequence) per layer call at 768x768")
    parser.add_argument("--tokens-large", type=int, default=1024, help="tokens per layer call at 4096x4096")
    parser.add_argument("--omega", type=float, default=200.0)
    parser.add_argument("--batch", type=int, default=8, help="inference batch size")
    parser.add_argument("--seq", type=int, default=128, help="inference sequence length")
    parser.add_argument("--quick", action="store_true", help="256x256 r=4 (512 tokens) only, batch 2 x 32 inference")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = torch.autocast(bfloat16)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    check_args(parser, args)
    global DEVICE, AUTOCAST
    DEVICE = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.dtype == "bf16":
        AUTOCAST = lambda: torch.autocast(DEVICE.type, dtype=torch.bfloat16)  # noqa: E731
    shapes = [(768, 4, args.tokens), (4096, 8, args.tokens_large)]
    if args.quick:
        shapes, args.batch, args.seq = [(256, 4, 512)], 2, 32
    load = start_load_check(args)
    start = time.perf_counter()
    runs = []
    for run in range(args.runs):
        rows = []
        for n, r, tokens in shapes:
            rows += bench_layers(n, r, tokens, args.omega, args.warmup, args.repeats, with_memory=run == 0)
        inference = bench_merged_inference(args.batch, args.seq, args.warmup, args.repeats)
        runs.append((rows, inference))
    load.finish()
    elapsed = time.perf_counter() - start

    lines = provenance(
        "sine-LoRA benchmark", "benchmarks/bench_peft.py", DEVICE,
        [f"- peft {peft.__version__}; {args.dtype}" + (" (torch.autocast bfloat16; sine argument and sine in fp32)"
                                                      if args.dtype == "bf16" else "") + f"; omega={args.omega}; tokens per call: "
         + ", ".join(f"{t} at {n}x{n}" for n, _, t in shapes) + "; x requires grad, base weight frozen",
         f"- {args.repeats} rounds after {args.warmup} warm-up per run, {args.runs} run(s), methods interleaved; "
         "times are min | median | IQR/median; ratios are the median [IQR] of per-round ratios",
         *load.lines(), *load.banner(), f"- wall time {elapsed:.0f} s"],
    )
    for i, (rows, inference) in enumerate(runs):
        lines += [
            "",
            f"## Run {i + 1}: layer fwd+bwd",
            "",
            "| shape | method | min ms | median ms | IQR | / base | / 3-GEMM floor |"
            + (" saved for bwd MiB | saved / base | saved excl. params MiB | saved, allocated by the step MiB |"
               if i == 0 else ""),
            "|---|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if i == 0 else ""),
        ]
        for row in rows:
            line = (f"| {row['shape']} | {row['method']} | {row['t'].ms()} | {fmt_ratio(row['x_base'])} | "
                    f"{fmt_ratio(row['x_floor'])} |")
            if i == 0:
                line += (f" {row['saved_MiB']:.1f} | {row['saved_ratio']:.2f}x | {row['saved_act_MiB']:.1f} | "
                         f"{row['saved_fresh_MiB']:.1f} |")
            lines.append(line)
        lines += [
            "",
            f"## Run {i + 1}: inference, BERT of MiniLM-L6 shape (384 hidden, 6 layers), batch {args.batch} x {args.seq} tokens",
            "",
            "| model | min ms | median ms | IQR | / base |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, label in (("base", "base model"), ("merged", "merged sine-LoRA (merge_and_unload)"),
                            ("unmerged", "unmerged sine-LoRA (eval)")):
            lines.append(f"| {label} | {Stats.of(inference[name]).ms()} | "
                         f"{fmt_ratio(ratio_stats(inference[name], inference['base']))} |")

    lines += ["", f"## Targets (issue 19), over {args.runs} run(s)", ""]
    for n, r, _ in shapes:
        shape = f"{n}x{n} r={r}"
        for method in (COMPILED, EAGER):
            ratios = [next(x for x in rows if x["shape"] == shape and x["method"] == method)["x_floor"].median
                      for rows, _ in runs]
            held = sum(v <= TARGET for v in ratios)
            lines.append(f"- {shape}, {method}: fwd+bwd / 3-GEMM floor " + ", ".join(f"{v:.2f}x" for v in ratios)
                         + f" (target <= {TARGET}x: held in {held} of {len(ratios)} runs)")
    rows0 = runs[0][0]
    for n, r, _ in shapes:
        shape = f"{n}x{n} r={r}"
        ours = next(x for x in rows0 if x["shape"] == shape and x["method"] == COMPILED)
        lora = next(x for x in rows0 if x["shape"] == shape and x["method"] == "PEFT LoRA")
        ok = ours["saved_MiB"] <= lora["saved_MiB"] * 1.01
        lines.append(f"- {shape}: saved for backward {ours['saved_MiB']:.1f} MiB vs PEFT LoRA {lora['saved_MiB']:.1f} MiB "
                     f"(target <= LoRA + 1%: {'met' if ok else 'MISSED'})")
    for key, label, target in (("merged", "merged", 1.03), ("unmerged", "unmerged (eval)", 1.05)):
        ratios = [ratio_stats(inf[key], inf["base"]).median for _, inf in runs]
        held = sum(v <= target for v in ratios)
        lines.append(f"- {label} inference / base: " + ", ".join(f"{v:.3f}x" for v in ratios)
                     + f" (target <= {target}x: held in {held} of {len(ratios)} runs)")
    report = "\n".join(lines) + "\n"
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
