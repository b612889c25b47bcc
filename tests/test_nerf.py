"""NeRF recipe: LLFF loader (real fern + broken scenes), NDC rays, the model and its conversion, a tiny
end-to-end train/render/report, and the BD-rate / BD-PSNR metrics on hand-checked cases."""
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sinelr.cli import load_recipe, main
from sinelr.report import ResultsConflictError
from sinelr.data import DataNotFoundError
from sinelr.data.llff import camera_rays, load_llff, ndc_rays
from sinelr.layers import LowRankLinear, SineLowRankLinear
from sinelr.metrics import bd_figures, bd_psnr, bd_rate
from sinelr.models.nerf import NeRF, NeRFMLP, convert_nerf, render_image, render_rays, sample_pdf

# ---------------------------------------------------------------- tiny synthetic LLFF scenes


def _write_scene(root, name="tiny", n=9, hw=(12, 16), sizes=None, n_poses=None):
    """A forward-facing toy scene in the nerf_llff_data layout: n views of a colour gradient."""
    from PIL import Image

    base = root / "nerf_llff" / name
    (base / "images_8").mkdir(parents=True)
    h, w = hw
    rng = np.random.default_rng(0)
    for i in range(n):
        hh, ww = sizes[i] if sizes else (h, w)
        yy, xx = np.mgrid[0:hh, 0:ww]
        img = np.stack([xx / ww, yy / hh, 0.5 + 0 * xx], -1) * 255
        Image.fromarray(img.astype(np.uint8)).save(base / "images_8" / f"img{i:03d}.png")
    rows = []
    for i in range(n if n_poses is None else n_poses):
        # LLFF columns (down, right, back), camera looking along -back, small sideways shifts.
        c2w = np.array([[0.0, 1, 0, 0.1 * i + rng.normal(0, 0.01)], [1, 0, 0, 0.05 * i], [0, 0, 1, 0]])
        hwf = np.array([[h * 8], [w * 8], [w * 8 * 0.8]])
        rows.append(np.concatenate([np.concatenate([c2w, hwf], 1).ravel(), [2.0, 10.0]]))
    np.save(base / "poses_bounds.npy", np.array(rows))
    return base


def test_loader_reads_real_fern(shared_data):
    scene = load_llff("fern", shared_data)
    assert scene.images.shape == (20, 378, 504, 3) and scene.images.dtype == torch.float32
    assert 0.0 <= float(scene.images.min()) and float(scene.images.max()) <= 1.0
    assert (scene.height, scene.width) == (378, 504)
    assert scene.focal == pytest.approx(3260.5 / 8, rel=1e-3)
    assert scene.i_test == [0, 8, 16] and len(scene.i_train) == 17
    assert float(scene.bounds.min()) == pytest.approx(1 / 0.75)  # rescaled so the nearest bound is 1/0.75
    # recentred: the mean camera sits at the origin, looking down -z with +y up
    assert scene.poses[:, :, 3].mean(0).abs().max() < 1e-4
    assert float(scene.poses[:, :, 2].mean(0)[2]) > 0.95 and float(scene.poses[:, :, 1].mean(0)[1]) > 0.95
    small = load_llff("fern", shared_data, downscale=4)
    assert small.images.shape == (20, 94, 126, 3) and small.focal == pytest.approx(scene.focal / 4)


def test_ndc_rays_have_image_shape_and_start_on_the_near_plane(tmp_path):
    scene = load_llff("tiny", _write_scene(tmp_path).parent)
    o, d, v = scene.rays(1)
    assert o.shape == d.shape == v.shape == (12, 16, 3)
    assert torch.allclose(o[..., 2], torch.full((12, 16), -1.0), atol=1e-5)  # near plane -> NDC z = -1
    assert torch.allclose(v.norm(dim=-1), torch.ones(12, 16), atol=1e-5)
    assert (d[..., 2] > 0).all()  # depth increases along the ray in NDC
    # a point at infinity along the ray lands on the NDC far plane z = +1
    assert torch.allclose(o[..., 2] + d[..., 2], torch.ones(12, 16), atol=1e-4)
    o_w, d_w = camera_rays(4, 6, 5.0, torch.eye(4)[:3])
    o_n, d_n = ndc_rays(4, 6, 5.0, 1.0, o_w, d_w)
    assert o_n.shape == d_n.shape == (4, 6, 3)


@pytest.mark.parametrize("case, error, names", [
    ("no scene", DataNotFoundError, "missing"),
    ("no images_8", DataNotFoundError, "images_8"),
    ("no poses", DataNotFoundError, "poses_bounds.npy"),
    ("count mismatch", ValueError, "9 images but"),
    ("size mismatch", ValueError, "img004.png"),
    ("corrupt png", ValueError, "img003.png"),
    ("empty images_8", DataNotFoundError, "images_8"),
    ("bad poses array", ValueError, "poses_bounds.npy"),
])
def test_broken_scenes_raise_errors_naming_the_file(tmp_path, case, error, names):
    base = _write_scene(tmp_path, sizes=[(12, 16)] * 4 + [(10, 16)] + [(12, 16)] * 4 if case == "size mismatch" else None,
                        n_poses=8 if case == "count mismatch" else None)
    if case == "no images_8":
        for f in (base / "images_8").iterdir():
            f.unlink()
        (base / "images_8").rmdir()
    elif case == "no poses":
        (base / "poses_bounds.npy").unlink()
    elif case == "corrupt png":
        (base / "images_8" / "img003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    elif case == "empty images_8":
        for f in (base / "images_8").iterdir():
            f.unlink()
    elif case == "bad poses array":
        np.save(base / "poses_bounds.npy", np.zeros((9, 15)))
    with pytest.raises(error, match=names.replace(".", r"\.")):
        load_llff("missing" if case == "no scene" else "tiny", base.parent)


def test_loader_rejects_bad_downscale(tmp_path):
    base = _write_scene(tmp_path)
    with pytest.raises(ValueError, match="downscale"):
        load_llff("tiny", base.parent, downscale=0)


# ---------------------------------------------------------------- model


def test_nerf_mlp_is_the_original_architecture():
    mlp = NeRFMLP()
    assert len(mlp.pts_linears) == 8
    assert mlp.pts_linears[0].in_features == 63 and mlp.pts_linears[5].in_features == 256 + 63
    assert mlp.views_linears[0].in_features == 256 + 27 and mlp.rgb_linear.out_features == 3
    assert sum(p.numel() for p in mlp.parameters()) == 595844  # the well-known NeRF MLP size
    out = mlp(torch.randn(5, 3), torch.nn.functional.normalize(torch.randn(5, 3), dim=-1))
    assert out.shape == (5, 4)


def test_convert_replaces_every_hidden_layer_and_keeps_heads_dense():
    model = NeRF(width=32, depth=8, n_coarse=4, n_fine=4)
    convert_nerf(model, "sine", 2, omega=30.0)
    for net in (model.coarse, model.fine):
        assert all(isinstance(layer, SineLowRankLinear) for layer in net.pts_linears)
        assert isinstance(net.feature_linear, SineLowRankLinear) and isinstance(net.views_linears[0], SineLowRankLinear)
        assert type(net.alpha_linear) is torch.nn.Linear and type(net.rgb_linear) is torch.nn.Linear
    m2 = NeRF(width=32, depth=8, n_coarse=4, n_fine=0)
    convert_nerf(m2, "lowrank", 1, convert_heads=True)
    assert isinstance(m2.coarse.rgb_linear, LowRankLinear)
    with pytest.raises(ValueError, match="alpha_linear"):  # rank 2 > min(in, out) = 1 of the sigma head
        convert_nerf(NeRF(width=32, n_coarse=4, n_fine=0), "lowrank", 2, convert_heads=True)
    with pytest.raises(ValueError, match="method"):
        convert_nerf(NeRF(width=32, n_coarse=4, n_fine=0), "svd", 2)


def test_render_rays_coarse_and_fine_shapes_and_sample_pdf():
    torch.manual_seed(0)
    model = NeRF(width=16, depth=3, skip=-1, n_coarse=8, n_fine=6)
    o = torch.zeros(5, 3)
    d = torch.tensor([[0.0, 0.0, 1.0]]).expand(5, 3)
    out = render_rays(model, o, d, d, perturb=True, noise_std=1.0)
    assert out["rgb_coarse"].shape == out["rgb_fine"].shape == (5, 3) and out["depth"].shape == (5,)
    img = render_image(model, torch.zeros(2, 3, 3), d[:1].expand(2, 3, 3), d[:1].expand(2, 3, 3), chunk=4)
    assert img.shape == (2, 3, 3)
    bins = torch.linspace(0, 1, 5).expand(2, 5)
    w = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    z = sample_pdf(bins, w, 50, deterministic=True)
    assert z.shape == (2, 50)
    assert ((z[0] >= 0.5 - 1e-3) & (z[0] <= 0.75 + 1e-3)).float().mean() > 0.95  # mass where the weight is


# ---------------------------------------------------------------- end to end

nerf_llff = load_recipe("nerf")
bdrate = load_recipe("bdrate")
ROOT = Path(__file__).resolve().parents[1]


def _tiny(tmp_path, data, **over) -> "nerf_llff.Config":
    values = dict(output_dir=str(tmp_path / "results"), run_dir=str(tmp_path / "runs"), data_dir=str(data),
                  scene=["tiny"], ranks=[1, 2], omega=30.0, omegas=[10.0], omega_sweep_ranks=[1], width=16, depth=6,
                  pos_freqs=2, dir_freqs=1, n_coarse=6, n_fine=4, batch_rays=16, steps=3, lr=1e-3, chunk=64,
                  device="cpu")
    values.update(over)
    return nerf_llff.Config(**values)


def _cli(tmp_path, data, *extra: str) -> list:
    return ["nerf", "--output-dir", str(tmp_path / "results"), "--run-dir", str(tmp_path / "runs"), "--data-dir",
            str(data), "--scene", "tiny", "--methods", "lowrank", "sine", "--ranks", "1", "--omega", "30",
            "--width", "16", "--depth", "3", "--pos-freqs", "2", "--dir-freqs", "1", "--n-coarse", "4", "--n-fine", "0",
            "--batch-rays", "8", "--steps", "2", "--lr", "0.001", "--chunk", "64", "--device", "cpu", *extra]


def test_tiny_scene_trains_renders_and_reports_end_to_end(tmp_path, capsys):
    data = _write_scene(tmp_path).parent.parent
    cfg = _tiny(tmp_path, data)
    res = nerf_llff.run(cfg)
    out = tmp_path / "results"
    with (out / "summary.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        assert reader.fieldnames == list(nerf_llff.COLUMNS)
        assert reader.fieldnames[:10] == ["scene", "method", "rank", "omega", "params", "compression", "psnr", "ssim",
                                          "steps", "seed"]  # the layout of the committed tables, extended
    assert len(rows) == 6 == len(res)  # full, lowrank k1 k2, sine k1 k2, sine k1 omega 10
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    assert {len(r["data_sha256"]) for r in rows} == {16} and {r["lr"] for r in rows} == {"0.001"}
    # each trained model is saved compressed; its file size is reported beside the PSNR
    assert all(int(r["model_bytes"]) > 0 for r in rows)
    full_row = next(r for r in rows if r["method"] == "full")
    assert int(next(r for r in rows if r["method"] == "lowrank")["model_bytes"]) < int(full_row["model_bytes"])
    lr1 = next(r for r in rows if r["method"] == "lowrank" and r["rank"] == "1")
    assert float(lr1["compression"]) < 1.0 and int(lr1["params"]) < int(rows[0]["params"])
    assert (out / "views" / "tiny_full_view000.png").is_file()
    summary = (out / "summary.md").read_text()
    assert (out / "fig4_tiny.png").is_file() and "Does the paper's claim hold" in summary
    assert "14.00" in summary and "19.77" in summary  # the paper's numbers beside ours
    assert "sensitivity: full minus low-rank k=1" in summary and "seeds: 1 (0)" in summary
    # the data path actually used, not a fixed default
    assert f"read from {(data / 'nerf_llff').resolve()}" in summary and "../shared/data" not in summary
    # a second invocation resumes: every row is already there
    capsys.readouterr()
    nerf_llff.run(cfg)
    assert "6 of 6 points already in" in capsys.readouterr().out
    bd = bdrate.run(bdrate.Config(paths=[str(out)]))
    assert {"rate_akima", "rate_pchip", "psnr_akima"} <= set(vars(bd[str(out)]["tiny"]))
    assert (out / "rd_plot.png").is_file()
    assert json.loads((out / "bdrate.json").read_text())["omega"] == 30.0


def test_a_second_seed_runs_and_changed_settings_are_refused(tmp_path, capsys):
    data = _write_scene(tmp_path).parent.parent
    assert main(_cli(tmp_path, data, "--seeds", "0")) == 0
    out = tmp_path / "results"
    assert main(_cli(tmp_path, data, "--seeds", "0", "1")) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted(r["seed"] for r in rows) == ["0", "0", "1", "1"]  # seed 1 was not skipped as "already there"
    assert "seeds: 2 (0, 1)" in (out / "summary.md").read_text()
    before = {f: (out / f).read_bytes() for f in ("summary.csv", "summary.md", "config.json")}
    # the learning rate is each row's own: a new rate for an existing row is refused naming the row and both rates
    for flag, value, named in (("--steps", "3", "steps: 2 there, 3 now"),
                               ("--lr", "0.01", "method=lowrank rank=1 omega=0.0 seed=0 computed at lr 0.001, and this "
                                                "run asks lr 0.01"),
                               ("--method-lr", "sine=0.01", "method=sine rank=1 omega=30.0 seed=0 computed at lr 0.001, "
                                                           "and this run asks lr 0.01")):
        capsys.readouterr()
        assert main(_cli(tmp_path, data, "--seeds", "0", "1", flag, value)) == 2
        assert named in capsys.readouterr().err  # the refusal names the key and both values
        assert {f: (out / f).read_bytes() for f in before} == before  # nothing rewritten
    # a method added later joins the folder at its own rate; the rows keep theirs
    assert main(_cli(tmp_path, data, "--seeds", "0", "--methods", "full", "--method-lr", "full=0.01")) == 0
    rates = {(r["method"], r["seed"]): float(r["lr"]) for r in csv.DictReader((out / "summary.csv").open())}
    assert rates == {("full", "0"): 0.01, ("lowrank", "0"): 0.001, ("sine", "0"): 0.001, ("lowrank", "1"): 0.001,
                     ("sine", "1"): 0.001}


def test_downscale_too_large_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    data = _write_scene(tmp_path).parent.parent
    assert main(_cli(tmp_path, data, "--downscale", "1000")) == 2
    err = capsys.readouterr().err
    assert "downscale 1000" in err and "tiny" in err and "16x12" in err
    assert not (tmp_path / "results").exists()


def test_non_finite_loss_stops_training_with_a_message(tmp_path, monkeypatch):
    from sinelr.models import nerf as nerf_mod
    from sinelr.train import NonFiniteLossError

    def nan_render(model, o, *a, **k):
        return {"rgb_coarse": torch.full_like(o, float("nan")), "rgb": torch.full_like(o, float("nan"))}

    monkeypatch.setattr(nerf_mod, "render_rays", nan_render)
    data = _write_scene(tmp_path).parent.parent
    cfg = _tiny(tmp_path, data, methods=["full"], width=8, depth=2, n_coarse=4, n_fine=0, batch_rays=4, steps=2)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        nerf_llff.run(cfg)


def test_bdrate_cli_errors_on_missing_results(tmp_path, capsys):
    assert main(["bdrate", str(tmp_path / "nowhere")]) == 2
    assert "summary.csv" in capsys.readouterr().err


def test_bdrate_help_lists_paths_once(capsys):
    with pytest.raises(SystemExit):
        main(["bdrate", "--help"])
    text = capsys.readouterr().out
    assert "--paths" not in text and "results folders" in text


@pytest.mark.parametrize("folder, config, extra", [
    ("nerf_cpu", "configs/nerf_cpu.yaml", []),
    ("nerf_cpu_long", "configs/nerf_cpu_long.yaml", []),
    ("tuning/tune_lr0.002", "results/nerf/tuning/tune.yaml", ["--lr", "0.002", "--omega", "30"]),
])
def test_committed_summaries_re_render_with_the_same_numbers(tmp_path, folder, config, extra, shared_data, capsys):
    committed = ROOT / "results" / "nerf" / folder
    copy = tmp_path / Path(folder).name
    shutil.copytree(committed, copy)
    args = ["nerf", "--config", str(ROOT / config), "--output-dir", str(copy), "--run-dir", str(tmp_path / "runs"),
            "--render-only", "true", "--data-dir", str(shared_data), *extra]
    assert main(args) == 0
    assert (copy / "summary.csv").read_bytes() == (committed / "summary.csv").read_bytes()
    summary = (copy / "summary.md").read_text()
    for r in csv.DictReader((committed / "summary.csv").open()):
        if r["method"] == "sine" and float(r["omega"]) != float(extra[-1] if extra else 100.0):
            continue
        assert f"{float(r['psnr']):.2f}" in summary, r  # every table row's PSNR is rendered
    # a render under other settings than the rows' config.json is refused (it would misdescribe them)
    capsys.readouterr()
    assert main(args + ["--steps", "7"]) == 2
    assert "there, 7 now" in capsys.readouterr().err


def test_rank_above_the_smallest_layer_is_rejected_before_training(tmp_path):
    cfg = nerf_llff.Config(output_dir=str(tmp_path), data_dir=str(tmp_path), width=128, ranks=[65])
    with pytest.raises(ValueError, match=r"rank 65 is outside \[1, 63\]"):
        nerf_llff.run(cfg)


# ---------------------------------------------------------------- BD metrics, hand-checked

RATES = [1e4, 3e4, 1e5, 3e5]
PSNRS = [20.0, 23.0, 25.0, 26.0]


def test_identical_curves_give_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_curve_shifted_up_by_one_db_gives_bd_psnr_one():
    assert bd_psnr(RATES, PSNRS, RATES, [p + 1 for p in PSNRS]) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, [p - 1 for p in PSNRS]) == pytest.approx(-1.0, abs=1e-9)
    assert bd_rate(RATES, PSNRS, RATES, [p + 1 for p in PSNRS]) < 0  # better quality at equal rate saves rate


def test_half_the_rate_gives_bd_rate_minus_fifty_percent():
    assert bd_rate(RATES, PSNRS, [0.5 * r for r in RATES], PSNRS) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATES, PSNRS, [2.0 * r for r in RATES], PSNRS) == pytest.approx(100.0, abs=1e-6)
    assert bd_psnr(RATES, PSNRS, [0.5 * r for r in RATES], PSNRS) > 0
    # three points: still exact for a pure shift
    assert bd_rate(RATES[:3], PSNRS[:3], [0.5 * r for r in RATES[:3]], PSNRS[:3]) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(RATES, PSNRS, RATES[::-1], PSNRS[::-1]) == pytest.approx(0.0, abs=1e-9)  # order-free


@pytest.mark.parametrize("args, match", [
    (([1e4], [20.0], RATES, PSNRS), "length >= 2"),
    ((RATES, PSNRS[:3], RATES, PSNRS), "equal length"),
    (([-1.0, 2.0], [20.0, 21.0], RATES, PSNRS), "positive"),
    ((RATES, [20.0, float("nan"), 25, 26], RATES, PSNRS), "finite"),
    (([1.0, 2.0], [20.0, 21.0], [1e6, 2e6], [20.0, 21.0]), "overlapping rate"),
    (([1.0, 2.0], [20.0, 21.0], [1.0, 2.0], [30.0, 31.0]), "overlapping quality"),
])
def test_bd_metrics_reject_bad_input(args, match):
    fn = bd_rate if "quality" in match else bd_psnr
    with pytest.raises(ValueError, match=match):
        fn(*args)
    with pytest.raises(ValueError, match="interp"):
        bd_psnr(RATES, PSNRS, RATES, PSNRS, interp="cubic")


PLATEAU_A = ([4061.0, 14145.0, 26750.0], [16.722, 17.657057, 17.657265])
PLATEAU_B = ([4061.0, 14145.0, 26750.0], [16.946, 18.273, 18.792])


def test_bd_rate_on_a_plateau_akima_overshoots_pchip_stays_bounded():
    # Two ranks with the same PSNR (a plateau, seen on fern low-rank k=5/k=10): log-rate over PSNR is
    # nearly vertical there. PCHIP keeps the answer within the range of the point-wise rate ratios;
    # Akima (the paper's interpolation) overshoots by orders of magnitude - the recipes report both.
    a = ([4061.0, 14145.0, 26750.0], [16.722, 17.657057, 17.657265])
    b = ([4061.0, 14145.0, 26750.0], [16.946, 18.273, 18.792])
    pchip = bd_rate(*a, *b, interp="pchip")
    assert -100.0 < pchip < 0.0
    assert abs(bd_rate(*a, *b, interp="akima")) > 1000.0
    assert bd_psnr(*a, *b, interp="akima") == pytest.approx(bd_psnr(*a, *b, interp="pchip"), abs=0.1)


def test_bd_figures_flag_akima_and_pchip_disagreeing_in_sign():
    # A constructed case: Akima gives +827 % (below the old 1000 % flag) while PCHIP gives -28 %.
    rates = [1e3, 3e3, 1e4, 3e4, 1e5]
    a, b = [15.88, 16.64, 16.65, 16.81, 18.37], [16.03, 16.59, 17.02, 17.12, 18.18]
    fig = bd_figures(rates, a, rates, b)
    assert fig.rate_akima == pytest.approx(bd_rate(rates, a, rates, b, "akima")) and 100 < fig.rate_akima < 1000
    assert fig.rate_pchip == pytest.approx(bd_rate(rates, a, rates, b, "pchip")) and fig.rate_pchip < 0
    assert fig.rate_warning() is not None and "disagree in sign" in fig.rate_warning()
    assert "+827" in fig.rate_warning()
    # a pure shift: both interpolations agree exactly, no warning
    ok = bd_figures(RATES, PSNRS, [0.5 * r for r in RATES], PSNRS)
    assert ok.warnings == () and ok.rate_akima == pytest.approx(-50.0) and ok.rate_pchip == pytest.approx(-50.0)
    # agreeing in sign but far apart is flagged too; too few points give an error, not an exception
    far = bd_figures(*PLATEAU_A, *PLATEAU_B)
    assert far.rate_warning() is not None and far.psnr_warning() is None
    assert bd_figures([1e4], [20.0], RATES, PSNRS).error is not None


def test_each_scene_gets_its_own_verdicts_when_the_scene_mean_pairs_fewer_seeds():
    """Fern at 3 seeds beside flower at 1: the scene mean pairs one seed, fern's own verdict pairs three."""
    c = nerf_llff.Config(omega=30.0)
    rows = []
    for scene, seeds in (("fern", (0, 1, 2)), ("flower", (0,))):
        for seed in seeds:
            for method, w, psnr in (("lowrank", 0.0, 16.0 + 0.1 * seed), ("sine", 30.0, 17.0 + 0.2 * seed)):
                rows.append({"scene": scene, "method": method, "rank": 1, "omega": w, "seed": seed, "psnr": psnr,
                             "ssim": 0.5, "params": 10, "compression": 0.1, "model_bytes": 0})
    text = "\n".join(nerf_llff._table_lines(c, rows, ["fern", "flower"]))
    assert "| 1 | 1 | +1.00 (1 seed: no interval) | no difference shown |" in text  # the scene mean: seed 0 only
    per = text[text.index("Per scene"):]
    assert "| fern k=1 | 3 | +1.10 [" in per and "sine better" in per  # differences 1.0, 1.1, 1.2
    assert "| flower k=1 | 1 | +1.00 (1 seed: no interval) |" in per
    assert "Per scene" not in "\n".join(nerf_llff._table_lines(c, [r for r in rows if r["scene"] == "fern"], ["fern"]))


def test_bd_warning_is_printed_beside_the_figure_in_the_summary_table():
    from sinelr.report import rd_bd_figures, rd_bd_lines, rd_curves

    rates = [1000, 3000, 10000, 30000, 100000]
    a, b = [15.88, 16.64, 16.65, 16.81, 18.37], [16.03, 16.59, 17.02, 17.12, 18.18]
    rows = [{"scene": "s", "method": m, "rank": k, "omega": w, "seed": 0, "params": p, "psnr": q}
            for m, w, qs in (("lowrank", 0.0, a), ("sine", 30.0, b)) for k, p, q in zip(range(1, 6), rates, qs)]
    curves = rd_curves(rows, 30.0)
    line = next(x for x in rd_bd_lines(curves, rd_bd_figures(curves)) if x.startswith("| ours: s"))
    assert "+827" in line and "-27.76%" in line and "UNRELIABLE" in line and "disagree in sign" in line


def test_bd_rate_is_computed_once_in_metrics():
    import inspect

    for name in ("nerf", "bdrate"):
        src = inspect.getsource(load_recipe(name))
        assert "Akima1DInterpolator" not in src and "PchipInterpolator" not in src and "-64.72" not in src


def test_omega_sweep_figure_has_one_curve_per_scene_and_rank_with_seed_error_bars(tmp_path, monkeypatch):
    import sinelr.report

    rows = [{"scene": sc, "method": "sine", "rank": 1, "omega": w, "seed": seed, "psnr": 20.0 + w / 100 + seed}
            for sc in ("fern", "flower") for w in (30.0, 100.0, 300.0) for seed in (0, 1)]
    rows += [{"scene": "fern", "method": "lowrank", "rank": 1, "omega": 0.0, "seed": s, "psnr": 19.0 + s} for s in (0, 1)]
    for r in rows:
        r["lr"] = 0.006 if r["method"] == "lowrank" else 0.002
    drawn = {}
    monkeypatch.setattr(sinelr.report, "plot_mean_std",
                        lambda path, series, *a, **k: drawn.update(path=path, series=series, hlines=k.get("hlines"),
                                                                   band_of=k.get("band_of")))
    lines = nerf_llff._omega_lines(rows, ["fern", "flower"], tmp_path)
    assert "![PSNR vs omega](psnr_vs_omega.png)" in lines
    assert sorted(drawn["series"]) == ["fern sine k=1, lr 0.002", "flower sine k=1, lr 0.002"]
    assert drawn["series"]["fern sine k=1, lr 0.002"][100.0] == [21.0, 22.0]  # one value per seed: the bar
    assert ("| k | omega | fern sine, lr 0.002 | fern low-rank, lr 0.006 | flower sine, lr 0.002 | "
            "flower low-rank, lr 0.006 |") in lines[2]  # each scene beside its own low-rank reference
    assert drawn["hlines"] == {}  # two scenes: no low-rank band (whose scene would it be?)
    # equal seed counts: no count shown; flower has no low-rank row
    assert "| 1 | 100 | 21.50 ± 0.71 | 19.50 ± 0.71 | 21.50 ± 0.71 | n/a |" in "\n".join(lines)
    one_low = [r for r in rows if not (r["method"] == "lowrank" and r["seed"] == 1)]
    assert "| 1 | 100 | 21.50 ± 0.71 (2 seeds) | 19.00 (1 seed) |" in "\n".join(
        nerf_llff._omega_lines(one_low, ["fern", "flower"]))  # the reference's count differs: every cell says it


