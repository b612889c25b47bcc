"""Looking at occupancy fields: a model's prediction on the evaluation grid, a shaded depth render of
a grid, and the marching-cubes surface of a model as a PLY file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .occupancy import grid_points

__all__ = ["predict_grid", "depth_render", "marching_cubes_ply", "pack_grid", "unpack_grid"]


def predict_grid(model: torch.nn.Module, resolution: int, chunk: int, device: torch.device,
                 logits: bool = False) -> np.ndarray:
    """Occupancy (bool) or logits (float32) of `model` on the R^3 cell-centre grid, shape (R, R, R)."""
    total = resolution ** 3
    out = np.empty(total, dtype=np.float32 if logits else bool)
    with torch.inference_mode():
        for start in range(0, total, chunk):
            pts = torch.from_numpy(grid_points(resolution, start, start + chunk)).to(device)
            y = model(pts).float().cpu().numpy()
            out[start:start + len(y)] = y if logits else (y > 0)
    return out.reshape(resolution, resolution, resolution)


def pack_grid(grid: np.ndarray) -> np.ndarray:
    """A bool grid as packed bits (what the run folders store)."""
    return np.packbits(grid.ravel())


def unpack_grid(bits: np.ndarray, resolution: int) -> np.ndarray:
    """Inverse of `pack_grid` for an R^3 grid."""
    return np.unpackbits(bits)[: resolution ** 3].astype(bool).reshape((resolution,) * 3)


def depth_render(occ: np.ndarray) -> np.ndarray:
    """A shaded orthographic depth image (H, W) of an occupancy grid [x, y, z] seen from +z, y up; NaN = empty."""
    R = occ.shape[2]
    any_z = occ.any(axis=2)
    top = R - 1 - np.argmax(occ[:, :, ::-1], axis=2)  # highest occupied z per (x, y)
    depth = np.where(any_z, top, np.nan).astype(np.float64) / R
    gx, gy = np.gradient(np.nan_to_num(depth, nan=0.0) * R / 2.0)
    normal = np.stack([-gx, -gy, np.ones_like(gx)])
    normal /= np.linalg.norm(normal, axis=0)
    light = np.array([-0.4, 0.5, 0.77])
    shade = np.clip(np.tensordot(light / np.linalg.norm(light), normal, axes=1), 0, 1) * 0.75 + 0.25 * depth
    img = np.where(any_z, np.clip(shade, 0, 1), np.nan)
    return img.T[::-1]  # rows = y (up), cols = x


def marching_cubes_ply(logit_grid: np.ndarray, path: Path, max_faces: int) -> Optional[int]:
    """Write the zero level set of `logit_grid` as a binary PLY in [-1, 1]^3; None when there is no surface.

    When the mesh has more than `max_faces` triangles, marching cubes is rerun with a larger step
    (skimage's step_size) so committed files stay small.
    """
    import trimesh
    from skimage.measure import marching_cubes

    if not (logit_grid.min() < 0 < logit_grid.max()):
        return None
    R = logit_grid.shape[0]
    step = 1
    while True:
        verts, faces, _, _ = marching_cubes(logit_grid, level=0.0, step_size=step)
        if len(faces) <= max_faces or step >= R // 8:
            break
        step += 1
    verts = (verts + 0.5) / R * 2.0 - 1.0
    mesh = trimesh.Trimesh(verts.astype(np.float32), faces[:, ::-1], process=True)
    Path(path).write_bytes(mesh.export(file_type="ply", encoding="binary"))
    return len(mesh.faces)
