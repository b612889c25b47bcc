"""The quickstart recipe on a tiny config: files written, typed rows per seed, equal parameter counts,
paired verdicts, resume, refusal of mixed settings, bad input writes nothing."""
import csv
import math

import numpy as np
import pytest
import torch

from sinelr.cli import load_recipe, main

qs = load_recipe("quickstart")


def tiny(tmp_path, **kw):
    base = dict(size=12, ranks=[1, 2], width=16, depth=2, num_frequencies=3, steps=5, seeds=[0, 1],
                output_dir=str(tmp_path / "qs"), run_dir=str(tmp_path / "runs"))
    base.update(kw)
    return qs.Config(**base)


def test_tiny_quickstart_writes_csv_md_png_with_finite_rows(tmp_path):
    cfg = tiny(tmp_path)
    rows = qs.run(cfg)
    out = tmp_path / "qs"
    with (out / "summary.csv").open() as fh:
        table = list(csv.DictReader(fh))
    cells = [("dense", "full"), ("lowrank", "1"), ("sine", "1"), ("lowrank", "2"), ("sine", "2")]
    assert [(r["method"], r["rank"]) for r in table] == cells * 2
    assert [r["seed"] for r in table] == ["0"] * 5 + ["1"] * 5
    for r in table:
        assert math.isfinite(float(r["psnr"])) and float(r["psnr"]) > 0
        assert math.isfinite(float(r["final_loss"]))
    by = {(r["method"], r["rank"]): r for r in table}
    for k in ("1", "2"):  # the comparison is at equal parameter counts, below the dense model's
        assert by[("lowrank", k)]["params"] == by[("sine", k)]["params"]
        assert int(by[("sine", k)]["params"]) < int(by[("dense", "full")]["params"])
        assert float(by[("sine", k)]["compression"]) < 1.0
    md = (out / "summary.md").read_text()
    assert "rows computed by:" in md and "seeds: 0, 1" in md and "git sha" in md
    assert "paired seeds" in md and "| method |" in md and "scikit-image `astronaut`" in md
    assert (out / "reconstructions.png").stat().st_size > 0
    assert (out / "config.json").is_file() and (out / "provenance.json").is_file()
    assert len(rows) == 10 and all(isinstance(r["psnr"], float) and isinstance(r["seed"], int) for r in rows)


def test_seeds_differ_and_one_seed_reproduces_exactly(tmp_path):
    rows = qs.run(tiny(tmp_path, seeds=[0, 1], ranks=[1]))
    again = qs.run(tiny(tmp_path / "b", seeds=[1], ranks=[1]))
    psnr = {(r["method"], r["seed"]): r["psnr"] for r in rows}
    assert psnr[("sine", 0)] != psnr[("sine", 1)]
    assert {(r["method"], r["seed"]): r["psnr"] for r in again} == {k: v for k, v in psnr.items() if k[1] == 1}


def test_a_rerun_skips_finished_points_and_other_settings_are_refused(tmp_path, capsys):
    qs.run(tiny(tmp_path, ranks=[1]))
    capsys.readouterr()
    qs.run(tiny(tmp_path, ranks=[1]))
    assert "6 of 6 points already in" in capsys.readouterr().out
    before = (tmp_path / "qs" / "summary.csv").read_bytes()
    with pytest.raises(ValueError, match="steps"):
        qs.run(tiny(tmp_path, ranks=[1], steps=6))
    assert (tmp_path / "qs" / "summary.csv").read_bytes() == before


def test_a_local_image_file_is_fitted_and_named(tmp_path):
    from skimage import io

    path = tmp_path / "photo.png"
    io.imsave(path, (np.random.default_rng(0).uniform(size=(20, 30, 3)) * 255).astype(np.uint8))
    qs.run(tiny(tmp_path, image=str(path), ranks=[1], seeds=[0]))
    assert f"the local file `{path}`" in (tmp_path / "qs" / "summary.md").read_text()


def test_image_loader_gives_a_square_float_image():
    img = qs.load_image("camera", 10)  # grayscale photo -> one channel
    assert img.shape == (10, 10, 1) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert qs.load_image("astronaut", 8).shape == (8, 8, 3)


@pytest.mark.parametrize("bad, exc, match", [
    ({"size": 2}, ValueError, "size"),
    ({"ranks": []}, ValueError, "ranks"),
    ({"ranks": [0]}, ValueError, "rank"),
    ({"ranks": [17]}, ValueError, "width=16"),
    ({"ranks": [2, 2]}, ValueError, "repeat"),
    ({"seeds": [1, 1]}, ValueError, "repeat"),
    ({"steps": 0}, ValueError, "steps"),
    ({"lr": -1.0}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"method_lr": ["sine=-1"]}, ValueError, "sine"),
    ({"method_lr": ["lora=0.1"]}, ValueError, "lora"),
    ({"omega": 0.0}, ValueError, "omega"),
    ({"gain": -2.0}, ValueError, "gain"),
    ({"image": "no_such_photo"}, FileNotFoundError, "no_such_photo"),
])
def test_bad_config_values_give_clear_errors(tmp_path, bad, exc, match):
    with pytest.raises(exc, match=match):
        qs.run(tiny(tmp_path, **bad))
    assert not (tmp_path / "qs").exists()  # nothing written


def test_corrupt_image_is_refused_before_anything_is_written(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="corrupt.png"):
        qs.run(tiny(tmp_path, image=str(bad)))
    assert not (tmp_path / "qs").exists()


def test_diverging_run_keeps_the_previous_results(tmp_path, monkeypatch):
    qs.run(tiny(tmp_path, ranks=[1], seeds=[0]))
    out = tmp_path / "qs"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    original = qs.run_one

    def diverge(c, lrs, image, point, folder):
        if point["seed"] == 1 and point["method"] == "sine":
            raise ValueError("sine k=1 seed 1 diverged: non-finite loss nan at step 3")
        return original(c, lrs, image, point, folder)

    monkeypatch.setattr(qs, "run_one", diverge)
    with pytest.raises(ValueError, match="diverged"):
        qs.run(tiny(tmp_path, ranks=[1], seeds=[0, 1]))
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 5  # the old 3 rows plus the two seed-1 points finished before the failure
    assert "seeds: 0, 1" in (out / "summary.md").read_text()  # md and csv describe the same rows
    assert before["settings.json"] == (out / "settings.json").read_bytes()  # same settings for every row


def test_cli_reports_bad_values_as_usage_errors(tmp_path, capsys):
    assert main(["quickstart", "--steps", "0", "--output-dir", str(tmp_path / "q")]) == 2
    assert "sinelr quickstart: error: steps must be an integer >= 1, got 0" in capsys.readouterr().err