def test_omega_sweep_figure_of_one_scene_draws_each_ranks_low_rank_band_in_its_curves_colour(tmp_path):
    import matplotlib.axes

    rows = [{"scene": "fern", "method": "sine", "rank": k, "omega": w, "seed": s, "psnr": 10.0 * k + w / 100 + s,
             "lr": 0.002} for k in (1, 5) for w in (30.0, 300.0) for s in (0, 1)]
    rows += [{"scene": "fern", "method": "lowrank", "rank": k, "omega": 0.0, "seed": s, "psnr": 10.0 * k - 1 + s,
              "lr": 0.006} for k in (1, 5) for s in (0, 1)]
    lines_drawn = []
    real = matplotlib.axes.Axes.axhline
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.axes.Axes, "axhline",
                   lambda ax, y, **kw: lines_drawn.append((round(y, 6), kw["color"], kw["label"])) or real(ax, y, **kw))
        nerf_llff._omega_lines(rows, ["fern"], tmp_path)
    assert (tmp_path / "psnr_vs_omega.png").is_file()
    assert [(y, label) for y, _, label in lines_drawn] == [(9.5, "fern low-rank k=1, lr 0.006"),
                                                           (49.5, "fern low-rank k=5, lr 0.006")]
    from matplotlib.colors import to_hex

    # each band in its own curve's colour (the first two of the cycle), not gray
    assert [to_hex(c) for _, c, _ in lines_drawn] == [to_hex("C0"), to_hex("C1")]


