#!/bin/bash
# Issue 15 (docs/nerf.md, "Protocol (issue 15)"): the NeRF protocol steps on the width-64 model, as run.
#   SINELR_DATA_DIR=/path/to/data bash scripts/nerf_protocol.sh grid     # lr per method at k = 5 (fern, seed 0)
# The model: configs/nerf_cpu_v2.yaml at width 64 with density noise 1.0 (removes the width-64 density
# collapse), 126x94 images, 12000 steps with the lr decay over the whole run (~9 min per model on one core).
# Two single-thread processes running the same step share its points (finished rows are skipped; an
# interrupted model restarts from its checkpoint).
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
M="sinelr nerf --config configs/nerf_cpu_v2.yaml --width 64 --noise-std 1.0 --steps 12000 --lr-decay-steps 12000"
step=${1:?usage: nerf_protocol.sh grid}
case $step in
grid)
  # Step 2 at the table's step count (the 6000-step grid of the width-128 model did not carry to 12000 steps):
  # full, low-rank and sine at k = 5, scored on 2 training views held out (--val-views 2: test views unread).
  for lr in 7e-4 2e-3 6e-3; do
    $M --scene fern --ranks 5 --val-views 2 --lr $lr \
       --output-dir results/nerf/protocol/w64_lr_grid_$lr --run-dir runs/nerf/protocol/w64_lr_grid_$lr
  done
  ;;
*) echo "unknown step $step (expected: grid)"; exit 2;;
esac
