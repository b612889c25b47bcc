"""The sweep runner and results contract: seed in the key, fingerprints, refusal of mixed settings,
interrupt-and-resume with no half-written files, typed reload, and the one verdict rule."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sinelr.errors import ConfigError

from sinelr.report import ResultsConflictError, ResultsTable
from sinelr.stats import paired_comparison, t_quantile_975
from sinelr.sweep import Sweep, SweepSpec, publish_folder, recover_folder

COLUMNS = {"method": str, "rank": "int|str", "seed": int, "score": float, "params": int}
SPEC = SweepSpec("toy", COLUMNS, ["method", "rank", "seed"], grid_keys=("seeds", "ranks"),
                 not_in_training=("eval_size",))
BASE = {"seeds": [0, 1], "ranks": [1, 2], "steps": 10, "lr": 0.1, "eval_size": 8,
        "output_dir": "x", "run_dir": "y", "device": "cpu"}


def _render(rows, folder: Path) -> None:
    (folder / "summary.md").write_text(f"{len(rows)} rows: " + ", ".join(f"{r['rank']}/{r['seed']}" for r in rows) + "\n")


def _points(cfg):
    return [{"method": "sine", "rank": k, "seed": s} for k in cfg["ranks"] for s in cfg["seeds"]]


def _sweep(tmp_path: Path, **changes) -> Sweep:
    cfg = {**BASE, **changes}
    return Sweep(SPEC, cfg, tmp_path / "out", tmp_path / "runs", _render)


def _one(calls):
    def run_one(point, folder):
        calls.append((dict(point), folder))
        return {"score": 0.5 + point["rank"] + point["seed"] / 10, "params": 7 * point["rank"], "method": "sine"}
    return run_one


def test_rows_are_typed_after_add_and_after_reload(tmp_path):
    calls = []
    rows = _sweep(tmp_path).run(_points(BASE), _one(calls))
    reloaded = ResultsTable(tmp_path / "out" / "summary.csv", COLUMNS, SPEC.key).rows
    assert rows == reloaded
    assert all(isinstance(r["rank"], int) and isinstance(r["score"], float) and isinstance(r["seed"], int) for r in reloaded)


def test_a_new_seed_runs_and_existing_points_are_skipped(tmp_path):
    calls = []
    _sweep(tmp_path).run(_points(BASE), _one(calls))
    assert len(calls) == 4
    calls.clear()
    cfg = {**BASE, "seeds": [0, 1, 2]}
    rows = _sweep(tmp_path, seeds=[0, 1, 2]).run(_points(cfg), _one(calls))
    assert [c[0]["seed"] for c in calls] == [2, 2]  # only the new seed: the key holds the seed
    assert len(rows) == 6
    assert "6 rows" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("key, value", [("steps", 11), ("lr", 0.2), ("eval_size", 9)])
def test_changed_setting_is_refused_naming_the_key(tmp_path, key, value):
    _sweep(tmp_path).run(_points(BASE), _one([]))
    before = (tmp_path / "out" / "summary.csv").read_bytes()
    with pytest.raises(ResultsConflictError, match=key):
        _sweep(tmp_path, **{key: value}).run(_points(BASE), _one([]))
    assert (tmp_path / "out" / "summary.csv").read_bytes() == before


def test_non_result_keys_do_not_conflict(tmp_path):
    _sweep(tmp_path).run(_points(BASE), _one([]))
    calls = []
    _sweep(tmp_path, device="cuda", output_dir="elsewhere").run(_points(BASE), _one(calls))
    assert calls == []


def test_every_training_key_changes_the_run_folder(tmp_path):
    point = {"method": "sine", "rank": 1, "seed": 0}
    base = _sweep(tmp_path).run_folder(point)
    for key, value in (("steps", 11), ("lr", 0.3)):
        assert _sweep(tmp_path, **{key: value}).run_folder(point) != base
    assert _sweep(tmp_path, eval_size=99).run_folder(point) == base  # evaluation only: checkpoint reused
    assert _sweep(tmp_path).run_folder({**point, "seed": 1}) != base


def test_interrupt_in_a_point_then_rerun_resumes_without_partial_files(tmp_path):
    calls = []
    interrupted = []

    def flaky(point, folder):
        if point["rank"] == 2 and point["seed"] == 0 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        calls.append((dict(point), folder))
        return {"score": 1.0, "params": 1, "method": "sine"}

    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path).run(_points(BASE), flaky)
    out = tmp_path / "out"
    assert "2 rows" in (out / "summary.md").read_text()  # md and csv describe the same rows
    assert len(ResultsTable(out / "summary.csv", COLUMNS, SPEC.key).rows) == 2
    calls.clear()
    rows = _sweep(tmp_path).run(_points(BASE), flaky)
    assert len(rows) == 4 and [c[0]["rank"] for c in calls] == [2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]


def test_interrupt_while_rendering_keeps_the_folder_consistent(tmp_path):
    _sweep(tmp_path, seeds=[0]).run(_points({**BASE, "seeds": [0]}), _one([]))
    out = tmp_path / "out"
    csv_before, md_before = (out / "summary.csv").read_bytes(), (out / "summary.md").read_bytes()

    def bad_render(rows, folder):
        (folder / "summary.csv").write_text("garbage")
        raise KeyboardInterrupt

    sweep = Sweep(SPEC, {**BASE, "seeds": [0, 1]}, out, tmp_path / "runs", bad_render)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(_points(BASE), _one([]))
    assert (out / "summary.csv").read_bytes() == csv_before and (out / "summary.md").read_bytes() == md_before


def test_recover_finishes_a_swap_cut_between_its_two_renames(tmp_path):
    folder = tmp_path / "res"
    publish_folder(folder, lambda d: (d / "a.txt").write_text("one"))
    # simulate: staged copy complete and marked, the old folder moved away, then the process died
    staging = tmp_path / "res.staging"
    staging.mkdir()
    (staging / "a.txt").write_text("two")
    (tmp_path / "res.staging-complete").touch()
    folder.rename(tmp_path / "res.old")
    recover_folder(folder)
    assert (folder / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_spec_requires_seed_in_key():
    with pytest.raises(ValueError, match="seed"):
        SweepSpec("bad", {"a": int}, ["a"])


def test_provenance_lists_every_command_and_its_points(tmp_path):
    _sweep(tmp_path).run(_points(BASE), _one([]))
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert len(prov["runs"]) == 1 and len(prov["runs"][0]["points"]) == 4
    assert "git_sha" in prov["runs"][0]


def test_provenance_keeps_each_commands_own_config(tmp_path):
    """config.json is the last command's config; a command that ran under another config (here a seed added,
    an edited config file under the same command line) keeps its own in its provenance entry."""
    _sweep(tmp_path).run(_points(BASE), _one([]))
    more = {**BASE, "seeds": [0, 1, 2]}
    _sweep(tmp_path, seeds=[0, 1, 2]).run(_points(more), _one([]))
    out = tmp_path / "out"
    runs = json.loads((out / "provenance.json").read_text())["runs"]
    assert [r["config"]["seeds"] for r in runs] == [[0, 1], [0, 1, 2]]
    assert [len(r["points"]) for r in runs] == [4, 2]
    assert json.loads((out / "config.json").read_text())["seeds"] == [0, 1, 2]
    _sweep(tmp_path, seeds=[0, 1, 2]).run(_points(more), _one([]))  # nothing new to run: no third entry
    assert len(json.loads((out / "provenance.json").read_text())["runs"]) == 2


def test_t_quantiles_and_paired_interval_match_the_formula():
    assert t_quantile_975(2) == pytest.approx(4.303)
    assert t_quantile_975(1000) == pytest.approx(1.96, abs=0.01)
    a = {0: 10.0, 1: 11.0, 2: 12.0}
    b = {0: 11.0, 1: 12.5, 2: 13.1}
    c = paired_comparison(a, b, "low-rank", "sine")
    d = [1.0, 1.5, 1.1]
    m = sum(d) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / 2)
    assert c.mean == pytest.approx(m)
    assert c.low == pytest.approx(m - 4.303 * sd / math.sqrt(3))
    assert c.verdict == "sine better" and c.n == 3


def test_verdict_says_no_difference_when_the_interval_holds_zero_or_one_seed():
    c = paired_comparison({0: 1.0, 1: 2.0}, {0: 1.5, 1: 1.8}, "a", "b")
    assert c.verdict == "no difference shown"
    assert paired_comparison({0: 1.0}, {0: 5.0}, "a", "b").verdict == "no difference shown"
    lower = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 3.1, 2: 3.9}, "a", "b", higher_is_better=False)
    assert lower.verdict == "a better"
    only_shared = paired_comparison({0: 1.0, 5: 9.0}, {0: 2.0, 6: 0.0}, "a", "b")
    assert only_shared.seeds == (0,)


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + (value[-1:] if value else ["x"])
    if value is None:
        return 1.5
    raise AssertionError(f"no change rule for {value!r}")


@pytest.mark.parametrize("recipe", ["occupancy", "quickstart", "vit"])
def test_every_training_key_of_a_recipe_is_in_its_fingerprint(tmp_path, recipe):
    """Change any one config key that is not declared as a grid axis or number-neutral: the run folder
    (checkpoint) changes, and the results folder refuses to mix rows (ResultsConflictError)."""
    import dataclasses

    from sinelr.cli import load_recipe
    from sinelr.config import config_to_dict

    module = load_recipe(recipe)
    spec = SweepSpec(recipe, module.COLUMNS, module.KEY, **module.SPEC_ARGS)
    base = config_to_dict(module.Config())
    point = {k: 0 for k in module.KEY}
    exempt = set(spec.grid_keys) | set(spec.not_in_results)
    training = [f.name for f in dataclasses.fields(module.Config) if f.name not in exempt]
    assert training, recipe

    def sweep(cfg):
        return Sweep(spec, cfg, tmp_path / "out", tmp_path / "runs", _render)

    folder = sweep(base).run_folder(point)
    for key in training:
        changed = {**base, key: _changed(base[key])}
        s = sweep(changed)
        if key in spec.not_in_training:
            assert s.run_folder(point) == folder, key
        else:
            assert s.run_folder(point) != folder, key
        assert s.results_fingerprint != sweep(base).results_fingerprint, key


def test_one_kind_lookup_builds_every_kind_and_refuses_unknown_names():
    import torch

    from sinelr.kinds import canonical_kind, linear_factory
    from sinelr.layers import LowRankLinear, SineLowRankLinear

    assert canonical_kind("full") == "dense" and canonical_kind("dense") == "dense"
    assert isinstance(linear_factory("full")(4, 6), torch.nn.Linear)
    low = linear_factory("lowrank", 2)(4, 6, bias=False)
    assert isinstance(low, LowRankLinear) and low.bias is None
    sine = linear_factory("sine", 3, omega=30.0)(4, 6)
    assert isinstance(sine, SineLowRankLinear) and sine.omega == 30.0
    with pytest.raises(ValueError, match="'conv'"):
        linear_factory("conv", 2)
    with pytest.raises(ValueError, match="needs an int rank >= 1, got None"):
        linear_factory("sine")


def test_a_lock_held_too_long_is_refused_with_its_pid_and_a_stale_lock_taken_over(tmp_path, monkeypatch):
    import subprocess
    import sys

    import sinelr.sweep as sw
    from sinelr.sweep import Sweep, SweepSpec

    monkeypatch.setattr(sw, "LOCK_TIMEOUT_S", 0.5)
    spec = SweepSpec("t", {"x": int, "seed": int, "y": float}, ["x", "seed"])
    out = tmp_path / "out"
    lock = tmp_path / "out.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(str(sleeper.pid))  # a live process holds the folder (and never lets go)
        sweep = Sweep(spec, {"a": 1}, out, tmp_path / "runs", lambda rows, folder: None)
        with pytest.raises(ConfigError, match=rf"another sinelr process \(pid {sleeper.pid}\) has held"):
            sweep.run([{"x": 1, "seed": 0}], lambda p, f: {"y": 1.0})
        assert not out.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    rows = sweep.run([{"x": 1, "seed": 0}], lambda p, f: {"y": 1.0})  # its process is gone: taken over
    assert [r["y"] for r in rows] == [1.0] and not lock.exists()


_SHARED_SWEEP = """
import os, sys, time
from pathlib import Path
from sinelr.sweep import Sweep, SweepSpec
tmp = Path(sys.argv[1])
spec = SweepSpec("t", {"x": int, "seed": int, "y": float, "pid": int}, ["x", "seed"])
def render(rows, folder):
    (folder / "summary.md").write_text("%d rows" % len(rows))
