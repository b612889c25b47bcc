"""Meshes -> labelled occupancy data: load and check a mesh, normalise it into [-1, 1]^3, label points
inside/outside, sample training points (uniform + near-surface) and build a cached dense evaluation grid.

Inside/outside tests (`INSIDE_TESTS`; "auto" picks one per mesh):

- "parity" (watertight meshes): ray parity along +z. For every query point a ray is cast from below
  the mesh straight up (trimesh's ray engine, rtree-accelerated); the point is inside when an odd number
  of surface crossings lie below it. For the dense grid one ray per (x, y) column labels the whole
  column at once (R^2 rays for R^3 points). Hits of one ray closer than 1e-9 (a ray through a shared
  edge or vertex reports each adjacent triangle) are merged into one crossing. Exact for closed
  surfaces only; trimesh's `contains` gives the same labels but casts rays in a random direction,
  ~1000x slower on these meshes.
- "winding" (meshes with holes, open borders, non-manifold edges): the generalized winding number
  w(p) = sum over triangles of their signed solid angle at p / (4 pi) (Jacobson et al. 2013), inside
  when |w| > 0.5. On a closed mesh w is 1 inside and 0 outside; a hole changes w only near the hole,
  and a zero-volume flap (a triangle and its oppositely wound copy) adds nothing. Computed by libigl's
  Barnes-Hut `fast_winding_number` (error ~3e-3 on the bunny; `pip install libigl`, in the [mesh]
  extra), or, without libigl, by the exact O(points x faces) sum in numpy (`winding_numbers_exact`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError

__all__ = [
    "MESH_SUFFIXES",
    "INSIDE_TESTS",
    "MeshError",
    "mesh_sha256",
    "mesh_defects",
    "load_mesh",
    "choose_inside_test",
    "winding_numbers",
    "winding_numbers_exact",
    "normalize_mesh",
    "label_points",
    "grid_axis",
    "grid_points",
    "label_grid",
    "check_grid_memory",
    "sample_training_points",
    "sample_validation_points",
    "VALIDATION_SEED_OFFSET",
    "OccupancyData",
    "prepare_occupancy",
]

# Formats trimesh reads as triangle meshes that this module accepts.
MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")
_RAY_CHUNK = 20_000
INSIDE_TESTS = ("auto", "parity", "winding")
# The exact numpy winding number costs points x faces triangle evaluations: beyond this many, ask for libigl.
_EXACT_WINDING_MAX_WORK = 2e9
_WINDING_CHUNK = 1 << 20
# Validation points are an independent draw of the training distribution, with this offset on the seed.
VALIDATION_SEED_OFFSET = 1_000_000


class MeshError(ValueError):
    """A mesh file that cannot be used for occupancy: unreadable, empty, flat or without volume."""


def mesh_sha256(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of the mesh file's bytes (the key of the on-disk label cache)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mesh_defects(mesh) -> List[str]:
    """What keeps `mesh` from being a closed, consistently oriented surface, one phrase per defect
    (empty for a watertight mesh): boundary edges (holes, open borders), edges shared by more than two
    faces (non-manifold, e.g. a duplicated, oppositely wound flap) and inconsistent winding."""
    edges = np.sort(np.asarray(mesh.edges, dtype=np.int64), axis=1)
    if len(edges) == 0:
        return ["no edges"]
    _, counts = np.unique(edges, axis=0, return_counts=True)
    out = []
    boundary = int(np.sum(counts == 1))
    if boundary:
        out.append(f"{boundary} boundary edge{'s' * (boundary != 1)} (used by one face only: holes or open borders)")
    over = int(np.sum(counts > 2))
    if over:
        out.append(f"{over} non-manifold edge{'s' * (over != 1)} shared by more than two faces (e.g. a duplicated, "
                   f"oppositely wound triangle forming a zero-volume flap; up to {int(counts.max())} faces on one edge)")
    if not out and not mesh.is_winding_consistent:
        out.append("inconsistent face winding (neighbouring faces disagree on which side is outside)")
    return out


def load_mesh(path: Union[str, os.PathLike]):
    """Read a triangle mesh with trimesh and check that occupancy labels can be computed for it.

    Raises FileNotFoundError for a missing file and MeshError (a ValueError) for an empty, unreadable
    or non-mesh file, a mesh without faces, a flat mesh, or a watertight mesh with no volume. Open or
    non-manifold meshes are accepted: they are labelled by the generalized winding number.
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mesh file {str(p)!r} does not exist")
    if p.suffix.lower() not in MESH_SUFFIXES:
        raise MeshError(f"{str(p)!r} is not a mesh file: expected one of {', '.join(MESH_SUFFIXES)}, got suffix {p.suffix!r}")
    if p.stat().st_size == 0:
        raise MeshError(f"mesh file {str(p)!r} is empty (0 bytes)")
    try:
        mesh = trimesh.load(str(p), force="mesh", process=True)
    except Exception as exc:  # trimesh raises many types for malformed files
        raise MeshError(f"mesh file {str(p)!r} could not be read as a mesh ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise MeshError(f"mesh file {str(p)!r} holds no triangles (corrupt, empty or not a mesh)")
    if not np.all(np.isfinite(mesh.vertices)):
        raise MeshError(f"mesh file {str(p)!r} has non-finite vertex coordinates")
    extent = mesh.bounds[1] - mesh.bounds[0]
    if np.any(extent <= 1e-12 * max(1.0, float(np.abs(mesh.bounds).max()))):
        raise MeshError(f"mesh {str(p)!r} is degenerate: it is flat (bounding-box extent {extent.tolist()}), so it encloses no volume")
    if mesh.is_watertight:
        volume = abs(float(mesh.volume))
        if not np.isfinite(volume) or volume <= 1e-9 * float(np.prod(extent)):
            raise MeshError(f"mesh {str(p)!r} is degenerate: it encloses no volume (volume {volume:g})")
    # Open meshes can only be checked for volume once labelled (prepare_occupancy does).
    return mesh


def choose_inside_test(mesh, inside_test: str = "auto") -> str:
    """'parity' or 'winding' for `mesh`: 'auto' takes parity (fast, exact) for a watertight mesh and the
    winding number otherwise; asking for parity on a mesh that is not watertight is refused, naming its defects."""
    if inside_test not in INSIDE_TESTS:
        raise ValueError(f"inside_test must be one of {list(INSIDE_TESTS)}, got {inside_test!r}")
    if inside_test == "winding":
        return "winding"
    defects = [] if mesh.is_watertight else mesh_defects(mesh) or ["it is not watertight"]
    if not defects:
        return "parity"
    if inside_test == "parity":
        raise MeshError(f"inside_test='parity' needs a watertight mesh, but this mesh has {'; '.join(defects)}; "
                        "use inside_test='winding' (or 'auto'), which handles these")
    return "winding"


def winding_numbers_exact(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                          chunk_work: int = 4_000_000) -> np.ndarray:
    """Exact generalized winding numbers (n,) of `points` (n, 3) for the triangles `faces` of `vertices`.

    Sum over triangles (a, b, c), taken relative to p, of their solid angle
    2 atan2(a . (b x c), |a||b||c| + (a . b)|c| + (b . c)|a| + (c . a)|b|) (van Oosterom and Strackee),
    over 4 pi. O(points x faces); `chunk_work` bounds the points x faces block held in memory.
    """
    V = np.asarray(vertices, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    P = np.asarray(points, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 3:
        raise ValueError(f"points must have shape (n, 3), got {P.shape}")
    tri = V[F]  # (f, 3, 3)
    out = np.empty(len(P))
    step = max(1, int(chunk_work) // max(1, len(F)))
    for s in range(0, len(P), step):
        rel = tri[None, :, :, :] - P[s:s + step, None, None, :]  # (p, f, 3 corners, 3)
        a, b, c = rel[:, :, 0], rel[:, :, 1], rel[:, :, 2]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        den = (la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc + np.einsum("pfi,pfi->pf", b, c) * la
               + np.einsum("pfi,pfi->pf", c, a) * lb)
        out[s:s + step] = (2.0 * np.arctan2(det, den)).sum(axis=1) / (4.0 * np.pi)
    return out


def winding_numbers(mesh, points: np.ndarray) -> np.ndarray:
    """Generalized winding numbers (n,) of `points` (n, 3): libigl's fast (Barnes-Hut) version when
    installed, else the exact numpy sum when that is affordable, else an error asking for libigl."""
    pts = np.ascontiguousarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (n, 3), got {pts.shape}")
    V = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
    F = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    try:
        import igl
    except ImportError:
        work = float(len(pts)) * len(F)
        if work > _EXACT_WINDING_MAX_WORK:
            raise MeshError(
                f"labelling {len(pts)} points of this mesh ({len(F)} faces; {'; '.join(mesh_defects(mesh))}) needs "
                "the generalized winding number, and without libigl the exact sum would take hours: "
                "pip install libigl (or sinelr[mesh]), or use a watertight mesh") from None
        return winding_numbers_exact(V, F, pts)
    out = np.empty(len(pts))
    for s in range(0, len(pts), _WINDING_CHUNK):
        out[s:s + _WINDING_CHUNK] = igl.fast_winding_number(V, F, pts[s:s + _WINDING_CHUNK])
    return out


def normalize_mesh(mesh, margin: float = 0.05):
    """A copy of `mesh` centred at the origin and scaled so its longest side spans [-(1-margin), 1-margin]."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    out = mesh.copy()
    lo, hi = out.bounds
    out.apply_translation(-(lo + hi) / 2.0)
    out.apply_scale(2.0 * (1.0 - margin) / float((hi - lo).max()))
    return out


def _column_hits(mesh, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Crossings of +z rays through the points `xy` (n, 2): (ray index, z) sorted, duplicates merged."""
    z0 = float(mesh.bounds[0, 2]) - 1.0
    rays, zs = [], []
    for start in range(0, len(xy), _RAY_CHUNK):
        part = xy[start:start + _RAY_CHUNK]
        origins = np.column_stack([part, np.full(len(part), z0)])
        directions = np.tile([0.0, 0.0, 1.0], (len(part), 1))
        loc, ray_idx, _ = mesh.ray.intersects_location(origins, directions, multiple_hits=True)
        rays.append(ray_idx.astype(np.int64) + start)
        zs.append(loc[:, 2] if len(loc) else np.zeros(0))
    ray = np.concatenate(rays) if rays else np.zeros(0, np.int64)
    z = np.concatenate(zs) if zs else np.zeros(0)
    order = np.lexsort((z, ray))
    ray, z = ray[order], z[order]
    if len(z) > 1:
        dup = np.zeros(len(z), bool)
        dup[1:] = (ray[1:] == ray[:-1]) & (np.abs(z[1:] - z[:-1]) < 1e-9)
        ray, z = ray[~dup], z[~dup]
    return ray, z


def label_points(mesh, points: np.ndarray, inside_test: str = "auto") -> np.ndarray:
    """Boolean inside mask of `points` (n, 3): parity of +z ray crossings below each point on a watertight
    `mesh`, |generalized winding number| > 0.5 otherwise (see `choose_inside_test`)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (n, 3), got {pts.shape}")
    if choose_inside_test(mesh, inside_test) == "winding":
        return np.abs(winding_numbers(mesh, pts)) > 0.5
    return _parity_labels(mesh, pts)


def _parity_labels(mesh, pts: np.ndarray) -> np.ndarray:
    """Parity of the +z ray crossings below each point (n, 3), without checking that `mesh` is closed."""
    ray, z = _column_hits(mesh, pts[:, :2])
    below = z < pts[ray, 2]
    counts = np.bincount(ray[below], minlength=len(pts))
    return (counts % 2).astype(bool)


def grid_axis(resolution: int) -> np.ndarray:
    """The `resolution` cell-centre coordinates of the grid on [-1, 1] (float32)."""
    return (((np.arange(resolution) + 0.5) / resolution) * 2.0 - 1.0).astype(np.float32)


def grid_points(resolution: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Coordinates (n, 3) of the flat grid indices [start, stop) in C order (x slowest, z fastest)."""
    total = resolution ** 3
    stop = total if stop is None else min(stop, total)
    idx = np.arange(start, stop)
    ax = grid_axis(resolution)
    r2 = resolution * resolution
    return np.stack([ax[idx // r2], ax[(idx // resolution) % resolution], ax[idx % resolution]], axis=1)


def label_grid(mesh, resolution: int, inside_test: str = "auto") -> np.ndarray:
    """Inside mask (R, R, R) [x, y, z] of the cell-centre grid: one +z ray per (x, y) column on a watertight
    mesh, the winding number of every grid point otherwise (see `choose_inside_test`)."""
    if choose_inside_test(mesh, inside_test) == "winding":
        inside = np.empty(resolution ** 3, dtype=bool)
        for s in range(0, resolution ** 3, _WINDING_CHUNK):
            inside[s:s + _WINDING_CHUNK] = label_points(mesh, grid_points(resolution, s, s + _WINDING_CHUNK), "winding")
        return inside.reshape(resolution, resolution, resolution)
    ax = grid_axis(resolution).astype(np.float64)
    gx, gy = np.meshgrid(ax, ax, indexing="ij")
    ray, z = _column_hits(mesh, np.column_stack([gx.ravel(), gy.ravel()]))
    # A crossing at height z flips the label of every grid point above it in its column.
    first_above = np.searchsorted(ax, z, side="right")
    toggles = np.zeros((resolution * resolution, resolution + 1), dtype=np.int32)
    np.add.at(toggles, (ray, first_above), 1)
    inside = (np.cumsum(toggles[:, :resolution], axis=1, dtype=np.int32) % 2).astype(bool)
    return inside.reshape(resolution, resolution, resolution)


def check_grid_memory(resolution: int, what: str = "eval_resolution", bytes_per_point: int = 12) -> None:
    """Refuse a grid whose labelling (int32 crossing counts) and label + prediction arrays, about
    `bytes_per_point` per point, would exceed half of the available memory."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ConfigError(f"{what} must be an integer >= 2, got {resolution!r}")
    need = bytes_per_point * resolution ** 3
    from . import available_memory_bytes

    avail = available_memory_bytes()
    if avail is not None and need > avail // 2:
        raise ConfigError(
            f"{what}={resolution} needs about {need / 2**30:.1f} GiB for the {resolution}^3 grid's labels and "
            f"predictions, more than half of the {avail / 2**30:.1f} GiB of available memory; use a smaller {what}"
        )


def sample_training_points(mesh, n_uniform: int, n_surface: int, surface_sigma: Sequence[float],
                           seed: int, inside_test: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """Training points and labels: `n_uniform` uniform in [-1, 1]^3 plus `n_surface` surface samples
    displaced by Gaussian noise (the standard deviations in `surface_sigma` used in equal shares)."""
    import trimesh

    if n_uniform < 0 or n_surface < 0 or n_uniform + n_surface == 0:
        raise ValueError(f"need n_uniform >= 0, n_surface >= 0 and at least one point, got {n_uniform}, {n_surface}")
    sigmas = [float(s) for s in surface_sigma] or [0.01]
    if any(s <= 0 for s in sigmas):
        raise ValueError(f"surface_sigma values must be > 0, got {list(surface_sigma)}")
    rng = np.random.default_rng(seed)
    parts = [rng.uniform(-1.0, 1.0, size=(n_uniform, 3))]
    if n_surface:
        surf, _ = trimesh.sample.sample_surface(mesh, n_surface, seed=seed)
        scale = np.array(sigmas)[np.arange(n_surface) % len(sigmas)][:, None]
        parts.append(np.clip(surf + rng.normal(size=surf.shape) * scale, -1.0, 1.0))
    pts = np.concatenate(parts).astype(np.float32)
    return pts, label_points(mesh, pts, inside_test)


def sample_validation_points(mesh, n_uniform: int, n_surface: int, surface_sigma: Sequence[float],
                             seed: int, inside_test: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """Held-out points and labels for tuning: an independent draw from the training distribution
    (`sample_training_points` with seed + VALIDATION_SEED_OFFSET), so neither the training points nor
    the evaluation grid are reused. Continuous draws, so disjoint from the training set with probability 1."""
    return sample_training_points(mesh, n_uniform, n_surface, surface_sigma, seed + VALIDATION_SEED_OFFSET, inside_test)


@dataclass
class OccupancyData:
    """Everything a recipe needs for one mesh."""

    name: str
    path: Path
    sha256: str
    mesh: object  # the normalised trimesh.Trimesh
    points: np.ndarray  # (n, 3) float32 training points
    labels: np.ndarray  # (n,) bool
    grid: np.ndarray  # (R, R, R) bool evaluation labels
    resolution: int
    cache_hit: bool
    inside_test: str = "parity"  # how the labels were computed: "parity" or "winding"
    defects: Tuple[str, ...] = ()  # mesh_defects of the mesh (empty when watertight)


def prepare_occupancy(path: Union[str, os.PathLike], resolution: int, n_uniform: int, n_surface: int,
                      surface_sigma: Sequence[float], seed: int, cache_dir: Union[str, os.PathLike],
                      margin: float = 0.05, inside_test: str = "auto") -> OccupancyData:
    """Load, check and normalise the mesh; label training points and the R^3 grid, reusing the cache.

    `inside_test`: "auto" (ray parity on a watertight mesh, the generalized winding number otherwise),
    "parity" or "winding". Cache files live in `cache_dir`, named by the mesh's sha256 and the settings
    that define them (grid: resolution + margin; training set: counts, sigmas, seed + margin; plus
    "_gwn" for winding-number labels). A mesh whose labels leave no grid point inside is refused.
    """
    check_grid_memory(resolution)
    path = Path(path)
    mesh = normalize_mesh(load_mesh(path), margin)
    method = choose_inside_test(mesh, inside_test)
    defects = tuple(mesh_defects(mesh)) if not mesh.is_watertight else ()
    sha = mesh_sha256(path)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    tag = "_gwn" if method == "winding" else ""
    grid_file = cache / f"{sha[:16]}_grid_r{resolution}_m{margin:g}{tag}.npz"
    sig = "-".join(f"{s:g}" for s in surface_sigma)
    train_file = cache / f"{sha[:16]}_train_u{n_uniform}_s{n_surface}_sig{sig}_seed{seed}_m{margin:g}{tag}.npz"
    hit = grid_file.is_file() and train_file.is_file()
    grid = _load_cached(grid_file, "grid")
    if grid is None:
        grid = label_grid(mesh, resolution, method)
        _save_cached(grid_file, grid=np.packbits(grid.ravel()), shape=np.array(grid.shape))
    else:
        grid = np.unpackbits(grid["grid"])[: int(np.prod(grid["shape"]))].astype(bool).reshape(tuple(grid["shape"]))
    if not grid.any():
        how = ("its generalized winding number stays below 0.5 everywhere (" + "; ".join(defects) + ")"
               if method == "winding" else "its volume is below one grid cell")
        raise MeshError(f"mesh {str(path)!r} encloses no volume on the {resolution}^3 grid: {how}")
    train = _load_cached(train_file, "points")
    if train is None:
        points, labels = sample_training_points(mesh, n_uniform, n_surface, surface_sigma, seed, method)
        _save_cached(train_file, points=points, labels=labels)
    else:
        points, labels = train["points"], train["labels"].astype(bool)
    return OccupancyData(name=path.stem, path=path, sha256=sha, mesh=mesh, points=points, labels=labels,
                         grid=grid, resolution=resolution, cache_hit=hit, inside_test=method, defects=defects)


def _load_cached(path: Path, key: str):
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        return data if key in data else None
    except Exception:  # a truncated cache file is rebuilt, not trusted
        return None


def _save_cached(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
