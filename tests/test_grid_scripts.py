"""The protocol scripts' grid readers (scripts/ladder.py, glue_grid_best.py, nerf_grid_best.py): the best point, the
ladder's next point past an edge, and the one-line tables the summaries quote, on grid folders written here."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from ladder import best, next_past_edge  # noqa: E402

LADDER = ["8e-5", "2.5e-4", "7e-4", "2e-3", "6e-3", "1.8e-2"]


def test_best_is_the_highest_score():
    assert best({"7e-4": 80.0, "2e-3": 88.9, "6e-3": 55.0}) == "2e-3"


@pytest.mark.parametrize("score, expected", [
    ({"7e-4": 80.0, "2e-3": 88.9, "6e-3": 55.0}, None),          # interior: the grid is done
    ({"7e-4": 90.0, "2e-3": 88.9, "6e-3": 55.0}, "2.5e-4"),      # best at the lower edge: one step down
    ({"7e-4": 80.0, "2e-3": 88.9, "6e-3": 95.0}, "1.8e-2"),      # best at the upper edge: one step up
    ({"8e-5": 90.0, "2.5e-4": 80.0}, None),                      # lower edge is the ladder's end
    ({"6e-3": 70.0, "1.8e-2": 90.0}, None),                      # upper edge is the ladder's end
    ({"5e-3": 99.0, "2e-3": 80.0}, None),                        # best off the ladder: no guess
])
def test_next_past_edge(score, expected):
    assert next_past_edge(score, LADDER) == expected


def test_next_past_edge_with_a_gap_in_the_grid():
    # the best is interior among the labels that ran, even where the ladder has unrun labels between them
    assert next_past_edge({"8e-5": 10.0, "7e-4": 90.0, "6e-3": 50.0}, LADDER) is None
    # best at the lower edge of a grid that skipped a label: the ladder's neighbour of the best, not the gap
    assert next_past_edge({"7e-4": 90.0, "6e-3": 50.0}, LADDER) == "2.5e-4"


def _write(path, fields, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _run(script, cwd, *args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=cwd, capture_output=True,
                          text=True)


GLUE_FIELDS = ["task", "method", "rank", "omega", "seed", "metric"]


@pytest.fixture
def glue_grid(tmp_path):
    grid = tmp_path / "results" / "glue"
    rows = {"7e-4": [("lora", "", 87.78), ("sine-lora", "200.0", 88.67), ("sine-lora", "50.0", 88.31),
                     ("sine-lora", "800.0", 86.40)],
            "2e-3": [("lora", "", 88.97), ("sine-lora", "200.0", 86.12)],
            "6e-3": [("lora", "", 80.77), ("sine-lora", "200.0", 55.47), ("full", "", "")]}  # "" = unfinished
    for lr, items in rows.items():
        _write(grid / f"grid_k4_sst2_lr{lr}" / "summary.csv", GLUE_FIELDS,
               [dict(task="sst2", method=m, rank=4, omega=o, seed=0, metric=v) for m, o, v in items])
    return tmp_path


def test_glue_grid_best_reads_the_lr_folders(glue_grid):
    assert _run("glue_grid_best.py", glue_grid, "sst2", "lora").stdout == "2e-3\n"
    # sine-LoRA's omega 50 / 800 rows do not count as lr points (only omega 200 does)
    assert _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora").stdout == "7e-4\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora", "--table").stdout == \
        "sine-lora 7e-4 / 2e-3 / 6e-3 = 88.67 / 86.12 / 55.47\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora", "--next", *LADDER).stdout == "2.5e-4\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "lora", "--next", *LADDER).stdout == ""


def test_glue_grid_best_reads_another_prefix_only_when_asked(glue_grid):
    """--prefix offset1_ (sine-LoRA's offset start) reads its own folders, never the B = 0 grid beside them."""
    grid = glue_grid / "results" / "glue"
    for lr, v in (("7e-4", 84.0), ("2e-3", 86.5)):
        _write(grid / f"offset1_grid_k4_sst2_lr{lr}" / "summary.csv", GLUE_FIELDS,
               [dict(task="sst2", method="sine-lora", rank=4, omega="200.0", seed=0, metric=v)])
    assert _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora", "--prefix", "offset1_", "--table").stdout == \
        "sine-lora 7e-4 / 2e-3 = 84.00 / 86.50\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora", "--prefix", "offset1_", "--next",
                *LADDER).stdout == "6e-3\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora").stdout == "7e-4\n"  # the B = 0 grid, unchanged
    assert _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora", "--prefix", "", "--table").stdout == \
        _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora", "--table").stdout
    missing = _run("glue_grid_best.py", glue_grid, "sst2", "sine-lora", "--prefix", "offset2_")
    assert missing.returncode != 0 and "offset2_grid_k4_sst2_lr*" in missing.stderr
    assert "--prefix needs a value" in _run("glue_grid_best.py", glue_grid, "sst2", "lora", "--prefix").stderr


