"""Occupancy recipe: labelling on a sphere, winding-number labels of open and non-manifold meshes, mesh checks
and bad input, the label cache, validation points, the quick config end to end."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")

from sinelr.config import ConfigError, load_config  # noqa: E402
import sinelr.data.occupancy as occ  # noqa: E402
from sinelr.data.occupancy import (  # noqa: E402
    MeshError,
    check_grid_memory,
    choose_inside_test,
    grid_points,
    label_grid,
    label_points,
    load_mesh,
    mesh_defects,
    prepare_occupancy,
    sample_training_points,
    sample_validation_points,
    winding_numbers,
    winding_numbers_exact,
)
from sinelr.metrics import iou  # noqa: E402
from sinelr.models.occupancy import OccupancyMLP, hidden_linear_factory  # noqa: E402
from sinelr.cli import load_recipe, main  # noqa: E402

occupancy_3d = load_recipe("occupancy")

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "occupancy_quick.yaml"


@pytest.fixture
def sphere_file(tmp_path: Path) -> Path:
    path = tmp_path / "sphere.ply"
    trimesh.creation.icosphere(subdivisions=4, radius=0.7).export(path)
    return path


def _tiny_config(tmp_path: Path, mesh: str, **over) -> occupancy_3d.Config:
    values = dict(mesh=[mesh], output_dir=str(tmp_path / "results"), run_dir=str(tmp_path / "runs"),
                  cache_dir=str(tmp_path / "cache"), eval_resolution=16, mesh_resolution=12, n_uniform=500,
                  n_surface=500, steps=3, batch_size=128, ranks=[1], omegas=[], checkpoint_every=0)
    values.update(over)
    return load_config(occupancy_3d.Config, QUICK, values)


def test_grid_labels_of_a_sphere_match_the_analytic_inside_test():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    labels = label_grid(sphere, 48)
    analytic = np.linalg.norm(grid_points(48), axis=1) < 0.7
    assert iou(torch.from_numpy(labels.ravel()), torch.from_numpy(analytic)) > 0.99


def test_point_labels_of_a_sphere_match_the_analytic_inside_test():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    pts = np.random.default_rng(0).uniform(-1, 1, size=(4000, 3))
    r = np.linalg.norm(pts, axis=1)
    far = np.abs(r - 0.7) > 0.01  # the icosphere is a polyhedron: skip the thin shell where it differs
    assert np.array_equal(label_points(sphere, pts)[far], (r < 0.7)[far])


def test_model_counts_parameters_of_each_hidden_kind():
    dense = OccupancyMLP(hidden_features=32, scale=5.0)
    sine = OccupancyMLP(hidden_features=32, scale=5.0, linear_layer=hidden_linear_factory("sine", 2, omega=30.0))
    low = OccupancyMLP(hidden_features=32, scale=5.0, linear_layer=hidden_linear_factory("lowrank", 2))
    assert sum(p.numel() for p in sine.parameters()) == sum(p.numel() for p in low.parameters())
    assert sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in low.parameters()) == 32 * 32 - 2 * 64
    assert sine(torch.zeros(5, 3)).shape == (5,)
    with pytest.raises(ValueError, match="kind"):
        hidden_linear_factory("conv", 2)


def test_missing_mesh_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.obj"):
        load_mesh(tmp_path / "nope.obj")


def test_empty_mesh_file_is_a_clear_error(tmp_path):
    (tmp_path / "empty.obj").write_bytes(b"")
    with pytest.raises(MeshError, match="empty"):
        load_mesh(tmp_path / "empty.obj")


def test_corrupt_mesh_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n\x00\x01garbage")
    with pytest.raises(MeshError, match="bad.ply"):
        load_mesh(tmp_path / "bad.ply")


def test_text_with_a_mesh_suffix_is_a_clear_error(tmp_path):
    (tmp_path / "notes.obj").write_text("this is not a mesh\njust some words\n")
    with pytest.raises(MeshError, match="notes.obj"):
        load_mesh(tmp_path / "notes.obj")


def test_non_mesh_file_type_is_a_clear_error(tmp_path):
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(MeshError, match="not a mesh file"):
        load_mesh(tmp_path / "image.png")


def test_flat_mesh_without_volume_is_refused(tmp_path):
    path = tmp_path / "flat.ply"
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [1, 3, 2]], process=False).export(path)
    with pytest.raises(MeshError, match="degenerate"):
        load_mesh(path)


def _holed_sphere() -> "trimesh.Trimesh":
    """An icosphere of radius 0.7 with the faces of its top cap (z > 0.65) removed: a hole ~0.5 wide."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.7)
    keep = sphere.triangles_center[:, 2] < 0.65
    assert 0 < (~keep).sum() < 80
    return trimesh.Trimesh(sphere.vertices, sphere.faces[keep], process=True)


