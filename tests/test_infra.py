"""Shared infrastructure: configs, results tables, the training loop (resume, NaN), the CLI."""
import csv
import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest
import torch
import torch.nn as nn

from sinelr import train
from sinelr.cli import RECIPES, main
from sinelr.config import ConfigError, config_to_dict, load_config
from sinelr.data import DataNotFoundError, resolve_data_dir
from sinelr.report import ResultsTable, markdown_table, mean_std, provenance
from sinelr.train import (
    CheckpointMismatchError,
    NonFiniteLossError,
    fingerprint,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    train_loop,
)


@dataclass
class DemoConfig:
    rank: int = field(default=4, metadata={"help": "rank k"})
    omega: float = 100.0
    ranks: List[int] = field(default_factory=lambda: [1, 2])
    name: Optional[str] = None
    quick: bool = False


def test_config_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rank: 8\nranks: [1, 5, 10]\nquick: true\n")
    cfg = load_config(DemoConfig, path, {"omega": "250"})
    assert cfg == DemoConfig(rank=8, omega=250.0, ranks=[1, 5, 10], quick=True)
    assert config_to_dict(cfg)["ranks"] == [1, 5, 10]
    assert load_config(DemoConfig, None, {"ranks": ["3", "4"]}).ranks == [3, 4]


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'rnak'.*rank"):
        load_config(DemoConfig, None, {"rnak": 3})
    with pytest.raises(ConfigError, match="'rank' expects int"):
        load_config(DemoConfig, None, {"rank": "four"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DemoConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(DemoConfig, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(DemoConfig, lst)


def test_results_table_upserts_and_resumes(tmp_path):
    path = tmp_path / "summary.csv"
    t = ResultsTable(path, ["method", "rank", "psnr"], key=["method", "rank"])
    t.add({"method": "sine", "rank": 1, "psnr": 20.5})
    t.add({"method": "lowrank", "rank": 1, "psnr": 18.0})
    t.add({"method": "sine", "rank": 1, "psnr": 21.0})  # replaces, does not duplicate
    t2 = ResultsTable(path, ["method", "rank", "psnr"], key=["method", "rank"])
    assert t2.has(method="sine", rank=1) and not t2.has(method="sine", rank=5)
    rows = list(csv.DictReader(path.open()))
    assert [(r["method"], r["psnr"]) for r in rows] == [("lowrank", "18.0"), ("sine", "21.0")]
    with pytest.raises(ValueError, match="columns"):
        ResultsTable(path, ["method", "rank", "iou"], key=["method"])
    with pytest.raises(ValueError, match="not in the table"):
        t2.add({"method": "x", "rank": 1, "bogus": 1})


def test_markdown_and_stats():
    md = markdown_table([{"a": 1, "b": 2.345}], ["a", "b"], headers=["A", "B"])
    assert md.splitlines() == ["| A | B |", "|---|---|", "| 1 | 2.35 |"]
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_provenance_names_command_and_sha():
    p = provenance(["sinelr", "quickstart"])
    assert p["command"] == "sinelr quickstart"
    assert p["git_sha"] and p["machine"].startswith(("CPU", "GPU"))
    if p["machine"].startswith("CPU"):  # fp32 rows are bit-reproducible per kernel ISA, so the ISA is named
        assert f"{torch.backends.cpu.get_cpu_capability()} kernels" in p["machine"]


def test_summaries_state_the_compute_of_their_rows(tmp_path):
    from sinelr.report import compute_line, provenance_lines

    rows = [{"train_seconds": 1800.0}, {"train_seconds": 5400.0}, {"train_seconds": None}]
    line, = compute_line(rows)
    assert line.startswith("- compute: 3 runs, 2.00 h of training summed") and line.endswith("; 1 rows record no time")
    assert compute_line([{"train_seconds": None}]) == [] and compute_line([]) == []
    assert provenance_lines(tmp_path, rows)[-1] == line and not any(x.startswith("- compute:") for x in provenance_lines(tmp_path))


def _regression_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(256, 8, generator=g)
    Y = X @ torch.randn(8, 3, generator=g)
    return X, Y


def _make(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, opt


def _step_fn(model, X, Y, seed=0):
    def step_fn(step):
        g = torch.Generator().manual_seed(seed * 100003 + step)  # the batch is a function of the step
        idx = torch.randint(0, len(X), (32,), generator=g)
        return nn.functional.mse_loss(model(X[idx]), Y[idx])
    return step_fn


def test_train_loop_learns():
    X, Y = _regression_problem()
    model, opt = _make()
    res = train_loop(model, opt, _step_fn(model, X, Y), 100)
    assert res.losses[-1] < 0.2 * res.losses[0] and res.steps == 100


def test_resume_is_exact(tmp_path):
    X, Y = _regression_problem()
    ref, opt = _make()
    train_loop(ref, opt, _step_fn(ref, X, Y), 40)

    model, opt = _make()
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
    ck = tmp_path / "ck"
    fp = fingerprint({"lr": 1e-2})
    train_loop(model, opt, _step_fn(model, X, Y), 20, scheduler=sched, checkpoint_dir=ck, config_fingerprint=fp)
    # a new process would rebuild everything from scratch, then resume from the checkpoint
    model2, opt2 = _make(seed=123)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 10, 0.5)
    res = train_loop(model2, opt2, _step_fn(model2, X, Y), 40, scheduler=sched2, checkpoint_dir=ck, config_fingerprint=fp)
    assert res.resumed_from == 20
    ref2, opt3 = _make()
    sched3 = torch.optim.lr_scheduler.StepLR(opt3, 10, 0.5)
    straight = train_loop(ref2, opt3, _step_fn(ref2, X, Y), 40, scheduler=sched3)
    for a, b in zip(model2.state_dict().values(), ref2.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # final_loss averages the last 50 losses, 20 of them from before the checkpoint (was: only the resumed 20)
    assert res.final_loss == straight.final_loss
    assert json.loads((ck / "meta.json").read_text())["step"] == 40
    assert (ck / "model.safetensors").is_file()


def _signalling(step_fn, at_step, *signums):
    """step_fn that sends itself `signums` (in order) while computing step `at_step`."""
    import os

    def wrapped(step):
        if step == at_step:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return step_fn(step)
    return wrapped


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_under_way_with_a_checkpoint_there(tmp_path, signum):
    X, Y = _regression_problem()
    ref, opt = _make()
    straight = train_loop(ref, opt, _step_fn(ref, X, Y), 30)
    before = signal.getsignal(signum)
    model, opt = _make()
    ck = tmp_path / "ck"
    with pytest.raises(train.StopRequested, match=r"after step 7 of 30 .*run the same command again") as stop:
        train_loop(model, opt, _signalling(_step_fn(model, X, Y), 6, signum), 30, checkpoint_dir=ck,
                   checkpoint_every=100)
    assert stop.value.step == 7 and json.loads((ck / "meta.json").read_text())["step"] == 7  # no step lost
    assert signal.getsignal(signum) is before  # the loop's handlers are gone with it
    model2, opt2 = _make(seed=5)
    res = train_loop(model2, opt2, _step_fn(model2, X, Y), 30, checkpoint_dir=ck, checkpoint_every=100)
    assert res.resumed_from == 7 and res.final_loss == straight.final_loss
    for a, b in zip(model2.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_a_second_signal_stops_at_once_and_no_checkpoint_dir_means_no_handler(tmp_path):
    X, Y = _regression_problem()
    model, opt = _make()
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt) as stop:
        train_loop(model, opt, _signalling(_step_fn(model, X, Y), 3, signal.SIGINT, signal.SIGINT), 30,
                   checkpoint_dir=ck, checkpoint_every=100)
    assert type(stop.value) is KeyboardInterrupt and not ck.exists()  # at once: no checkpoint written
    with pytest.raises(KeyboardInterrupt) as stop:  # nowhere to save: Python's own Ctrl-C, mid-step
        train_loop(model, opt, _signalling(_step_fn(model, X, Y), 3, signal.SIGINT), 30)
    assert type(stop.value) is KeyboardInterrupt


def test_a_checkpoint_left_as_old_by_a_kill_between_renames_is_resumed(tmp_path):
    X, Y = _regression_problem()
    model, opt = _make()
    ck = tmp_path / "ck"
    train_loop(model, opt, _step_fn(model, X, Y), 10, checkpoint_dir=ck)
    ck.rename(tmp_path / "ck.old")  # save_checkpoint killed after moving the last one aside
    model2, opt2 = _make(seed=3)
    res = train_loop(model2, opt2, _step_fn(model2, X, Y), 12, checkpoint_dir=ck)
    assert res.resumed_from == 10 and not (tmp_path / "ck.old").exists()


def test_a_resumed_run_reports_the_time_of_every_kept_step(tmp_path):
    # train_seconds of a row is its compute: a run resumed from a checkpoint must add the time of the steps before
    # it (was: only the resumed part). Steps sleep 50 ms, so each segment's time has a known lower bound.
    import time

    X, Y = _regression_problem()
    model, opt = _make()
    base = _step_fn(model, X, Y)

    def slow(step):
        time.sleep(0.05)
        if step == 5:
            raise KeyboardInterrupt  # interrupted after the checkpoint of step 4
        return base(step)

    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        train_loop(model, opt, slow, 8, checkpoint_dir=ck, checkpoint_every=4, config_fingerprint="f")
    first = json.loads((ck / "meta.json").read_text())
    assert first["step"] == 4 and first["train_seconds"] >= 4 * 0.05

    def slow2(step):
        time.sleep(0.05)
        return base(step)

    res = train_loop(model, opt, slow2, 8, checkpoint_dir=ck, checkpoint_every=4, config_fingerprint="f")
    assert res.resumed_from == 4
    assert res.seconds >= first["train_seconds"] + 4 * 0.05  # steps 0-3 (kept) + 4-7; step 5's lost try is not
    recorded = json.loads((ck / "meta.json").read_text())["train_seconds"]  # before the final save
    assert recorded == pytest.approx(res.seconds, abs=0.05) and recorded >= first["train_seconds"] + 4 * 0.05
    done = train_loop(model, opt, slow2, 8, checkpoint_dir=ck, checkpoint_every=4, config_fingerprint="f")
    assert done.resumed_from == 8 and done.seconds >= recorded  # nothing left to run: the recorded time


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    X, Y = _regression_problem()
    model, opt = _make()
    train_loop(model, opt, _step_fn(model, X, Y), 5, checkpoint_dir=tmp_path / "ck", config_fingerprint="aaa")
    with pytest.raises(CheckpointMismatchError, match="another config"):
        train_loop(model, opt, _step_fn(model, X, Y), 10, checkpoint_dir=tmp_path / "ck", config_fingerprint="bbb")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    model, opt = _make()
    save_checkpoint(tmp_path / "ck", model, opt, step=3, fingerprint_="f")
    data = (tmp_path / "ck" / "model.safetensors").read_bytes()
    (tmp_path / "ck" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be read"):
        load_checkpoint(tmp_path / "ck", model, opt, fingerprint_="f")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing", model)


def test_non_finite_loss_stops_with_the_step():
    model, opt = _make()
    x = torch.randn(4, 8)

    def step_fn(step):
        loss = model(x).pow(2).mean()
        return loss * float("nan") if step == 3 else loss

    with pytest.raises(NonFiniteLossError, match="step 3"):
        train_loop(model, opt, step_fn, 10)


def test_resolve_device_and_data_dir(tmp_path):
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu-ish")
    (tmp_path / "glue").mkdir()
    assert resolve_data_dir(tmp_path, "glue", "x") == tmp_path / "glue"
    assert resolve_data_dir(tmp_path / "glue", "glue", "x") == tmp_path / "glue"
    with pytest.raises(DataNotFoundError, match="tried"):
        resolve_data_dir(tmp_path / "none", "meshes", "the meshes")


def test_cli_help_and_version():
    out = subprocess.run([sys.executable, "-m", "sinelr.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for r in RECIPES:
        assert r.name in out.stdout
    out = subprocess.run([sys.executable, "-m", "sinelr.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "sinelr 0." in out.stdout


def test_cli_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", [r.name for r in RECIPES])
def test_every_recipe_has_help(recipe, capsys):
    """Every registered command answers --help with exit code 0 (recipes import lazily)."""
    with pytest.raises(SystemExit) as exc:
        main([recipe, "--help"])
    assert exc.value.code == 0
    assert f"sinelr {recipe}" in capsys.readouterr().out


def test_cli_reports_a_diverging_run_in_one_line(monkeypatch, capsys):
    """A NaN loss inside a recipe ends the command with exit code 2 and the step, not a traceback."""
    import types

    import sinelr.cli as cli

    @dataclass
    class Cfg:
        steps: int = 3

    def run(config):
        model, opt = _make()
        train_loop(model, opt, lambda step: model(torch.randn(2, 8)).sum() * float("nan"), config.steps)

    fake = types.SimpleNamespace(Config=Cfg, run=run, __doc__="a recipe that diverges")
    monkeypatch.setattr(cli, "load_recipe", lambda name: fake)
    assert cli.main(["quickstart", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "step 0" in err and "Traceback" not in err


@pytest.mark.parametrize("path", sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")
                                        if not p.name.startswith("glue_")), ids=lambda p: p.name)
def test_every_recipe_config_loads_and_validates(path):
    """Each config names its command (`sinelr <name>`); it loads into that recipe's Config and passes
    the recipe's checks (GLUE's files are per-task schedules, read and tested in test_glue.py)."""
    import re

    from sinelr.cli import load_recipe
    from sinelr.config import load_config

    match = re.search(r"sinelr (nerf|vit|occupancy|quickstart|spectra)\b", path.read_text())
    assert match, f"{path.name} does not name its command"
    module = load_recipe(match.group(1))
    config = load_config(module.Config, path)
    module._validate(config)


def test_a_mean_std_plot_labels_its_seed_counts_only_where_they_differ(tmp_path):
    from sinelr.report import plot_mean_std, seed_counts

    even = {"sine": {10.0: [1.0, 2.0], 30.0: [2.0, 3.0]}}
    assert seed_counts(even) == {}
    uneven = {"sine": {10.0: [1.0], 30.0: [2.0, 3.0, 2.5]}, "lowrank": {10.0: [0.5]}}
    assert seed_counts(uneven) == {("sine", 10.0): "n=1", ("sine", 30.0): "n=3", ("lowrank", 10.0): "n=1"}
    assert plot_mean_std(tmp_path / "p.png", uneven, "omega", "PSNR", "t", logx=True).stat().st_size > 0


def test_the_carried_report_text_file_when_broken_is_named_and_a_stated_text_replaces_it(tmp_path):
    from sinelr.report import REPORT_TEXT_FILE, carry_report_text

    @dataclass
    class WithNote:  # a recipe with a note and no protocol lines (quickstart)
        note: str = ""

    (tmp_path / REPORT_TEXT_FILE).write_text("{")
    with pytest.raises(ConfigError, match=r"report_text\.json is not valid JSON .*delete it"):
        carry_report_text(WithNote(), tmp_path, 3)
    assert carry_report_text(WithNote(note="n"), tmp_path, 3) == WithNote(note="n")
    assert json.loads((tmp_path / REPORT_TEXT_FILE).read_text()) == {"note": "n", "rows": 3}
    assert carry_report_text(WithNote(), tmp_path, 3) == WithNote(note="n")  # same rows: the note as written
    assert carry_report_text(WithNote(), tmp_path, 4).note == "n [note written for 3 rows; the table has 4 now]"


def test_the_paired_differences_plot_takes_comparisons_of_no_one_and_several_seeds(tmp_path):
    from sinelr.report import plot_paired
    from sinelr.stats import paired_comparison

    comps = [("none", paired_comparison({0: 1.0}, {1: 2.0}), True), ("one", paired_comparison({0: 1.0}, {0: 2.5}), False),
             ("three", paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.0, 2: 4.0}), True)]
    assert [c.n for _, c, _ in comps] == [0, 1, 3]
    path = plot_paired(tmp_path / "p.png", comps, "b - a", "title")
    assert path == tmp_path / "p.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interval_text_names_what_was_paired():
    from sinelr.stats import paired_comparison, t_quantile_975

    three = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.0, 2: 4.0})  # diffs 0.5, 0, 1: sd 0.5
    h = t_quantile_975(2) * 0.5 / 3 ** 0.5
    assert three.interval_text() == f"+0.50 [{0.5 - h:+.2f}, {0.5 + h:+.2f}] (3 seeds)"
    assert three.interval_text(unit="run") == f"+0.50 [{0.5 - h:+.2f}, {0.5 + h:+.2f}] (3 runs)"
    assert paired_comparison({0: 1.0}, {0: 2.5}).interval_text(unit="run") == "+1.50 (1 run: no interval)"
    assert paired_comparison({0: 1.0}, {1: 2.0}).interval_text(unit="run") == "n/a (no paired runs)"
    assert paired_comparison({0: 1.0}, {1: 2.0}).interval_text() == "n/a (no paired seeds)"


def test_seeds_for_half_width_is_the_fewest_seeds_whose_interval_is_that_narrow():
    import math

    from sinelr.stats import paired_comparison, seeds_for_half_width, t_quantile_975

    for sd, width in ((0.865, 0.73), (1.0, 0.5), (3.0, 2.0), (0.2, 1.0)):
        n = seeds_for_half_width(sd, width)
        assert n >= 2 and t_quantile_975(n - 1) * sd / math.sqrt(n) <= width
        assert n == 2 or t_quantile_975(n - 2) * sd / math.sqrt(n - 1) > width  # one seed fewer is too wide
    assert seeds_for_half_width(0.865, 0.73) == 8  # t_7 * 0.865 / sqrt(8) = 0.723; t_6 * 0.865 / sqrt(7) = 0.800
    assert seeds_for_half_width(0.0, 0.1) == 2
    assert seeds_for_half_width(100.0, 0.01, limit=50) == 51  # more than the limit
    # the half-width it promises is the one paired_comparison computes from diffs of that spread
    diffs = {s: (1.0 if s % 2 else -1.0) for s in range(8)}
    comp = paired_comparison({s: 0.0 for s in diffs}, diffs)
    sd = math.sqrt(8 / 7)
    assert comp.high - comp.mean == pytest.approx(t_quantile_975(7) * sd / math.sqrt(8))
    assert seeds_for_half_width(sd, comp.high - comp.mean + 1e-12) <= 8 < seeds_for_half_width(sd, 0.9 * (comp.high - comp.mean))
    for bad in ((-1.0, 0.5), (1.0, 0.0), (float("nan"), 0.5), (1.0, True)):
        with pytest.raises(ValueError, match="sd|half_width"):
            seeds_for_half_width(*bad)
