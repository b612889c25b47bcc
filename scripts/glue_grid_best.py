"""Steps 2 and 4 of issue 14: read the committed grid folders results/glue/grid_k4_<task>_lr<lr>/summary.csv (LoRA,
sine-LoRA), results/glue/dora_grid_k4_<task>_lr<lr>/summary.csv (DoRA, sine-DoRA) and
results/glue/peers_grid_k4_<task>_lr<lr>/summary.csv (the high-rank peers hira, randlora, vera).

    python scripts/glue_grid_best.py TASK METHOD                  # prints METHOD's best lr (omega 200)
    python scripts/glue_grid_best.py TASK METHOD --next L1 L2 ..  # prints the ladder's next lr past the edge
                                                                  # where the best sits, or nothing
    python scripts/glue_grid_best.py TASK METHOD --table          # one line: every lr run and its score
    python scripts/glue_grid_best.py TASK omega [--table]         # sine-LoRA's best omega at its best lr
    ... --prefix P                                                # read results/glue/P grid_k4_... instead (e.g.
                                                                  # offset1_: sine-LoRA's offset start, rms 1)
"""
import csv
import glob
import re
import sys

from ladder import best, cli, table

GRIDS = "results/glue/{}grid_k4_{}_lr{}/summary.csv"
PREFIX = {"hira": "peers_", "randlora": "peers_", "vera": "peers_", "dora": "dora_", "sine-dora": "dora_"}


PREFIX_OVERRIDE = None  # --prefix P: every method's grid folders start with P


def _grids(task, method, lr="*"):
    prefix = PREFIX_OVERRIDE if PREFIX_OVERRIDE is not None else PREFIX.get(method, "")
    return GRIDS.format(prefix, task, lr)


def _rows(task, method, lr="*"):
    for path in glob.glob(_grids(task, method, lr)):
        rate = re.search(r"_lr([^/]+)/summary.csv$", path).group(1)
        with open(path) as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            if row["metric"]:
                yield rate, row


def lr_scores(task, method):
    """{lr: METHOD's metric at omega 200 (the omega of every lr grid; empty for methods without one)}."""
    out = {lr: float(row["metric"]) for lr, row in _rows(task, method)
           if row["method"] == method and float(row["omega"] or 200) == 200.0}
    if not out:
        sys.exit(f"no finished grid rows for {method} on {task} under {_grids(task, method)}")
    return out


def omega_scores(task):
    """{omega: sine-LoRA's metric} at sine-LoRA's best lr, and that lr."""
    lr = best(lr_scores(task, "sine-lora"))
    return {f"{float(row['omega']):g}": float(row["metric"]) for _, row in _rows(task, "sine-lora", lr)
            if row["method"] == "sine-lora"}, lr


def main(argv):
    global PREFIX_OVERRIDE
    if "--prefix" in argv:
        at = argv.index("--prefix")
        if at + 1 >= len(argv):
            sys.exit("--prefix needs a value (the grid folders' prefix, e.g. offset1_; '' for LoRA's)")
        PREFIX_OVERRIDE = argv[at + 1]
        argv = argv[:at] + argv[at + 2:]
    if len(argv) < 2:
        sys.exit("usage: glue_grid_best.py TASK METHOD [--next L1 L2 .. | --table] | TASK omega [--table]")
    task, what = argv[:2]
    if what == "omega":
        score, lr = omega_scores(task)
        if "--table" in argv:
            labels, _, values = table(score).partition(" = ")
            print(f"omega {labels} at {lr} = {values}")
        else:
            print(best(score))
        return
    score = lr_scores(task, what)
    if "--table" in argv:
        print(f"{what} {table(score)}")
        return
    cli(score, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