def test_glue_grid_best_reads_the_peers_from_their_own_folders(glue_grid):
    for lr, score in (("6e-3", 80.0), ("1.8e-2", 86.0)):
        _write(glue_grid / "results" / "glue" / f"peers_grid_k4_sst2_lr{lr}" / "summary.csv", GLUE_FIELDS,
               [dict(task="sst2", method="vera", rank=2688, omega="", seed=0, metric=score),
                dict(task="sst2", method="hira", rank=4, omega="", seed=0, metric=score - 10)])
    assert _run("glue_grid_best.py", glue_grid, "sst2", "vera", "--table").stdout == "vera 6e-3 / 1.8e-2 = 80.00 / 86.00\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "hira", "--next", *LADDER, "5e-2").stdout == "5e-2\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "lora", "--table").stdout.startswith("lora 7e-4 / 2e-3 / 6e-3 =")


def test_glue_grid_best_omega_is_read_at_the_best_rate(glue_grid):
    assert _run("glue_grid_best.py", glue_grid, "sst2", "omega", "--table").stdout == \
        "omega 50 / 200 / 800 at 7e-4 = 88.31 / 88.67 / 86.40\n"
    assert _run("glue_grid_best.py", glue_grid, "sst2", "omega").stdout == "200\n"


def test_glue_grid_best_names_what_is_missing(glue_grid):
    done = _run("glue_grid_best.py", glue_grid, "sst2", "full")  # only an unfinished row
    assert done.returncode != 0 and "no finished grid rows for full on sst2" in done.stderr
    assert "results/glue/grid_k4_sst2_lr*/summary.csv" in done.stderr
    dora = _run("glue_grid_best.py", glue_grid, "sst2", "sine-dora")  # DoRA's grids have their own folders
    assert dora.returncode != 0 and "results/glue/dora_grid_k4_sst2_lr*/summary.csv" in dora.stderr
    peer = _run("glue_grid_best.py", glue_grid, "sst2", "vera")
    assert peer.returncode != 0 and "results/glue/peers_grid_k4_sst2_lr*/summary.csv" in peer.stderr
    assert _run("glue_grid_best.py", glue_grid, "sst2").returncode != 0  # usage


def test_nerf_grid_best_reads_omega_and_lr_folders(tmp_path):
    fields = ["method", "rank", "omega", "seed", "psnr"]
    grids = tmp_path / "results" / "nerf" / "protocol"
    _write(grids / "w64_lr_grid_2e-3" / "summary.csv", fields,
           [dict(method="sine", rank=5, omega=w, seed=0, psnr=p) for w, p in
            (("10", 21.07), ("30", 21.75), ("100", 21.01), ("300", 20.34))]
           + [dict(method="sine", rank=1, omega="100", seed=0, psnr=30.0),  # another rank: ignored
              dict(method="lowrank", rank=5, omega="", seed=0, psnr=30.0)])
    _write(grids / "w64_lr_grid_7e-4" / "summary.csv", fields, [dict(method="sine", rank=5, omega="30", seed=0, psnr=20.49)])
    assert _run("nerf_grid_best.py", tmp_path, "omega").stdout == "30\n"
    assert _run("nerf_grid_best.py", tmp_path, "omega", "--table").stdout == \
        "sine's omega at 2e-3: 10 / 30 / 100 / 300 = 21.07 / 21.75 / 21.01 / 20.34\n"
    assert _run("nerf_grid_best.py", tmp_path, "sine-lr", "30", "--table").stdout == \
        "sine's rate at omega 30: 7e-4 / 2e-3 = 20.49 / 21.75\n"
    assert _run("nerf_grid_best.py", tmp_path, "sine-lr", "30", "--next", "2.5e-4", "7e-4", "2e-3", "6e-3").stdout \
        == "6e-3\n"
    missing = _run("nerf_grid_best.py", tmp_path, "sine-lr", "1000")
    assert missing.returncode != 0 and "no finished sine k = 5 rows" in missing.stderr
    # full (rank 0) and low-rank (k = 5) rates over the same folders; the low-rank k = 5 row at 2e-3 counts
    assert _run("nerf_grid_best.py", tmp_path, "lr", "lowrank", "--table").stdout == "lowrank's rate: 2e-3 = 30.00\n"
    assert "no finished full rows" in _run("nerf_grid_best.py", tmp_path, "lr", "full").stderr
    assert _run("nerf_grid_best.py", tmp_path, "lr", "sine").returncode != 0  # usage: sine goes through sine-lr