def test_omega_sweep_table_names_each_cells_seed_count_when_they_differ():
    rows = [{"scene": "fern", "method": "sine", "rank": 1, "omega": w, "seed": seed, "psnr": 20.0 + seed, "lr": 0.002}
            for w in (30.0, 100.0) for seed in ((0, 1, 2) if w == 30.0 else (0,))]
    rows += [{"scene": "fern", "method": "lowrank", "rank": 1, "omega": 0.0, "seed": s, "psnr": 18.0 + s, "lr": 0.006}
             for s in (0, 1)]
    table = "\n".join(nerf_llff._omega_lines(rows, ["fern"]))
    assert "| 1 | 30 | 21.00 ± 1.00 (3 seeds) | 18.50 ± 0.71 (2 seeds) |" in table
    assert "| 1 | 100 | 20.00 (1 seed) | 18.50 ± 0.71 (2 seeds) |" in table


def test_val_views_are_training_views_and_the_test_views_are_never_read(tmp_path, capsys):
    data = _write_scene(tmp_path, n=17).parent.parent  # test views 0, 8, 16; 14 training views
    scene = load_llff("tiny", data)
    held = nerf_llff.hold_out_views(scene, 2)
    assert scene.i_test == [0, 8, 16] and held.i_test == [4, 12]  # evenly spaced among the training views
    assert sorted(held.i_train + held.i_test) == scene.i_train and not set(held.i_train) & set(held.i_test)
    with pytest.raises(nerf_llff.ConfigError, match=r"val_views=14 leaves no training views: scene 'tiny' has 14"):
        nerf_llff.hold_out_views(scene, 14)
    # end to end: the rows are scored on the held-out views, and the summary says it is a tuning run
    cfg = _tiny(tmp_path, data, methods=["full"], val_views=2, n_fine=0, omegas=[])
    nerf_llff.run(cfg)
    out = tmp_path / "results"
    assert sorted(p.name for p in (out / "views").iterdir()) == ["tiny_full_view004.png"]
    assert "scored on **2 validation views** held out of the training views" in (out / "summary.md").read_text()
    assert json.loads((out / "settings.json").read_text())["settings"]["val_views"] == 2
    assert nerf_llff._fig4_title(cfg, "tiny", 4, 0).startswith("tiny: validation view (held out")
    assert nerf_llff._fig4_title(_tiny(tmp_path, data), "tiny", 0, 1) == "tiny: test view 0, seed 1 (cf. paper Fig. 4)"


def test_a_folder_written_before_val_views_existed_still_resumes(tmp_path, capsys):
    data = _write_scene(tmp_path).parent.parent
    cfg = _tiny(tmp_path, data, methods=["full"], n_fine=0, omegas=[])
    nerf_llff.run(cfg)
    settings = json.loads((tmp_path / "results" / "settings.json").read_text())["settings"]
    assert "val_views" not in settings  # at its old behaviour the key is not part of the settings
    capsys.readouterr()
    nerf_llff.run(cfg)
    assert "1 of 1 points already in" in capsys.readouterr().out
    with pytest.raises(ResultsConflictError, match=r"val_views: '<absent>' there, 2 now"):
        nerf_llff.run(_tiny(tmp_path, data, methods=["full"], n_fine=0, omegas=[], val_views=2))