def run_one(point, folder):
    with open(tmp / "ran.txt", "a") as fh:
        fh.write("%d %d\\n" % (point["x"], os.getpid()))
    time.sleep(0.4)
    return {"y": point["x"] * 10.0, "pid": os.getpid()}
(tmp / ("ready%d" % os.getpid())).touch()  # imported: wait until both processes are
while not (tmp / "go").exists():
    time.sleep(0.01)
Sweep(spec, {"a": 1}, tmp / "out", tmp / "runs", render).run([{"x": x, "seed": 0} for x in range(8)], run_one)
"""


def test_the_same_sweep_in_two_processes_shares_the_points_and_keeps_every_row(tmp_path):
    import subprocess
    import sys

    from sinelr.report import ResultsTable

    script = tmp_path / "sweep.py"
    script.write_text(_SHARED_SWEEP)
    import time

    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)]) for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready*"))) < 2 and time.monotonic() < deadline:  # both past their imports
        time.sleep(0.05)
    (tmp_path / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ran = [line.split() for line in (tmp_path / "ran.txt").read_text().splitlines()]
    assert sorted(int(x) for x, _ in ran) == list(range(8))  # every point ran exactly once
    pids = {int(pid) for _, pid in ran}
    assert pids == {p.pid for p in procs}  # and both processes ran some of them
    rows = ResultsTable(tmp_path / "out" / "summary.csv", {"x": int, "seed": int, "y": float, "pid": int}, ["x", "seed"]).rows
    assert sorted((r["x"], r["y"]) for r in rows) == [(x, x * 10.0) for x in range(8)]  # no row dropped
    assert {(r["x"], r["pid"]) for r in rows} == {(int(x), int(pid)) for x, pid in ran}
    assert (tmp_path / "out" / "summary.md").read_text() == "8 rows"
    assert not (tmp_path / "out.lock").exists() and not list((tmp_path / "runs").glob("*/claim"))
    (run,) = json.loads((tmp_path / "out" / "provenance.json").read_text())["runs"]  # one command: one entry
    assert sorted(q["x"] for q in run["points"]) == list(range(8))


def test_interleaved_provenance_entries_of_one_command_are_united():
    from sinelr.sweep import _merge_runs

    a = {"command": "c", "git_sha": "1", "date": "t1", "points": [{"x": 0}]}
    b = {"command": "c", "git_sha": "2", "date": "t2", "points": [{"x": 1}]}
    runs = _merge_runs([a, b, {**a, "date": "t3", "points": [{"x": 2}]}, {**b, "date": "t4", "points": [{"x": 3}]}])
    assert [(r["git_sha"], r["date"], [q["x"] for q in r["points"]]) for r in runs] == [
        ("1", "t3", [0, 2]), ("2", "t4", [1, 3])]


def test_a_point_claimed_by_a_live_process_is_left_to_it_and_a_dead_claim_is_taken_over(tmp_path, capsys):
    import subprocess
    import sys

    from sinelr.sweep import Sweep, SweepSpec

    spec = SweepSpec("t", {"x": int, "seed": int, "y": float}, ["x", "seed"])
    sweep = Sweep(spec, {"a": 1}, tmp_path / "out", tmp_path / "runs", lambda rows, folder: None)
    points = [{"x": x, "seed": 0} for x in range(2)]
    claim = sweep.run_folder(points[1]) / "claim"
    claim.parent.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim.write_text(str(sleeper.pid))
        rows = sweep.run(points, lambda p, f: {"y": float(p["x"])})
        assert [r["x"] for r in rows] == [0]
        assert f"was being run by process {sleeper.pid}" in capsys.readouterr().out
    finally:
        sleeper.kill()
        sleeper.wait()
    rows = sweep.run(points, lambda p, f: {"y": float(p["x"])})  # the claimer died: the point is run here
    assert sorted(r["x"] for r in rows) == [0, 1] and not claim.exists()


RATED = SweepSpec("toy", {**COLUMNS, "lr": float}, ["method", "rank", "seed"], grid_keys=("seeds", "ranks"),
                  row_settings={"lr": ("lr", "method_lr")})


def _rated(tmp_path: Path, **changes) -> Sweep:
    return Sweep(RATED, {**BASE, "method_lr": [], **changes}, tmp_path / "out", tmp_path / "runs", _render)


def _rated_points(method: str, lr: float):
    return [{"method": method, "rank": 1, "seed": s, "lr": lr} for s in (0, 1)]


def _rated_one(calls):
    def run_one(point, folder):
        calls.append((dict(point), folder))
        return {"score": point["lr"], "params": 7, "method": point["method"]}
    return run_one


def test_a_row_setting_is_recorded_per_row_and_a_method_joins_at_its_own_rate(tmp_path):
    calls = []
    _rated(tmp_path).run(_rated_points("lowrank", 0.1), _rated_one(calls))
    # another method at another rate (the config's lr and method_lr change) shares the folder
    rows = _rated(tmp_path, lr=0.3, method_lr=["sine=0.3"]).run(_rated_points("sine", 0.3), _rated_one(calls))
    assert sorted((r["method"], r["seed"], r["lr"]) for r in rows) == [
        ("lowrank", 0, 0.1), ("lowrank", 1, 0.1), ("sine", 0, 0.3), ("sine", 1, 0.3)]
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())["settings"]
    assert "lr" not in settings and "method_lr" not in settings
    # the rate is in the run folder's fingerprint through the point, not through the config
    s = _rated(tmp_path)
    assert s.run_folder(_rated_points("sine", 0.3)[0]) != s.run_folder(_rated_points("sine", 0.1)[0])
    assert s.run_folder(_rated_points("sine", 0.3)[0]) == _rated(tmp_path, lr=9.0).run_folder(_rated_points("sine", 0.3)[0])
    # a finished row leads back to its point's run folder (files the run kept, e.g. rendered views)
    row = next(r for r in rows if (r["method"], r["seed"]) == ("sine", 1))
    assert s.run_folder(s.row_point(row)) == calls[-1][1]
    # a point that lacks the row setting is a recipe bug
    with pytest.raises(ValueError, match=r"lacks the columns \['lr'\]"):
        s.run([{"method": "sine", "rank": 1, "seed": 0}], _rated_one(calls))


def test_a_new_value_for_an_existing_row_is_refused_naming_both(tmp_path):
    calls = []
    _rated(tmp_path).run(_rated_points("lowrank", 0.1), _rated_one(calls))
    n = len(calls)
    with pytest.raises(ResultsConflictError, match=r"the row method=lowrank rank=1 seed=0 computed at lr 0\.1, and "
                                                   r"this run asks lr 0\.2 for it"):
        _rated(tmp_path).run(_rated_points("lowrank", 0.2), _rated_one(calls))
    assert len(calls) == n  # refused before anything ran
    _rated(tmp_path).run(_rated_points("lowrank", 0.1 + 1e-12), _rated_one(calls))  # the same rate, re-typed
    assert len(calls) == n


def test_a_folder_from_before_the_row_setting_is_accepted_only_when_its_rows_record_it(tmp_path):
    calls = []
    _rated(tmp_path).run(_rated_points("lowrank", 0.1), _rated_one(calls))
    path = tmp_path / "out" / "settings.json"
    doc = json.loads(path.read_text())
    doc["settings"].update(lr=0.1, method_lr=[])  # how the folder looked when lr was a folder setting
    path.write_text(json.dumps(doc))
    rows = _rated(tmp_path).run(_rated_points("sine", 0.3), _rated_one(calls))
    assert len(rows) == 4
    assert "lr" not in json.loads(path.read_text())["settings"]  # rewritten without it with the next row
    # rows that do not record their rate cannot be told apart: refused
    doc = json.loads(path.read_text())
    doc["settings"]["lr"] = 0.1
    path.write_text(json.dumps(doc))
    table = ResultsTable(tmp_path / "out" / "summary.csv", RATED.columns, RATED.key)
    table.rows[0]["lr"] = None
    table.save()
    with pytest.raises(ResultsConflictError, match=r"keeps lr as a setting of the whole folder, and 1 of its rows do "
                                                   r"not record their lr"):
        _rated(tmp_path).run(_rated_points("sine", 0.3), _rated_one(calls))


def test_a_row_setting_must_be_a_column_outside_the_key():
    with pytest.raises(ValueError, match=r"row settings \['lr'\] must be columns outside the key"):
        SweepSpec("toy", COLUMNS, ["method", "rank", "seed"], row_settings={"lr": ("lr",)})
    with pytest.raises(ValueError, match=r"row settings \['seed'\]"):
        SweepSpec("toy", COLUMNS, ["method", "rank", "seed"], row_settings={"seed": ("seeds",)})


def test_the_time_left_is_estimated_from_finished_rows_of_the_same_or_nearest_kind(tmp_path, capsys):
    timed = SweepSpec("toy", {**COLUMNS, "train_seconds": float}, ["method", "rank", "seed"], grid_keys=("seeds", "ranks"))

    def one(point, folder):
        return {"score": 1.0, "params": 1, "train_seconds": 600.0 * point["rank"]}

    def sweep():
        return Sweep(timed, BASE, tmp_path / "out", tmp_path / "runs", _render)

    sweep().run([{"method": "sine", "rank": k, "seed": 0} for k in (1, 2)], one)
    capsys.readouterr()
    points = [{"method": m, "rank": k, "seed": s} for m in ("sine", "lowrank") for k in (1, 2, 3) for s in (0, 1)]
    todo = sweep().pending(sweep().table(), points)
    # sine rank 1: 1 seed x 10 min, rank 2: 1 x 20 min, rank 3 (not timed): 2 x the sine mean of 15 min = 60 min;
    # lowrank has no row of its method: not timed
    assert sweep().time_left(sweep().table(), todo) == (
        "10 points to run: about 60 min of training in one process for the 4 like a finished row, at the speed of "
        "this folder's finished rows of the same or the nearest kind; 6 more not like any finished row")
    assert sweep().time_left(sweep().table(), todo[:1]).startswith("1 point to run: about 10 min of training in one "
                                                                   "process for all of them")
    assert sweep().time_left(sweep().table(), todo[-1:]) == "1 point to run, none like a finished row of this folder"
    assert _sweep(tmp_path).time_left(sweep().table(), todo) == ""  # a table without train_seconds
    sweep().run(points[:2], one)  # the runner prints it when it starts
    assert "1 point to run: about 10 min" in capsys.readouterr().out