def test_nerf_double_compares_the_tables_seed_0_fern_gap_with_the_doubled_runs(tmp_path):
    fields = ["scene", "method", "rank", "omega", "seed", "psnr"]
    res = tmp_path / "results" / "nerf"

    def row(method, rank, psnr, scene="fern", seed=0, omega="30.0"):
        return dict(scene=scene, method=method, rank=rank, omega=omega if method == "sine" else "0.0", seed=seed,
                    psnr=psnr)

    _write(res / "nerf_cpu_w64" / "summary.csv", fields, [
        row("lowrank", 5, 21.50), row("sine", 5, 21.62), row("lowrank", 10, 23.01), row("sine", 10, 22.70),
        row("sine", 5, 30.0, omega="100.0"), row("lowrank", 5, 10.0, seed=1), row("lowrank", 5, 10.0, scene="flower"),
        row("lowrank", 1, 16.0), row("sine", 1, 18.0)])  # k = 1 was not doubled: left out
    _write(res / "protocol" / "w64_double_s24000" / "summary.csv", fields, [
        row("lowrank", 5, 21.90), row("sine", 5, 22.41), row("lowrank", 10, 23.50)])
    out = _run("nerf_grid_best.py", tmp_path, "double", "30")
    assert out.stdout == "sine - low-rank at k = 5: +0.12 dB at 12000 steps, +0.51 at 24000\n"  # k = 10: no sine yet
    _write(res / "protocol" / "w64_double_s24000" / "summary.csv", fields, [
        row("lowrank", 5, 21.90), row("sine", 5, 22.41), row("lowrank", 10, 23.50), row("sine", 10, 23.75)])
    assert _run("nerf_grid_best.py", tmp_path, "double", "30").stdout == (
        "sine - low-rank at k = 5: +0.12 dB at 12000 steps, +0.51 at 24000; k = 10: -0.31 dB at 12000 steps, "
        "+0.25 at 24000\n")
    missing = _run("nerf_grid_best.py", tmp_path, "double", "100")
    assert missing.returncode != 0 and "no rank with sine (omega 100)" in missing.stderr


def test_the_precision_check_pairs_the_cells_both_folders_hold(tmp_path):
    fields = ["task", "method", "rank", "omega", "seed", "metric"]
    fp32 = [("cola", "lora", "", 0, 25.0), ("cola", "sine-lora", "200.0", 0, 20.0), ("cola", "lora", "", 1, 27.0),
            ("cola", "sine-lora", "200.0", 1, 25.0), ("rte", "lora", "", 0, 56.0)]
    bf16 = [("cola", "lora", "", 0, 26.0), ("cola", "sine-lora", "200.0", 0, 22.0), ("cola", "lora", "", 1, 26.0),
            ("cola", "sine-lora", "200.0", 1, 25.0), ("sst2", "lora", "", 0, 86.0)]
    for folder, rows in (("all-MiniLM-L6-v2-tab3", fp32), ("all-MiniLM-L6-v2-tab3-bf16", bf16)):
        _write(tmp_path / "results" / "glue" / folder / "summary.csv", fields,
               [dict(zip(fields, (t, m, 4, w, s, v))) for t, m, w, s, v in rows])
    out = _run("glue_precision.py", tmp_path, "--line")
    assert out.returncode == 0, out.stderr
    # 4 shared cells: +1, +2, -1, 0 -> mean +0.50, t(3) 3.182 * sd 1.291 / 2 = 2.05; the largest is +2 (cola sine-lora
    # seed 0); the sine - LoRA gap: fp32 -5, -2; bf16 -4, -1 -> moves +1.00 on both pairs (sd 0)
    assert out.stdout.strip().endswith(
        "bf16 - fp32 +0.50 [-1.55, +2.55] over 4 pairs, largest +2.00 (cola sine-lora k=4 seed 0); the sine - baseline "
        "gap moves by +1.00 [+1.00, +1.00] over 2 pairs (fp32 mean -3.50, bf16 -2.50)")
    table = _run("glue_precision.py", tmp_path).stdout
    assert "| cola | sine-lora | 4 | 0 | 20.00 | 22.00 | +2.00 |" in table and "rte" not in table and "sst2" not in table
    empty = tmp_path / "none"
    empty.mkdir()
    assert "no cell has run in both yet" in _run("glue_precision.py", empty, "--line").stdout


