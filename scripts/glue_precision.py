"""The precision cross-check of GLUE Tab. 3 (issue 14; docs/glue.md): the cells fine-tuned both in fp32
(results/glue/all-MiniLM-L6-v2-tab3: the table) and in bf16 autocast with eager attention
(results/glue/all-MiniLM-L6-v2-tab3-bf16: 9 cells run while the table was in bf16, before it moved back to fp32),
paired by (task, method, rank, omega, seed).

    python scripts/glue_precision.py           # markdown: per task and method, both precisions and bf16 - fp32
    python scripts/glue_precision.py --line    # one line for the summary's protocol checks

A change of precision moves every fine-tune a little, like another seed would; what matters is whether it moves
one method more than the other, so the line also pairs sine-LoRA - LoRA across the two precisions.
"""
import csv
import os
import sys

from sinelr.stats import paired_comparison

FP32 = "results/glue/all-MiniLM-L6-v2-tab3/summary.csv"
BF16 = "results/glue/all-MiniLM-L6-v2-tab3-bf16/summary.csv"
SINE_OF = {"lora": "sine-lora", "dora": "sine-dora"}


def cells(path):
    """{(task, method, rank, omega, seed): metric} of a summary.csv (an absent file has none)."""
    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return {(r["task"], r["method"], int(r["rank"]), r["omega"], int(r["seed"])): float(r["metric"])
                for r in csv.DictReader(fh) if r["metric"]}


def _interval(c):
    if c.n < 2:
        return f"{c.mean:+.2f} ({c.n} pair{'s' if c.n != 1 else ''}: no interval)"
    return f"{c.mean:+.2f} [{c.low:+.2f}, {c.high:+.2f}] over {c.n} pairs"


def _sine_gaps(values):
    """{(task, rank, seed, base): sine - base} where both of a pair ran (omega 200's row for the sine method)."""
    out = {}
    for (task, method, rank, omega, seed), v in values.items():
        sine = SINE_OF.get(method)
        other = [x for k, x in values.items() if k[:3] == (task, sine, rank) and k[4] == seed]
        if sine and len(other) == 1:
            out[task, rank, seed, method] = other[0] - v
    return out


def line(fp32, bf16):
    shared = sorted(set(fp32) & set(bf16))
    if not shared:
        return "precision cross-check (bf16 autocast + eager attention vs fp32): no cell has run in both yet"
    each = paired_comparison({i: fp32[k] for i, k in enumerate(shared)}, {i: bf16[k] for i, k in enumerate(shared)})
    worst = max(shared, key=lambda k: abs(bf16[k] - fp32[k]))
    text = (f"precision cross-check (the same cells in fp32, results/glue/all-MiniLM-L6-v2-tab3: the table, and in "
            f"bf16 autocast + eager attention, results/glue/all-MiniLM-L6-v2-tab3-bf16; scripts/glue_precision.py): bf16 - fp32 {_interval(each)}, largest "
            f"{bf16[worst] - fp32[worst]:+.2f} ({worst[0]} {worst[1]} k={worst[2]} seed {worst[4]})")
    g32, g16 = _sine_gaps(fp32), _sine_gaps(bf16)
    both = sorted(set(g32) & set(g16))
    if both:
        gap = paired_comparison({i: g32[k] for i, k in enumerate(both)}, {i: g16[k] for i, k in enumerate(both)})
        text += (f"; the sine - baseline gap moves by {_interval(gap)} (fp32 mean "
                 f"{sum(g32[k] for k in both) / len(both):+.2f}, bf16 {sum(g16[k] for k in both) / len(both):+.2f})")
    return text


def table(fp32, bf16):
    shared = sorted(set(fp32) & set(bf16))
    lines = ["| task | method | k | seed | fp32 | bf16 | bf16 - fp32 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {t} | {m} | {k} | {s} | {fp32[t, m, k, w, s]:.2f} | {bf16[t, m, k, w, s]:.2f} | "
              f"{bf16[t, m, k, w, s] - fp32[t, m, k, w, s]:+.2f} |" for t, m, k, w, s in shared]
    return "\n".join(lines)


if __name__ == "__main__":
    a, b = cells(FP32), cells(BF16)
    print(line(a, b) if "--line" in sys.argv[1:] else table(a, b) + "\n\n" + line(a, b))