def _flap_sphere() -> "trimesh.Trimesh":
    """A closed icosphere plus a zero-volume flap: one triangle and its oppositely wound copy on an existing
    edge, reaching out to a new vertex (so that edge is shared by four faces)."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.7)
    a, b = sphere.edges_unique[0]
    tip = (sphere.vertices[a] + sphere.vertices[b]) * 0.5 * 1.25
    n = len(sphere.vertices)
    faces = np.vstack([sphere.faces, [[a, b, n], [b, a, n]]])
    return trimesh.Trimesh(np.vstack([sphere.vertices, tip]), faces, process=False)


def _far_points(n: int = 3000, radius: float = 0.7, gap: float = 0.03, seed: int = 0):
    pts = np.random.default_rng(seed).uniform(-1, 1, size=(n, 3))
    r = np.linalg.norm(pts, axis=1)
    far = np.abs(r - radius) > gap
    return pts[far], r[far] < radius


def test_winding_labels_agree_with_ray_parity_on_a_watertight_mesh():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.7)
    pts, analytic = _far_points()
    assert choose_inside_test(sphere) == "parity" and mesh_defects(sphere) == []
    parity = label_points(sphere, pts, "parity")
    winding = label_points(sphere, pts, "winding")
    assert np.array_equal(winding, parity) and np.array_equal(winding, analytic)


def test_exact_winding_number_matches_the_solid_angle_formula():
    box = trimesh.creation.box()  # the unit cube centred at 0
    pts = np.array([[0.0, 0, 0], [0.2, -0.3, 0.1], [0.9, 0, 0], [0.3, 2.0, -1.0]])
    assert np.allclose(winding_numbers_exact(box.vertices, box.faces, pts), [1, 1, 0, 0], atol=1e-9)
    # flipped winding: -1 inside
    assert np.allclose(winding_numbers_exact(box.vertices, box.faces[:, ::-1], pts[:2]), [-1, -1], atol=1e-9)
    # one face of a cube seen from its centre covers 1/6 of the sphere of directions
    face = box.faces[np.abs(box.triangles_center[:, 0] - 0.5) < 1e-9]
    assert len(face) == 2
    assert abs(abs(winding_numbers_exact(box.vertices, face, pts[:1])[0]) - 1 / 6) < 1e-12
    # chunking does not change the sum
    many = np.random.default_rng(1).uniform(-1, 1, size=(50, 3))
    assert np.allclose(winding_numbers_exact(box.vertices, box.faces, many, chunk_work=12),
                       winding_numbers_exact(box.vertices, box.faces, many), atol=1e-12)


def test_fast_winding_number_agrees_with_the_exact_sum_on_an_open_mesh():
    pytest.importorskip("igl")
    mesh = _holed_sphere()
    pts = np.random.default_rng(2).uniform(-1, 1, size=(2000, 3))
    exact = winding_numbers_exact(mesh.vertices, mesh.faces, pts)
    assert np.abs(winding_numbers(mesh, pts) - exact).max() < 1e-2
    assert (exact > 0.9).any() and (np.abs(exact) < 0.1).any()  # points inside and outside


def test_without_libigl_the_exact_sum_is_used_or_libigl_is_asked_for(monkeypatch):
    mesh = _holed_sphere()
    pts = np.random.default_rng(3).uniform(-1, 1, size=(300, 3))
    monkeypatch.setitem(__import__("sys").modules, "igl", None)  # import igl now raises ImportError
    assert np.allclose(winding_numbers(mesh, pts), winding_numbers_exact(mesh.vertices, mesh.faces, pts))
    monkeypatch.setattr(occ, "_EXACT_WINDING_MAX_WORK", 10.0)
    with pytest.raises(MeshError, match="pip install libigl"):
        winding_numbers(mesh, pts)


def test_open_mesh_is_accepted_and_points_well_inside_stay_inside(tmp_path):
    path = tmp_path / "holed.ply"
    _holed_sphere().export(path)
    mesh = load_mesh(path)  # refused before: "not watertight"
    defects = mesh_defects(mesh)
    assert len(defects) == 1 and "boundary edges" in defects[0]
    assert choose_inside_test(mesh) == "winding"
    pts = np.random.default_rng(4).uniform(-1, 1, size=(4000, 3))
    r = np.linalg.norm(pts, axis=1)
    labels = label_points(mesh, pts)
    assert labels[r < 0.5].all() and not labels[r > 0.9].any()
    # ray parity labels the column above the hole inside (one crossing below); the winding number does not
    assert occ._parity_labels(mesh, pts)[r > 0.9].any()
    data = prepare_occupancy(path, 24, 300, 300, [0.01], 0, tmp_path / "cache", margin=0.0)
    assert data.inside_test == "winding" and data.defects == tuple(defects)
    lo, hi = mesh.bounds  # undo the normalisation (centre the bounding box, longest side -> [-1, 1])
    original = grid_points(24) * float((hi - lo).max()) / 2.0 + (lo + hi) / 2.0
    analytic = np.linalg.norm(original, axis=1) < 0.7
    assert iou(torch.from_numpy(data.grid.ravel()), torch.from_numpy(analytic)) > 0.9
    assert any(p.name.endswith("_gwn.npz") for p in (tmp_path / "cache").iterdir())


def test_zero_volume_flap_is_handled_and_named(tmp_path):
    path = tmp_path / "flap.ply"
    _flap_sphere().export(path)
    mesh = load_mesh(path)  # refused before with "it has holes or open boundaries"
    assert len(mesh.faces) == len(trimesh.creation.icosphere(subdivisions=3).faces) + 2
    defects = mesh_defects(mesh)
    assert len(defects) == 1 and "non-manifold" in defects[0] and "4 faces" in defects[0]
    assert "hole" not in " ".join(defects) and "boundary" not in " ".join(defects)
    pts, analytic = _far_points(20000, seed=7)
    assert np.array_equal(label_points(mesh, pts), analytic)  # the flap's two triangles cancel
    # ray parity merges the flap's two coincident hits into one crossing and flips the columns through it
    assert (occ._parity_labels(mesh, pts) != analytic).any()
    with pytest.raises(MeshError, match="non-manifold") as err:
        label_points(mesh, pts, "parity")
    assert "hole" not in str(err.value)


def test_open_surface_without_volume_is_refused_naming_its_defect(tmp_path):
    path = tmp_path / "sheet.ply"  # one tilted triangle: not flat in any axis, but encloses nothing
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0.3], [0, 1, 0.6]], [[0, 1, 2]], process=False).export(path)
    with pytest.raises(MeshError, match="encloses no volume") as err:
        prepare_occupancy(path, 16, 100, 100, [0.01], 0, tmp_path / "cache")
    assert "3 boundary edges" in str(err.value) and "sheet.ply" in str(err.value)


def test_unknown_inside_test_is_refused():
    with pytest.raises(ValueError, match="'rays'"):
        choose_inside_test(trimesh.creation.box(), "rays")


def test_validation_points_are_an_independent_draw(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.7)
    train, _ = sample_training_points(sphere, 500, 500, [0.01], 0)
    val, val_labels = sample_validation_points(sphere, 500, 500, [0.01], 0)
    assert val.shape == train.shape
    assert not (train[:, None, :] == val[None, :, :]).all(-1).any()  # no shared point
    r = np.linalg.norm(val, axis=1)
    far = np.abs(r - 0.7) > 0.03
    assert np.array_equal(val_labels[far], (r < 0.7)[far])
    again, _ = sample_validation_points(sphere, 500, 500, [0.01], 0)
    assert np.array_equal(again, val)  # reproducible


def test_recipe_runs_on_an_open_mesh(tmp_path):
    path = tmp_path / "holed.ply"
    _holed_sphere().export(path)
    occupancy_3d.run(_tiny_config(tmp_path, str(path), methods=["full"]))
    with (tmp_path / "results" / "holed" / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and 0.0 < float(rows[0]["iou"]) <= 1.0


def test_resolution_too_large_for_memory_is_refused():
    with pytest.raises(ValueError, match="eval_resolution=100000"):
        check_grid_memory(100_000)


def test_unknown_config_key_is_refused():
    with pytest.raises(ConfigError, match="eval_resolutoin"):
        load_config(occupancy_3d.Config, QUICK, {"eval_resolutoin": 8})


def test_bad_input_writes_nothing_and_keeps_existing_results(tmp_path, sphere_file):
    good = _tiny_config(tmp_path, str(sphere_file), methods=["full"])
    occupancy_3d.run(good)
    summary = tmp_path / "results" / "sphere" / "summary.csv"
    before = summary.read_bytes()
    (tmp_path / "sphere_bad").mkdir()
    bad_file = tmp_path / "sphere_bad" / "sphere.obj"
    bad_file.write_text("not a mesh\n")
    for bad in (_tiny_config(tmp_path, str(bad_file)), _tiny_config(tmp_path, str(tmp_path / "missing.ply")),
                _tiny_config(tmp_path, str(sphere_file), eval_resolution=100_000)):
        with pytest.raises((ValueError, FileNotFoundError)):
            occupancy_3d.run(bad)
    assert summary.read_bytes() == before


def test_label_cache_is_reused_and_keyed_by_resolution(tmp_path, sphere_file, monkeypatch):
    first = prepare_occupancy(sphere_file, 16, 200, 200, [0.01], 0, tmp_path)
    assert not first.cache_hit
    import sinelr.data.occupancy as occ

    def fail(*args, **kwargs):
        raise AssertionError("labels recomputed although cached")

    monkeypatch.setattr(occ, "label_grid", fail)
    monkeypatch.setattr(occ, "label_points", fail)
    again = prepare_occupancy(sphere_file, 16, 200, 200, [0.01], 0, tmp_path)
    assert again.cache_hit
    assert np.array_equal(again.grid, first.grid) and np.array_equal(again.labels, first.labels)
    monkeypatch.undo()
    other = prepare_occupancy(sphere_file, 12, 200, 200, [0.01], 0, tmp_path)
    assert not other.cache_hit and other.grid.shape == (12, 12, 12)


def test_quick_config_runs_on_the_real_bunny_and_resumes(tmp_path, shared_data, capsys):
    mesh = shared_data / "meshes" / "bunny_watertight_remeshed.obj"
    if not mesh.is_file():
        pytest.skip(f"{mesh} not found")
    config = _tiny_config(tmp_path, str(mesh), ranks=[1, 2], omegas=[30.0, 100.0])
    results = occupancy_3d.run(config)
    out = tmp_path / "results" / "bunny_watertight_remeshed"
    with (out / "summary.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == list(occupancy_3d.COLUMNS)
        rows = list(reader)
    # full + (low-rank, sine) x 2 ranks + one extra sweep omega (100 is the table's omega)
    assert len(rows) == len(results["bunny_watertight_remeshed"]) == 6
    assert all(0.0 <= float(r["iou"]) <= 1.0 for r in rows)
    for name in ("summary.md", "iou_vs_omega.png", "renders_k1.png", "config.json", "provenance.json"):
        assert (out / name).is_file(), name
    assert "84.3" in (out / "summary.md").read_text()  # the paper's numbers sit beside ours
    # a second run finds every row done and trains nothing
    capsys.readouterr()
    occupancy_3d.run(config)
    assert "6 of 6 points already in" in capsys.readouterr().out


def _tiny_cli(tmp_path: Path, mesh: Path, *extra: str) -> list:
    return ["occupancy", "--config", str(QUICK), "--mesh", str(mesh), "--output-dir", str(tmp_path / "results"),
            "--run-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--eval-resolution", "16",
            "--mesh-resolution", "12", "--n-uniform", "300", "--n-surface", "300", "--steps", "2", "--batch-size",
            "64", "--ranks", "1", "--omegas", "none", "--checkpoint-every", "0", *extra]


def test_a_new_seed_adds_rows_and_changed_settings_are_refused(tmp_path, sphere_file, capsys):
    assert main(_tiny_cli(tmp_path, sphere_file, "--methods", "lowrank", "--seeds", "0")) == 0
    out = tmp_path / "results" / "sphere"
    assert main(_tiny_cli(tmp_path, sphere_file, "--methods", "lowrank", "--seeds", "0", "1")) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted(r["seed"] for r in rows) == ["0", "1"]  # the seed is in the key: seed 1 was not skipped
    before = (out / "summary.csv").read_bytes()
    for flag, value in (("--steps", "3"), ("--lr", "0.01"), ("--eval-resolution", "12")):
        capsys.readouterr()
        assert main(_tiny_cli(tmp_path, sphere_file, "--methods", "lowrank", "--seeds", "0", "1", flag, value)) == 2
        assert flag[2:].replace("-", "_") in capsys.readouterr().err
        assert (out / "summary.csv").read_bytes() == before
    summary = (out / "summary.md").read_text()
    assert "seeds: 2 (0, 1)" in summary and "low-rank" in summary


def test_committed_bunny_table_reloads_typed_with_the_same_numbers():
    committed = ROOT / "results" / "occupancy" / "bunny_watertight_remeshed" / "summary.csv"
    rows = list(csv.DictReader(committed.open()))
    from sinelr.report import ResultsTable

    typed = ResultsTable(committed, occupancy_3d.COLUMNS, occupancy_3d.KEY).rows
    assert len(typed) == len(rows)
    for raw, t in zip(rows, typed):
        assert t["iou"] == pytest.approx(float(raw["iou"])) and isinstance(t["seed"], int)
        assert t["rank"] == (raw["rank"] if raw["rank"] == "full" else int(raw["rank"]))


def test_runs_that_did_not_train_are_named_under_the_table():
    recipe = load_recipe("occupancy")
    rows = [{"method": "full", "rank": "full", "omega": None, "seed": s, "iou": 0.98, "final_loss": 0.1} for s in (0, 1)]
    rows += [{"method": "lowrank", "rank": 20, "omega": None, "seed": s, "iou": iou, "final_loss": loss}
             for s, iou, loss in ((0, 0.57, 0.46), (1, 0.97, 0.14))]
    rows += [{"method": "sine", "rank": 20, "omega": 100.0, "seed": 0, "iou": 0.98, "final_loss": 0.29}]  # 2.9x: fine
    lines = recipe._failed_training_lines(*recipe._failed_runs(rows))
    assert lines[0].startswith("**Runs that did not train** (final training loss > 3x the full model's mean 0.100)")
    assert lines[2:] == ["- low-rank k=20: seed(s) 0: final loss 0.460, IoU 57.0%", ""]
    assert recipe._failed_training_lines(*recipe._failed_runs([r for r in rows if r["final_loss"] < 0.3])) == []


def test_a_verdict_over_runs_that_did_not_train_says_it_is_not_evidence():
    recipe = load_recipe("occupancy")
    c = recipe.Config(omega=100.0)
    rows = [{"method": "full", "rank": "full", "omega": None, "seed": s, "iou": 0.98, "final_loss": 0.1, "params": 9,
             "compression": 1.0} for s in (0, 1, 2)]
    for k, low_loss in ((5, 0.14), (20, 0.5)):
        rows += [{"method": "lowrank", "rank": k, "omega": None, "seed": s, "iou": 0.5 if low_loss > 0.3 else 0.96,
                  "final_loss": low_loss, "params": 3, "compression": 0.3} for s in (0, 1, 2)]
        rows += [{"method": "sine", "rank": k, "omega": 100.0, "seed": s, "iou": 0.97 + 0.001 * s, "final_loss": 0.12,
                  "params": 3, "compression": 0.3} for s in (0, 1, 2)]
    text = "\n".join(recipe._table_lines(c, rows))
    row5 = next(line for line in text.splitlines() if line.startswith("| 5 | 3 |"))
    row20 = next(line for line in text.splitlines() if line.startswith("| 20 | 3 |"))
    assert row5.endswith("| sine better |") and row20.endswith("| not evidence: runs did not train (below) |")