def test_glue_remaining_lists_the_missing_tab3_cells_in_run_order_with_estimates(tmp_path):
    fields = ["task", "method", "rank", "seed", "metric", "train_seconds"]
    done = [dict(task=t, method=m, rank=4, seed=0, metric=50.0, train_seconds=s)
            for t, m, s in (("cola", "lora", 600), ("cola", "sine-lora", 1200), ("sst2", "lora", 300),
                            ("sst2", "sine-lora", 360), ("stsb", "lora", 240), ("stsb", "sine-lora", 240),
                            ("mrpc", "lora", 480), ("mrpc", "sine-lora", 540), ("rte", "lora", 1080))]
    done.append(dict(task="cola", method="lora", rank=4, seed=1, metric="", train_seconds=""))  # no metric: not done
    _write(tmp_path / "t.csv", fields, done)
    out = _run("glue_remaining.py", tmp_path, "--csv", "t.csv", "--list").stdout.splitlines()
    assert out[0].startswith("t.csv: 10 rows")
    assert out[1].startswith("tab3: 111 cells left, about ")
    # rte sine-lora has no row of its own: its task's median (rte lora); then seed 1 of k = 4 in task order
    assert out[2:5] == ["  k=4 seed 0 rte sine-lora: ~18 min", "  k=4 seed 1 cola lora: ~10 min",
                        "  k=4 seed 1 cola sine-lora: ~20 min"]
    dora = out.index(next(line for line in out if line.startswith("tab3-dora:")))
    ranks = [int(line.split()[0][2:]) for line in out[2:dora]]
    assert len(ranks) == 111 and ranks == sorted(ranks, key=[4, 8, 1, 2].index)  # k = 4, then 8, then 1 and 2
    total = (600 + 1200 + 300 + 360 + 240 + 240 + 480 + 540 + 1080 * 2) * 12 - (6120 - 1080)  # 12 rank x seed cells
    assert f"about {total / 3600:.1f} core-hours" in out[1]
    # tab3-dora: dora / sine-dora at k = 4 and 8, 3 seeds, no row yet: each estimated from its task's rows (LoRA's)
    cola, sst2, stsb, mrpc, rte = (600 + 1200) / 2, 330, 240, 510, 1080
    dora_total = 2 * 2 * 3 * (cola + sst2 + stsb + mrpc + rte)
    assert out[dora] == f"tab3-dora: 60 cells left, about {dora_total / 3600:.1f} core-hours"
    assert out[dora + 1] == "  k=4 seed 0 cola dora: ~15 min" and len(out) == dora + 61
    # the four learned tasks first (k = 4, then 8), RTE's 12 cells last
    dora_cells = [line.split() for line in out[dora + 1:]]
    assert [c[3] for c in dora_cells[48:]] == ["rte"] * 12 and "rte" not in [c[3] for c in dora_cells[:48]]
    assert [c[0] for c in dora_cells[:48]] == ["k=4"] * 24 + ["k=8"] * 24
    assert _run("glue_remaining.py", tmp_path, "--csv", "nope.csv").returncode != 0


