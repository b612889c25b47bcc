"""Photos for the image-fitting quickstart: scikit-image's shipped photos or any local image file,
centre-cropped to a square and resized."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError

__all__ = ["load_photo"]


def load_photo(name: str, size: int, builtin: Sequence[str]) -> torch.Tensor:
    """The image as a float32 (size, size, C) tensor in [0, 1] (C = 1 or 3): centre-cropped square,
    anti-aliased resize. `name` is one of `builtin` (scikit-image's data module) or a file path."""
    from skimage import data, io, transform
    from skimage.util import img_as_float

    if name in builtin:
        img = getattr(data, name)()
    else:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"image file {name!r} does not exist")
        try:
            img = io.imread(path)
        except Exception as exc:  # imageio/PIL raise many types for files they cannot decode
            raise DataError(f"image {name!r} could not be read as an image ({type(exc).__name__}: {exc})") from None
    img = img_as_float(np.asarray(img))
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise DataError(f"image {name!r} has shape {img.shape}; expected (H, W) or (H, W, C)")
    img = img[..., :3]  # drop alpha
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = transform.resize(img, (size, size), anti_aliasing=True)
    if not np.isfinite(img).all():
        raise DataError(f"image {name!r} holds non-finite values")
    return torch.from_numpy(np.clip(img, 0.0, 1.0).astype(np.float32))
