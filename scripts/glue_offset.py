"""Sine-LoRA's offset start against GLUE Tab. 3 (docs/glue.md, "The offset start"): the sine-LoRA rows of a folder
fine-tuned with --init-argument-rms under Tab. 3's own schedule, rates and seeds (`glue_protocol.sh tab3-offset`),
paired by (task, rank, seed) with Tab. 3's LoRA rows and its sine-LoRA rows started at B = 0 (PEFT's start).

    python scripts/glue_offset.py                  # markdown to stdout
    python scripts/glue_offset.py --output results/glue/all-MiniLM-L6-v2-tab3-offset1/versus_tab3.md

The verdict is the protocol's (EVIDENCE.md): paired by seed on the average over Tab. 3's learned tasks (read from its
verdicts.json, so both tables count the same tasks), 95% t-interval; each task alone beside it. The script refuses
folders whose settings differ in anything but the start (a comparison across schedules would be mislabelled).
"""
import argparse
import csv
import json
import os
import subprocess
import sys

from sinelr.stats import mean_std, paired_comparison, seed_averages

TAB3 = "results/glue/all-MiniLM-L6-v2-tab3"
OFFSET = "results/glue/all-MiniLM-L6-v2-tab3-offset1"
# config keys that may differ between the two folders: where they write, what subset of the grid a command ran, the
# start itself, and the summary's own text
FREE_KEYS = {"output_dir", "run_dir", "methods", "ranks", "seeds", "tasks", "init_argument_rms", "note", "protocol",
             "render_only", "device", "checkpoint_every", "keep_checkpoints", "plot_task", "plot_rank", "omegas"}


def _json(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        sys.exit(f"glue_offset.py: {path} is missing" + (" (re-render Tab. 3: bash scripts/glue_protocol.sh "
                                                         "tab3-render)" if name == "verdicts.json" else ""))
    with open(path) as fh:
        return json.load(fh)


def rows(folder):
    """{(task, method, rank, seed): (metric, lr)} of a summary.csv's main-omega rows (omega 200 for the sine)."""
    config = _json(folder, "config.json")
    path = os.path.join(folder, "summary.csv")
    if not os.path.isfile(path):
        sys.exit(f"glue_offset.py: {path} is missing (no rows yet)")
    out = {}
    with open(path) as fh:
        for r in csv.DictReader(fh):
            if r["metric"] and (not r["omega"] or float(r["omega"]) == float(config["omega"])):
                out[r["task"], r["method"], int(r["rank"]), int(r["seed"])] = (float(r["metric"]), float(r["lr"]))
    return out


def check_settings(tab3, offset):
    """The two folders' configs differ only in FREE_KEYS, and the offset folder did start offset."""
    a, b = _json(tab3, "config.json"), _json(offset, "config.json")
    if not b.get("init_argument_rms"):
        sys.exit(f"glue_offset.py: {offset} was not run with --init-argument-rms (its config has "
                 f"init_argument_rms={b.get('init_argument_rms')!r})")
    differ = sorted(k for k in set(a) | set(b) if k not in FREE_KEYS and a.get(k) != b.get(k))
    if differ:
        sys.exit("glue_offset.py: the folders differ in more than the start: "
                 + "; ".join(f"{k}: {a.get(k)!r} (Tab. 3) vs {b.get(k)!r} (offset)" for k in differ))
    return b["init_argument_rms"]


def _cell(source, method, rank, task):
    """{seed: metric} of one (method, rank, task) of a folder's rows."""
    return {s: v[0] for (t, m, r, s), v in source.items() if (t, m, r) == (task, method, rank)}


def _text(c):
    return c.interval_text() if c.n else ""


def report(tab3, offset):
    rms = check_settings(tab3, offset)
    learned = _json(tab3, "verdicts.json")["learned"]
    base, start = rows(tab3), rows(offset)
    mine = {k: v for k, v in start.items() if k[1] == "sine-lora"}
    wrong = sorted((k, v[1], base[k][1]) for k, v in mine.items() if k in base and v[1] != base[k][1])
    if wrong:
        sys.exit("glue_offset.py: rows at another rate than Tab. 3's sine-LoRA: "
                 + "; ".join(f"{k[0]} k={k[2]} seed {k[3]}: {lr} vs {lr3}" for k, lr, lr3 in wrong))
    tasks = [t for t in ("cola", "sst2", "mrpc", "stsb", "rte") if any(k[0] == t for k in mine)]
    lines = [f"# Sine-LoRA from an offset start (argument rms {rms:g}) against Tab. 3", "",
             f"Offset rows: {offset}/summary.csv ({len(mine)} sine-LoRA rows); paired with {tab3}/summary.csv by "
             f"(task, rank, seed). Learned tasks (Tab. 3's verdicts.json): {', '.join(learned)}. Verdict: mean of "
             "the per-seed differences on the learned-task average, 95% t-interval (`sinelr.stats.paired_comparison`). "
             f"git {_sha()}; command: python scripts/glue_offset.py {' '.join(sys.argv[1:])}".rstrip(), ""]
    head = ["comparison", "seeds", "learned-task avg", "verdict"] + [t if t in learned else f"{t} (left out)"
                                                                      for t in tasks]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = ["| method | k | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for k in sorted({key[2] for key in mine}):
        for label, method, source in (("LoRA (Tab. 3)", "lora", base), ("sine-LoRA B = 0 (Tab. 3)", "sine-lora", base),
                                      (f"sine-LoRA offset {rms:g}", "sine-lora", start)):
            vals = [_cell(source, method, k, t) for t in tasks]
            means.append(f"| {label} | {k} | " + " | ".join(
                (f"{mean_std(list(v.values()))[0]:.2f} ({len(v)})" if v else "") for v in vals) + " |")
        offset_cells = {t: _cell(start, "sine-lora", k, t) for t in tasks}
        for label, method, rank in (("LoRA", "lora", k), ("sine-LoRA B = 0", "sine-lora", k),
                                    ("LoRA", "lora", 2 * k)):
            other = {t: _cell(base, method, rank, t) for t in tasks}
            per = {t: paired_comparison(other[t], offset_cells[t]) for t in tasks}
            if not any(c.n for c in per.values()):
                continue
            avg = paired_comparison(seed_averages(other, learned), seed_averages(offset_cells, learned),
                                    label, "offset")
            table.append(f"| offset k={k} - {label} k={rank} | {avg.n} | {_text(avg) or 'n/a'} | {avg.verdict} | "
                         + " | ".join(_text(per[t]) for t in tasks) + " |")
    return "\n".join(lines + ["Means over seeds (n):", ""] + means
                     + ["", "Paired differences (offset sine-LoRA minus the Tab. 3 row named):", ""] + table) + "\n"


def _sha():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tab3-dir", default=TAB3)
    p.add_argument("--offset-dir", default=OFFSET)
    p.add_argument("--output", help="write the markdown here (default: stdout)")
    args = p.parse_args()
    text = report(args.tab3_dir, args.offset_dir)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
