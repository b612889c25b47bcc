"""What is left of GLUE Tab. 3 (issue 14) and about how long it takes: the cells of `glue_protocol.sh tab3` (tasks x
lora, sine-lora x ranks 1, 2, 4, 8 x seeds) and then of `tab3-dora` (dora, sine-dora x ranks 4, 8; the four learned
tasks, then RTE) with no row yet in the table's summary.csv, in the order the script runs them, each with the median
train_seconds of the rows already there for its (task, method) (else its task's, else every row's: a (task, method)
with no row yet is estimated from the task's other methods; DoRA's steps cost what LoRA's do, within 3%), and the
sum in core-hours per step.

    python scripts/glue_remaining.py                  # the table (results/glue/all-MiniLM-L6-v2-tab3, fp32)
    python scripts/glue_remaining.py --csv PATH       # another table
    python scripts/glue_remaining.py --list           # every remaining cell, not only the totals

A planning aid: the estimate is the table's own past rows on whatever machine ran them, not a measurement.
"""
import csv
import os
import statistics
import sys

TABLE = "results/glue/all-MiniLM-L6-v2-tab3/summary.csv"
TASKS = ["cola", "sst2", "stsb", "mrpc", "rte"]
SEEDS = [0, 1, 2]
# (step, methods, groups of (tasks, ranks)): the order of glue_protocol.sh tab3 (k = 4, then 8, then 1 and 2), then
# tab3-dora (the learned tasks at k = 4 and 8, then RTE)
STEPS = [("tab3", ["lora", "sine-lora"], [(TASKS, [4]), (TASKS, [8]), (TASKS, [1, 2])]),
         ("tab3-dora", ["dora", "sine-dora"], [(TASKS[:4], [4, 8]), (["rte"], [4, 8])])]


def remaining(rows, steps=STEPS):
    """The (rank, seed, task, method) cells without a row, per step, in the script's order (its groups of tasks and
    ranks, each in the runner's point order: rank, seed, task, method): {step: [cell, ...]}."""
    done = {(int(r["rank"]), int(r["seed"]), r["task"], r["method"]) for r in rows if r["metric"]}
    return {step: [(k, s, t, m) for tasks, ranks in groups for k in ranks for s in SEEDS for t in tasks for m in methods
                   if (k, s, t, m) not in done]
            for step, methods, groups in steps}


def estimate(rows):
    """A function (task, method) -> seconds: the median train_seconds of the rows of that (task, method), else of
    the task, else of every row (None when there are no rows)."""
    secs = [(r["task"], r["method"], float(r["train_seconds"])) for r in rows if r.get("train_seconds")]

    def median(pick):
        values = [s for t, m, s in secs if pick(t, m)]
        return statistics.median(values) if values else None

    def one(task, method):
        for pick in (lambda t, m: (t, m) == (task, method), lambda t, m: t == task, lambda t, m: True):
            value = median(pick)
            if value is not None:
                return value
        return None
    return one


def main(argv):
    path = argv[argv.index("--csv") + 1] if "--csv" in argv else TABLE
    if not os.path.isfile(path):
        sys.exit(f"no table at {path}")
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    secs = estimate(rows)
    print(f"{path}: {len(rows)} rows (estimates: median train_seconds of the table's own rows per task and method)")
    for step, left in remaining(rows).items():
        total = sum(secs(t, m) or 0.0 for _, _, t, m in left)
        print(f"{step}: {len(left)} cells left, about {total / 3600:.1f} core-hours")
        if "--list" in argv:
            for k, s, t, m in left:
                est = secs(t, m)
                print(f"  k={k} seed {s} {t} {m}: ~{est / 60:.0f} min" if est else f"  k={k} seed {s} {t} {m}: no estimate")


if __name__ == "__main__":
    main(sys.argv[1:])