def _offset_folders(tmp_path, offset_lr=7e-4, **offset_config):
    """Tab. 3 (LoRA and B = 0 sine-LoRA, k = 4 and 8, seeds 0-2, cola / sst2 / rte; rte not learned) and an offset
    folder (sine-LoRA k = 4, seeds 0-2): offset = B = 0 sine + 1 + seed on every task; LoRA = B = 0 sine + 2."""
    fields = ["task", "method", "rank", "omega", "seed", "metric", "lr"]
    config = {"omega": 200.0, "schedule": "tab3", "val_fraction": 0.0, "init_argument_rms": None,
              "output_dir": "a", "methods": ["lora", "sine-lora"], "ranks": [4, 8]}
    base = {"cola": 20.0, "sst2": 85.0, "rte": 55.0}
    tab3, offset = [], []
    for task, b in base.items():
        for seed in (0, 1, 2):
            for k in (4, 8):
                tab3.append(dict(task=task, method="sine-lora", rank=k, omega=200.0, seed=seed, metric=b + k, lr=7e-4))
                tab3.append(dict(task=task, method="lora", rank=k, omega="", seed=seed, metric=b + k + 2, lr=2e-3))
            offset.append(dict(task=task, method="sine-lora", rank=4, omega=200.0, seed=seed, metric=b + 4 + 1 + seed,
                               lr=offset_lr))
    for name, rows, cfg in (("tab3", tab3, config),
                            ("offset", offset, {**config, "init_argument_rms": 1.0, "output_dir": "b",
                                                "methods": ["sine-lora"], "ranks": [4], **offset_config})):
        _write(tmp_path / name / "summary.csv", fields, rows)
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "tab3" / "verdicts.json").write_text(json.dumps({"learned": ["cola", "sst2"], "excluded": ["rte"]}))
    return ["--tab3-dir", str(tmp_path / "tab3"), "--offset-dir", str(tmp_path / "offset")]


def test_glue_offset_pairs_the_offset_rows_with_tab3_on_its_learned_tasks(tmp_path):
    out = _run("glue_offset.py", tmp_path, *_offset_folders(tmp_path))
    assert out.returncode == 0, out.stderr
    # offset - B = 0 sine: 1, 2, 3 per seed on each task -> +2.00, t(2) 4.303 * 1 / sqrt(3) = 2.48
    assert ("| offset k=4 - sine-LoRA B = 0 k=4 | 3 | +2.00 [-0.48, +4.48] (3 seeds) | no difference shown | "
            "+2.00 [-0.48, +4.48] (3 seeds) |") in out.stdout
    # against LoRA k = 4 (2 above B = 0 sine): 0.00; against LoRA k = 8 (k + 2 = 10 above base): -4.00; the learned
    # average leaves RTE out but RTE still gets its own column
    assert "| offset k=4 - LoRA k=4 | 3 | +0.00 [-2.48, +2.48] (3 seeds) |" in out.stdout
    assert "| offset k=4 - LoRA k=8 | 3 | -4.00 [-6.48, -1.52] (3 seeds) | LoRA better |" in out.stdout
    assert "| comparison | seeds | learned-task avg | verdict | cola | sst2 | rte (left out) |" in out.stdout
    assert "| sine-LoRA offset 1 | 4 | 26.00 (3) | 91.00 (3) | 61.00 (3) |" in out.stdout
    assert "Learned tasks (Tab. 3's verdicts.json): cola, sst2." in out.stdout


def test_glue_offset_refuses_folders_that_differ_in_more_than_the_start(tmp_path):
    out = _run("glue_offset.py", tmp_path, *_offset_folders(tmp_path, schedule="learn"))
    assert out.returncode != 0 and "schedule: 'tab3' (Tab. 3) vs 'learn' (offset)" in out.stderr
    out = _run("glue_offset.py", tmp_path, *_offset_folders(tmp_path, init_argument_rms=None))
    assert out.returncode != 0 and "was not run with --init-argument-rms" in out.stderr
    out = _run("glue_offset.py", tmp_path, *_offset_folders(tmp_path, offset_lr=2e-3))
    assert out.returncode != 0 and "rows at another rate than Tab. 3's sine-LoRA: cola k=4 seed 0: 0.002 vs 0.0007" in out.stderr
    args = _offset_folders(tmp_path)
    (tmp_path / "tab3" / "verdicts.json").unlink()
    out = _run("glue_offset.py", tmp_path, *args)
    assert out.returncode != 0 and "verdicts.json is missing (re-render Tab. 3" in out.stderr
