"""Image-classification data held in memory as uint8 tensors: CIFAR-100 (python pickle format),
Fashion-MNIST (IDX files), and a generic image folder (root/<class>/<image>); plus tensor
augmentation (random crop with zero padding, horizontal flip) driven by an explicit generator.

Nothing is downloaded. A missing dataset raises DataNotFoundError naming the files it needs and how
to get them; truncated files, wrong shapes and labels out of range raise DataError (a ValueError) naming the file.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import DataError, DataNotFoundError

__all__ = [
    "ImageDataset",
    "load_cifar100",
    "load_fashion_mnist",
    "load_image_folder",
    "load_image_dataset",
    "random_crop_flip",
    "normalize",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES",
    "CIFAR100_FILES",
    "IMAGE_DATASETS",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
FASHION_MNIST_HOWTO = (
    "install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
    f"{FASHION_MNIST_DIR}) or download the four *.gz files from https://github.com/zalandoresearch/fashion-mnist "
    "and pass --data-dir pointing at their folder"
)
CIFAR100_FILES = ("train", "test", "meta")
CIFAR100_HOWTO = (
    "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass "
    "--data-dir pointing at the extracted cifar-100-python folder (or its parent)"
)
# Per-channel mean / std used by `normalize` (of the training sets; 0.5 / 0.5 for image folders).
STATS = {
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}


@dataclass
class ImageDataset:
    """Images (N, C, H, W) uint8 and labels (N,) int64 in memory, with the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]
    name: str = "images"
    mean: Tuple[float, ...] = field(default=())
    std: Tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise DataError(
                f"{self.name}: images must be a uint8 tensor of shape (N, C, H, W), got "
                f"{getattr(self.images, 'dtype', type(self.images))} {tuple(getattr(self.images, 'shape', ()))}"
            )
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.long()
        n = len(self.classes)
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= n):
            bad = self.labels[(self.labels < 0) | (self.labels >= n)][:5].tolist()
            raise DataError(f"{self.name}: labels must be in [0, {n - 1}] ({n} classes), found {bad}")
        c = self.images.shape[1]
        if not self.mean:
            self.mean = (0.5,) * c
        if not self.std:
            self.std = (0.5,) * c
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(f"{self.name}: mean/std need {c} channel values, got {self.mean} / {self.std}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, n: int, seed: int = 0) -> "ImageDataset":
        """A fixed random subset of `n` examples (the same for a given seed); n <= 0 or >= len: all."""
        if n <= 0 or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name, self.mean, self.std)


# ---------------------------------------------------------------------------------------------- IDX
def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise DataError(f"{path} could not be read, it is truncated or corrupt ({type(exc).__name__}: {exc}); "
                         f"reinstall it: {FASHION_MNIST_HOWTO}") from None


def read_idx(path: os.PathLike, expect_ndim: int) -> np.ndarray:
    """Read one IDX file (optionally .gz) of unsigned bytes with `expect_ndim` dimensions."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 + 4 * expect_ndim:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()}, expected 0000 08 0{expect_ndim})")
    if ndim != expect_ndim:
        raise DataError(f"{path} holds an array with {ndim} dimensions, expected {expect_ndim}")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    need = int(np.prod(dims))
    if len(body) != need:
        raise DataError(f"{path} is truncated or corrupt: header says shape {dims} ({need} bytes), "
                         f"the file holds {len(body)} bytes of data")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(data_dir: Optional[os.PathLike] = None, split: str = "train") -> ImageDataset:
    """Fashion-MNIST (60k train / 10k test, 28x28 grayscale, 10 classes) from its original IDX files.

    `data_dir` defaults to /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist);
    the files may be gzip-compressed (*.gz) or not.
    """
    if split not in FASHION_MNIST_FILES:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(data_dir).expanduser() if data_dir is not None else FASHION_MNIST_DIR
    if folder.is_dir() and not _find(folder, FASHION_MNIST_FILES[split][0]) and (folder / "fashion-mnist").is_dir():
        folder = folder / "fashion-mnist"
    img_stem, lab_stem = FASHION_MNIST_FILES[split]
    paths = [_find(folder, img_stem), _find(folder, lab_stem)]
    if None in paths:
        missing = [s + "[.gz]" for s, p in zip((img_stem, lab_stem), paths) if p is None]
        raise DataNotFoundError(
            f"Fashion-MNIST {split} files missing in {folder}: {', '.join(missing)} (needs "
            f"{', '.join(s + '.gz' for pair in FASHION_MNIST_FILES.values() for s in pair)}); {FASHION_MNIST_HOWTO}"
        )
    images = read_idx(paths[0], 3)
    labels = read_idx(paths[1], 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]}: Fashion-MNIST images must be 28x28, got {images.shape[1:]}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[0]} holds {images.shape[0]} images but {paths[1]} holds {labels.shape[0]} labels")
    mean, std = STATS["fashion_mnist"]
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                        list(FASHION_MNIST_CLASSES), f"fashion_mnist/{split} ({paths[0]})", mean, std)


# ---------------------------------------------------------------------------------------------- CIFAR
def _unpickle(path: Path) -> Dict:
    # The official CIFAR files are Python pickles: only load files from a source you trust.
    try:
        with path.open("rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
    except (EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError, IndexError) as exc:
        raise DataError(f"{path} is truncated or not a CIFAR pickle ({type(exc).__name__}: {exc}); "
                         f"{CIFAR100_HOWTO}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} must hold a dict (CIFAR python format), got {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def load_cifar100(data_dir: os.PathLike, split: str = "train") -> ImageDataset:
    """CIFAR-100 (50k train / 10k test, 32x32 RGB, 100 fine classes) from `cifar-100-python/{train,test,meta}`."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is None:
        raise DataNotFoundError(f"CIFAR-100 needs --data-dir (files cifar-100-python/{{train,test,meta}}); {CIFAR100_HOWTO}")
    base = Path(data_dir).expanduser()
    folder = base / "cifar-100-python" if (base / "cifar-100-python").is_dir() else base
    missing = [n for n in (split, "meta") if not (folder / n).is_file()]
    if missing:
        raise DataNotFoundError(f"CIFAR-100 files missing in {folder}: {', '.join(missing)} (needs "
                                f"{', '.join('cifar-100-python/' + f for f in CIFAR100_FILES)}); {CIFAR100_HOWTO}")
    meta = _unpickle(folder / "meta")
    names = meta.get("fine_label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{folder / 'meta'} has no 'fine_label_names' list")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    d = _unpickle(folder / split)
    if "data" not in d or "fine_labels" not in d:
        raise DataError(f"{folder / split} must hold 'data' and 'fine_labels', found keys {sorted(map(str, d))}")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{folder / split}: 'data' must be a uint8 array of shape (N, 3072), got "
                         f"{data.dtype} {data.shape}")
    labels = np.asarray(d["fine_labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{folder / split}: {data.shape[0]} images but 'fine_labels' of shape {labels.shape}")
    mean, std = STATS["cifar100"]
    return ImageDataset(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels), classes,
                        f"cifar100/{split} ({folder / split})", mean, std)


# ---------------------------------------------------------------------------------------------- folder
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_image_folder(root: os.PathLike, image_size: int, channels: int = 3,
                      classes: Optional[Sequence[str]] = None) -> ImageDataset:
    """root/<class>/<image> -> an ImageDataset, every image resized to image_size x image_size (PIL, bilinear).

    Classes are the sorted sub-folder names (or `classes`, to use the train split's order for a test
    split). All images are loaded into memory, which suits datasets of up to a few 100k small images.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} does not exist (expected {root}/<class>/<image>)")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = list(classes) if classes is not None else found
    if not classes:
        raise DataNotFoundError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"image folder {root} has classes {unknown} that are not among {classes}")
    arrays, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(p) as im:
                    im = im.convert("L" if channels == 1 else "RGB").resize((image_size, image_size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"image {p} could not be read ({type(exc).__name__}: {exc})") from None
            arrays.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            labels.append(label)
    if not arrays:
        raise DataNotFoundError(f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageDataset(torch.from_numpy(np.stack(arrays)), torch.tensor(labels), classes, f"image_folder ({root})")


IMAGE_DATASETS = ("cifar100", "fashion_mnist", "image_folder")


def load_image_dataset(name: str, data_dir: Optional[os.PathLike], image_size: int = 32,
                       channels: int = 3) -> Tuple[ImageDataset, ImageDataset]:
    """(train, test) of one of IMAGE_DATASETS. An image folder needs data_dir/train and data_dir/test (or val)."""
    if name == "cifar100":
        return load_cifar100(data_dir, "train"), load_cifar100(data_dir, "test")
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir, "train"), load_fashion_mnist(data_dir, "test")
    if name == "image_folder":
        if data_dir is None:
            raise DataNotFoundError("dataset image_folder needs --data-dir with train/<class>/<image> and test/<class>/<image>")
        base = Path(data_dir).expanduser()
        test_dir = base / "test" if (base / "test").is_dir() else base / "val"
        if not (base / "train").is_dir() or not test_dir.is_dir():
            raise DataNotFoundError(f"image folder {base} needs sub-folders train/<class>/<image> and test/<class>/<image> "
                                    "(or val/ instead of test/)")
        train = load_image_folder(base / "train", image_size, channels)
        return train, load_image_folder(test_dir, image_size, channels, classes=train.classes)
    raise ConfigError(f"dataset must be one of {list(IMAGE_DATASETS)}, got {name!r}")


# ---------------------------------------------------------------------------------------------- transforms
def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the original size from the zero-padded image, then a horizontal flip with p = 0.5.

    All randomness comes from `generator` (on the CPU), one crop offset and one coin per image, so the
    result is a function of the generator state: batches are reproducible and shardable across ranks.
    """
    if images.ndim != 4:
        raise ConfigError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    if padding < 0:
        raise ConfigError(f"padding must be >= 0, got {padding}")
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    coin = torch.rand(b, generator=generator) < 0.5
    if padding == 0 and not flip:
        return images
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = (oy[:, None] + torch.arange(h)[None]).to(images.device)  # (B, H)
    cols = ox[:, None] + torch.arange(w)[None]  # (B, W)
    if flip:
        cols = torch.where(coin[:, None], cols.flip(1), cols)
    cols = cols.to(images.device)
    bi = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
