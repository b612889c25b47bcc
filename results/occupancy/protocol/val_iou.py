"""Validation IoU of the occupancy protocol runs (docs/occupancy.md, "Protocol"): for every run folder
results/occupancy/protocol/<name>/<mesh>/ this rebuilds each model of its summary.csv from the recipe's
config.json, loads its final checkpoint from the run's --run-dir, and scores it on held-out points
(sinelr.data.occupancy.sample_validation_points: an independent draw of 100k uniform + 100k near-surface
points, never the training points and never the 128^3 test grid). Writes val_iou.csv and val_iou.md here.

    OMP_NUM_THREADS=1 python results/occupancy/protocol/val_iou.py
    OMP_NUM_THREADS=1 python results/occupancy/protocol/val_iou.py lr_k20_x1 lr_k20_x3   # only these folders;
        # the rows of the other folders are kept from val_iou.csv (their checkpoints may be gone)
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from sinelr.data.occupancy import load_mesh, normalize_mesh, sample_validation_points  # noqa: E402
from sinelr.metrics import iou  # noqa: E402
from sinelr.models.occupancy import OccupancyMLP, hidden_linear_factory  # noqa: E402
from sinelr.report import markdown_table, provenance  # noqa: E402

HERE = Path(__file__).resolve().parent


def _val_set(config: dict, mesh_path: str, cache: Path):
    seed = config["seed"] if "seed" in config else config["seeds"][0]  # the protocol runs use one seed
    key = (f"val_{Path(mesh_path).stem}_u{config['n_uniform']}_s{config['n_surface']}_"
           f"sig{'-'.join(f'{s:g}' for s in config['surface_sigma'])}_seed{seed}_m{config['margin']:g}.npz")
    f = cache / key
    if f.is_file():
        with np.load(f) as z:
            return z["points"], z["labels"]
    mesh = normalize_mesh(load_mesh(mesh_path), config["margin"])
    pts, labels = sample_validation_points(mesh, config["n_uniform"], config["n_surface"], config["surface_sigma"],
                                           seed)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(f, points=pts, labels=labels)
    return pts, labels


def _lr(config: dict, method: str) -> float:
    """The learning rate a row trained with: its method's method_lr item, else lr."""
    from sinelr.config import parse_assignments

    return parse_assignments("method_lr", config.get("method_lr") or [], ("full", "lowrank", "sine")).get(
        method, float(config["lr"]))


def main(only=()) -> None:
    torch.set_num_threads(1)
    rows = []
    if only:  # keep the rows of the other folders as they are in val_iou.csv
        with (HERE / "val_iou.csv").open() as fh:
            rows = [{k: (float(v) if k in ("val_iou", "val_bce", "test_iou") else v) for k, v in r.items()}
                    for r in csv.DictReader(fh) if r["run"] not in only]
    for cfg_file in sorted(HERE.glob("*/*/config.json")):
        outdir = cfg_file.parent
        if only and outdir.parent.name not in only:
            continue
        if not (outdir / "summary.csv").is_file():  # a run still labelling or training its first model
            continue
        config = json.loads(cfg_file.read_text())
        config = config.get("config", config)
        header = json.loads((outdir / "provenance.json").read_text()) if (outdir / "provenance.json").is_file() else {}
        mesh_path = header.get("mesh_path") or json.loads(cfg_file.read_text()).get("mesh_path")
        if mesh_path is None:  # runs of the sweep runner: the mesh is looked up as the recipe does
            from sinelr.data import resolve_data_dir

            mesh_path = str(resolve_data_dir(config.get("data_dir"), "meshes", "meshes") / config["mesh"][0])
        pts, labels = _val_set(config, mesh_path, ROOT / "runs" / "cache" / "occupancy")
        x, y = torch.from_numpy(pts), torch.from_numpy(labels.astype(bool))
        with (outdir / "summary.csv").open() as fh:
            summary = list(csv.DictReader(fh))
        for r in summary:
            kind = "dense" if r["method"] == "full" else r["method"]
            rank = None if kind == "dense" else int(r["rank"])
            omega = float(r["omega"]) if r["omega"] else config["omega"]
            model = OccupancyMLP(3, config["hidden_features"], config["hidden_layers"], config["scale"],
                                 linear_layer=hidden_linear_factory(kind, rank, omega=omega, gain=config["gain"]))
            ckpt = (ROOT / config["run_dir"] / r["mesh"] /
                    f"{r['method']}_k{r['rank']}_w{r['omega'] or 'na'}_seed{r['seed']}" / "model.safetensors")
            if not ckpt.is_file():  # the sweep runner's layout: <run_dir>/<mesh>/<slug>-<fingerprint>/model/
                from sinelr.sweep import _slug

                point = {"mesh": r["mesh"], "method": r["method"],
                         "rank": r["rank"] if r["rank"] == "full" else int(r["rank"]),
                         "omega": float(r["omega"]) if r["omega"] else None, "seed": int(r["seed"])}
                slug = _slug(point) + "-"
                found = sorted((ROOT / config["run_dir"] / r["mesh"]).glob(slug + "*/model/model.safetensors"))
                if len(found) != 1:
                    raise FileNotFoundError(f"{len(found)} run folders match {slug}* under {config['run_dir']}")
                ckpt = found[0]
            from safetensors.torch import load_model

            load_model(model, str(ckpt))
            model.eval()
            with torch.inference_mode():
                logits = torch.cat([model(x[s:s + 65536]) for s in range(0, len(x), 65536)])
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float()).item()
            rows.append({"run": outdir.parent.name, "method": r["method"], "rank": r["rank"],
                         "omega": r["omega"], "lr": f"{_lr(config, r['method']):g}", "steps": config["steps"],
                         "val_iou": 100 * iou(logits > 0, y), "val_bce": bce, "test_iou": 100 * float(r["iou"])})
            print(rows[-1], flush=True)
    rows.sort(key=lambda r: r["run"])
    cols = ["run", "method", "rank", "omega", "lr", "steps", "val_iou", "val_bce", "test_iou"]
    with (HERE / "val_iou.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k in ("val_iou", "val_bce", "test_iou") else v)
                        for k, v in r.items()})
    prov = provenance()
    (HERE / "val_iou.md").write_text("\n".join([
        "# Occupancy protocol runs: validation IoU (held-out points) beside the test IoU (128^3 grid)", "",
        f"- command: `{prov['command']}`; git sha: {prov['git_sha']}; date: {prov['date']}",
        "- validation set: sample_validation_points (100k uniform + 100k near-surface points, seed offset "
        "1,000,000: disjoint from the training draw and from the grid); val_bce: mean BCE there", "",
        markdown_table(rows, cols, ["run", "method", "rank", "omega", "lr", "steps", "val IoU %", "val BCE",
                                    "test IoU % (128^3 grid)"], floatfmt=".3f"), ""]))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]))
