"""Test set-up: import sinelr from this checkout, quiet progress bars, locate $SINELR_DATA_DIR or ../shared/data."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SINELR_NO_PROGRESS", "1")
# No torch.compile in the suite (slow to compile); tests marked `compile` turn it on on small shapes.
os.environ.setdefault("SINELR_COMPILE", "0")
from sinelr.data import data_root_from_env  # noqa: E402  (after the path set-up above)

# One variable for tests and recipes: $SINELR_DATA_DIR ($SINELR_SHARED_DATA is a deprecated alias).
SHARED_DATA = data_root_from_env() or ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """$SINELR_DATA_DIR or ../shared/data, or skip the test when it is absent (a clean machine without the shared datasets)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA
