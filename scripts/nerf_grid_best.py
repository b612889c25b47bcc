"""Issue 15: the best point of the width-64 NeRF's tuning grids (sine, k = 5, seed 0, PSNR on the training views
held out by --val-views), read from the grid folders results/nerf/protocol/w64_lr_grid_<lr>/summary.csv.

    python scripts/nerf_grid_best.py omega               # sine's best omega at lr 2e-3
    python scripts/nerf_grid_best.py sine-lr OMEGA       # sine's best lr at that omega, over the lr folders
    python scripts/nerf_grid_best.py lr METHOD           # full's or lowrank's (k = 5) best lr, over the lr folders
    ... --next L1 L2 ..                                  # the ladder's next label past the edge where the
                                                         # best sits, or nothing
    ... --table                                          # one line: every label run and its PSNR
    python scripts/nerf_grid_best.py double OMEGA        # sine (at OMEGA) - low-rank, fern seed 0, per rank of
                                                         # the doubled-budget folder: the table's 12000 steps
                                                         # beside the doubled run's 24000
"""
import csv
import glob
import re
import sys

from ladder import cli, table

GRIDS = "results/nerf/protocol/w64_lr_grid_{}/summary.csv"
TABLE = "results/nerf/nerf_cpu_w64/summary.csv"
DOUBLE = "results/nerf/protocol/w64_double_s24000/summary.csv"


def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _rows(path, method):
    """METHOD's finished grid rows (k = 5; full has rank 0)."""
    return [r for r in _csv(path)
            if r["method"] == method and r["rank"] == ("0" if method == "full" else "5") and r["psnr"]]


def _sine_k5(path):
    return _rows(path, "sine")


def omega_scores():
    path = GRIDS.format("2e-3")
    return {f"{float(r['omega']):g}": float(r["psnr"]) for r in _sine_k5(path)}, path


def lr_scores(method, omega=None):
    """{lr: METHOD's val PSNR} over the lr folders (sine: at `omega`)."""
    out = {}
    for path in glob.glob(GRIDS.format("*")):
        lr = re.search(r"w64_lr_grid_([^/]+)/", path).group(1)
        out.update({lr: float(r["psnr"]) for r in _rows(path, method)
                    if omega is None or float(r["omega"]) == float(omega)})
    return out, GRIDS.format("*")


def gaps(path, omega):
    """{rank: sine (at omega) - low-rank PSNR} of fern, seed 0, in one results file (ranks with both rows)."""
    psnr = {(r["method"], int(r["rank"])): float(r["psnr"]) for r in _csv(path)
            if r["scene"] == "fern" and r["seed"] == "0" and r["psnr"]
            and (r["method"] == "lowrank" or (r["method"] == "sine" and float(r["omega"]) == float(omega)))}
    return {k: psnr[("sine", k)] - psnr[("lowrank", k)] for m, k in psnr if m == "sine" and ("lowrank", k) in psnr}


def double_text(omega):
    """'sine - low-rank at k = 5: +0.12 dB at 12000 steps, +0.51 at 24000; k = 10: ..' over the doubled ranks."""
    short, long = gaps(TABLE, omega), gaps(DOUBLE, omega)
    ranks = sorted(k for k in long if k in short)
    if not ranks:
        sys.exit(f"no rank with sine (omega {omega}) and low-rank rows in both {TABLE} and {DOUBLE}")
    return "sine - low-rank " + "; ".join(
        f"{'at ' if i == 0 else ''}k = {k}: {short[k]:+.2f} dB at 12000 steps, {long[k]:+.2f} at 24000"
        for i, k in enumerate(ranks))


def main(argv):
    if argv[:1] == ["double"]:
        if len(argv) < 2:
            sys.exit("usage: nerf_grid_best.py double OMEGA")
        print(double_text(argv[1]))
        return
    usage = ("usage: nerf_grid_best.py omega | sine-lr OMEGA | lr full|lowrank [--next L1 L2 .. | --table] | "
             "double OMEGA")
    if not argv or argv[0] not in ("omega", "sine-lr", "lr") or (argv[0] != "omega" and len(argv) < 2) \
            or (argv[0] == "lr" and argv[1] not in ("full", "lowrank")):
        sys.exit(usage)
    if argv[0] == "omega":
        (score, where), what, rows = omega_scores(), "sine's omega at 2e-3", "sine k = 5"
    elif argv[0] == "sine-lr":
        (score, where), what, rows = lr_scores("sine", argv[1]), f"sine's rate at omega {argv[1]}", "sine k = 5"
    else:
        (score, where), what = lr_scores(argv[1]), f"{argv[1]}'s rate"
        rows = "full" if argv[1] == "full" else "lowrank k = 5"
    if not score:
        sys.exit(f"no finished {rows} rows in {where}")
    if "--table" in argv:
        print(f"{what}: {table(score)}")
        return
    cli(score, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
