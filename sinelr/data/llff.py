"""LLFF forward-facing scenes (NeRF's `nerf_llff_data` layout): images, camera poses, NDC rays.

The procedure is the standard one used by NeRF for LLFF captures, written from its published facts:

1. `poses_bounds.npy` holds an (N, 17) float array: per view a 3x5 matrix (a 3x4 camera-to-world
   matrix whose columns are LLFF's (down, right, back) axes plus the camera position, and a 5th
   column [H, W, focal] of the full-resolution images) followed by near/far depth bounds.
2. Images come from `images_8/` (1/8 of full resolution); H, W and focal are divided by the same
   factor, and by `downscale` again when a further reduction is asked for.
3. Axes are reordered to (right, up, back) (OpenGL convention): x = right, y = -down, z = back.
4. Positions and bounds are rescaled so the nearest bound is 1/0.75 (`bd_factor` = 0.75).
5. Poses are recentred: the average camera (mean position, mean viewing axis, mean up) becomes the
   identity, so the scene faces -z. No spherification (forward-facing scenes).
6. Rays are cast through pixel centres-at-corners (pixel (i, j) -> direction ((i - W/2)/f, -(j - H/2)/f, -1))
   and mapped to normalised device coordinates with the near plane at z = -1, so depths run over [0, 1].
7. Every 8th view (0, 8, 16, ...) is held out for testing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import DataError, DataNotFoundError, resolve_data_dir

__all__ = ["LLFFScene", "load_llff", "camera_rays", "ndc_rays", "LLFF_HOLDOUT", "IMAGE_SUFFIXES"]

LLFF_HOLDOUT = 8  # every 8th view is a test view, as is customary for LLFF
BD_FACTOR = 0.75  # nearest bound is rescaled to 1 / BD_FACTOR
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class LLFFScene:
    """One loaded scene. `poses` are (N, 3, 4) camera-to-world in (right, up, back) axes after recentring."""

    name: str
    images: torch.Tensor  # (N, H, W, 3) float32 in [0, 1]
    poses: torch.Tensor  # (N, 3, 4) float32
    bounds: torch.Tensor  # (N, 2) rescaled near/far
    height: int
    width: int
    focal: float
    i_train: List[int]
    i_test: List[int]
    files: List[str]

    def rays(self, index: int, ndc: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(origins, directions, viewdirs) of view `index`, each (H, W, 3); NDC origins/directions when `ndc`.

        viewdirs are the unit directions in world space (before NDC), which is what the view-dependent
        head of NeRF takes.
        """
        o, d = camera_rays(self.height, self.width, self.focal, self.poses[index])
        viewdirs = d / d.norm(dim=-1, keepdim=True)
        if ndc:
            o, d = ndc_rays(self.height, self.width, self.focal, 1.0, o, d)
        return o, d, viewdirs


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _look_frame(z: np.ndarray, up: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """3x4 camera-to-world matrix whose back axis is z, with up as close to `up` as possible."""
    z = _normalize(z)
    x = _normalize(np.cross(up, z))
    y = _normalize(np.cross(z, x))
    return np.stack([x, y, z, pos], axis=1)


def _average_pose(poses: np.ndarray) -> np.ndarray:
    """The mean camera: mean position, normalised sum of back axes, sum of up axes."""
    return _look_frame(poses[:, :3, 2].sum(0), poses[:, :3, 1].sum(0), poses[:, :3, 3].mean(0))


def _recenter(poses: np.ndarray) -> np.ndarray:
    """Express every (N, 3, 4) pose in the frame of the average pose."""
    bottom = np.array([0.0, 0.0, 0.0, 1.0])
    avg = np.concatenate([_average_pose(poses), bottom[None]], 0)
    full = np.concatenate([poses, np.broadcast_to(bottom, (len(poses), 1, 4))], 1)
    return (np.linalg.inv(avg) @ full)[:, :3, :4]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image {path} is corrupt or not a readable image ({type(exc).__name__}: {exc})") from None
    return arr


def _downscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter downscale by an integer factor (crops the remainder rows/columns)."""
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    return img[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).mean(axis=(1, 3))


def load_llff(
    scene: str,
    data_dir: Optional[os.PathLike] = None,
    downscale: int = 1,
    holdout: int = LLFF_HOLDOUT,
) -> LLFFScene:
    """Load LLFF scene `scene` (e.g. 'fern') from `data_dir` (default ../shared/data/nerf_llff).

    `downscale` is an extra integer reduction on top of `images_8` (1 keeps 504x378). Raises
    FileNotFoundError for a missing scene, images_8 folder or poses_bounds.npy, and ValueError for
    image count != pose count, images of different sizes, a corrupt image or malformed poses.
    """
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise ConfigError(f"downscale must be a positive integer, got {downscale!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 2:
        raise ConfigError(f"holdout must be an integer >= 2 (every holdout-th view is a test view), got {holdout!r}")
    root = resolve_data_dir(data_dir, "nerf_llff", "LLFF scenes (<scene>/images_8, <scene>/poses_bounds.npy)")
    base = root / scene
    if not base.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "poses_bounds.npy").is_file()
                       and (p / "images_8").is_dir())
        raise DataNotFoundError(f"LLFF scene folder {base} not found; loadable scenes in {root}: {', '.join(found) or '(none)'}")
    img_dir = base / "images_8"
    if not img_dir.is_dir():
        raise DataNotFoundError(f"scene folder {base} has no images_8/ folder ({img_dir} missing); "
                                "the loader reads the 1/8-resolution images of the nerf_llff_data layout")
    pose_file = base / "poses_bounds.npy"
    if not pose_file.is_file():
        raise DataNotFoundError(f"camera poses {pose_file} not found")
    try:
        arr = np.load(pose_file, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{pose_file} is not a readable .npy array ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise DataError(f"{pose_file} must hold an (N, 17) array (3x5 pose + 2 depth bounds per image), got shape {arr.shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        where = ", ".join(f"[{r}, {c}]={arr[r, c]}" for r, c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise DataError(f"{pose_file} holds {len(bad)} non-finite values (NaN or inf) at (image, column) {where}; "
                        "the poses and bounds must be finite")
    if not np.all(arr[:, 15:17] > 0):
        r = int(np.argwhere(~(arr[:, 15:17] > 0))[0, 0])
        raise DataError(f"{pose_file}: depth bounds (columns 15, 16) must be > 0, image {r} has {arr[r, 15:17].tolist()}")
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    if len(files) != len(arr):
        raise DataError(f"{img_dir} has {len(files)} images but {pose_file} has {len(arr)} poses; they must match one to one")

    images = []
    for f in files:
        img = _read_image(f)
        if images and img.shape != images[0].shape:
            raise DataError(f"image {f} is {img.shape[1]}x{img.shape[0]} but {files[0]} is "
                             f"{images[0].shape[1]}x{images[0].shape[0]}; all images of a scene must have one size")
        if not images and downscale > min(img.shape[:2]):
            raise ConfigError(f"downscale {downscale} leaves no pixels: the images_8 images of {scene} are "
                              f"{img.shape[1]}x{img.shape[0]}; downscale must be <= {min(img.shape[:2])}")
        images.append(img)
    full_w = float(arr[0, 9])
    h8, w8 = images[0].shape[:2]
    factor = full_w / w8  # 8 for images_8; measured, not assumed
    images_np = np.stack([_downscale(im, downscale) for im in images])
    height, width = images_np.shape[1:3]
    # An integer box downscale divides the focal length (in pixels) by the same factor; at most
    # downscale-1 edge rows/columns are cropped, which moves the principal point by < 1 pixel.
    focal = float(arr[0, 14]) / factor / downscale

    poses = arr[:, :15].reshape(-1, 3, 5)[:, :, :4]
    bounds = arr[:, 15:17].copy()
    # LLFF (down, right, back) -> (right, up, back)
    poses = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:4]], axis=2)
    scale = 1.0 / (bounds.min() * BD_FACTOR)
    poses[:, :, 3] *= scale
    bounds *= scale
    poses = _recenter(poses)
    n = len(files)
    i_test = list(range(0, n, holdout))
    i_train = [i for i in range(n) if i not in i_test]
    return LLFFScene(
        name=scene,
        images=torch.from_numpy(np.ascontiguousarray(images_np)).float(),
        poses=torch.from_numpy(poses).float(),
        bounds=torch.from_numpy(bounds).float(),
        height=int(height), width=int(width), focal=focal,
        i_train=i_train, i_test=i_test, files=[str(f) for f in files],
    )


def camera_rays(height: int, width: int, focal: float, c2w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and (unnormalised) directions of every pixel, each (H, W, 3)."""
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    dirs = torch.stack([(i - width * 0.5) / focal, -(j - height * 0.5) / focal, -torch.ones_like(i)], dim=-1)
    d = dirs @ c2w[:3, :3].T
    o = c2w[:3, 3].expand_as(d)
    return o, d


def ndc_rays(height: int, width: int, focal: float, near: float, rays_o: torch.Tensor,
             rays_d: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Map rays to normalised device coordinates of the camera frustum (near plane z = -near -> NDC z = -1).

    Origins are first moved onto the near plane; in NDC the ray depth t in [0, 1) spans near..infinity.
    """
    t = -(near + rays_o[..., 2]) / rays_d[..., 2]
    o = rays_o + t[..., None] * rays_d
    ax, ay = -2.0 * focal / width, -2.0 * focal / height
    ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
    dx, dy, dz = rays_d[..., 0], rays_d[..., 1], rays_d[..., 2]
    o_ndc = torch.stack([ax * ox / oz, ay * oy / oz, 1.0 + 2.0 * near / oz], dim=-1)
    d_ndc = torch.stack([ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), -2.0 * near / oz], dim=-1)
    return o_ndc, d_ndc
