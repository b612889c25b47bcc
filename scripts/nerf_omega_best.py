"""Issue 15: sine's omega on the width-64 NeRF, read from results/nerf/protocol/w64_lr_grid_2e-3/summary.csv
(sine, k = 5, seed 0, PSNR on the held-out training views).

    python scripts/nerf_omega_best.py                   # prints the best omega
    python scripts/nerf_omega_best.py --next W1 W2 ..   # prints the ladder's next omega past the edge where
                                                        # the best sits, or nothing
"""
import csv
import sys

from ladder import cli

GRID = "results/nerf/protocol/w64_lr_grid_2e-3/summary.csv"


def scores():
    out = {f"{float(r['omega']):g}": float(r["psnr"]) for r in csv.DictReader(open(GRID))
           if r["method"] == "sine" and r["rank"] == "5" and r["psnr"]}
    if not out:
        sys.exit(f"no finished sine k = 5 rows in {GRID}")
    return out


def main(argv):
    cli(scores(), argv)


if __name__ == "__main__":
    main(sys.argv[1:])
