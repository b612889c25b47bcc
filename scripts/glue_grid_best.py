"""Step 2 of issue 14: read the committed grid folders results/glue/grid_k4_<task>_lr<lr>/summary.csv.

    python scripts/glue_grid_best.py TASK METHOD                  # prints METHOD's best lr (omega 200)
    python scripts/glue_grid_best.py TASK METHOD --next L1 L2 ..  # prints the ladder's next lr past the edge
                                                                  # where the best sits, or nothing
"""
import csv
import glob
import re
import sys

from ladder import cli


def scores(task, method):
    out = {}
    for path in glob.glob(f"results/glue/grid_k4_{task}_lr*/summary.csv"):
        lr = re.search(r"_lr([^/]+)/summary.csv$", path).group(1)
        for row in csv.DictReader(open(path)):
            if row["method"] == method and float(row["omega"] or 200) == 200.0 and row["metric"]:
                out[lr] = float(row["metric"])
    if not out:
        sys.exit(f"no finished grid rows for {method} on {task} under results/glue/grid_k4_{task}_lr*/")
    return out


def main(argv):
    task, method = argv[:2]
    cli(scores(task, method), argv)


if __name__ == "__main__":
    main(sys.argv[1:])
