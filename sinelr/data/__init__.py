"""Dataset loaders. Nothing is downloaded: every loader reads local files and says what is missing."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

from ..errors import DataError, DataNotFoundError

__all__ = ["resolve_data_dir", "data_root_from_env", "available_memory_bytes", "DataNotFoundError", "DataError"]


DATA_DIR_ENV = "SINELR_DATA_DIR"
# Older name, read by the tests before the two were unified; still honoured, with a warning.
_DEPRECATED_DATA_DIR_ENV = "SINELR_SHARED_DATA"


def data_root_from_env() -> Optional[Path]:
    """The shared data root from $SINELR_DATA_DIR (or the deprecated $SINELR_SHARED_DATA), or None when unset."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    old = os.environ.get(_DEPRECATED_DATA_DIR_ENV)
    if old:
        warnings.warn(f"${_DEPRECATED_DATA_DIR_ENV} is deprecated; set ${DATA_DIR_ENV} instead",
                      DeprecationWarning, stacklevel=2)
        return Path(old).expanduser()
    return None


def resolve_data_dir(data_dir: Optional[os.PathLike], subdir: str, what: str) -> Path:
    """The folder of one dataset: `data_dir` when given, else $SINELR_DATA_DIR/<subdir>
    (deprecated alias: $SINELR_SHARED_DATA), else ../shared/data/<subdir>.

    `data_dir` may point at the dataset folder itself or at its parent holding `subdir`.
    Raises DataNotFoundError naming the paths tried and `what` the folder must contain.
    """
    tried = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        candidates = [base / subdir, base] if subdir else [base]
    else:
        env = data_root_from_env()
        roots = ([env] if env is not None else []) + [Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
        candidates = [r / subdir for r in roots]
    for c in candidates:
        tried.append(str(c))
        if c.is_dir():
            return c
    raise DataNotFoundError(
        f"dataset folder not found (tried: {', '.join(tried)}). Pass --data-dir pointing to a folder with {what}."
    )


def available_memory_bytes() -> Optional[int]:
    """Memory the OS can still give this process (MemAvailable), or None when it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
