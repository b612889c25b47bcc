#!/usr/bin/env bash
# Run PEFT's own custom-model tests (from the sdist of the installed peft, fetched into runs/peft_suite/)
# with sine-LoRA rows added to its case tables. Extra arguments go to pytest (e.g. -k DoRA).
#   OMP_NUM_THREADS=1 scripts/peft_suite.sh
# Prints pytest's summary (passed / failed / skipped) and exits with its status.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('datasets') is None)"; then
    echo "peft_suite: installing datasets (PEFT's test helpers import it)" >&2
    "$PYTHON" -m pip install -q datasets
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PYTHON" scripts/peft_suite.py "$@"
