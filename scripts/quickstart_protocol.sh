#!/bin/bash
# quickstart protocol: LR grid per method at k=4 on two tuning photos (not the reported astronaut), seed 0;
# then budget doubling on astronaut (300 vs 600 steps), all methods, seed 0.
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 SINELR_NO_PROGRESS=1
for img in coffee chelsea; do for lr in 0.003 0.01 0.03; do
  nice -n 5 python -m sinelr.cli quickstart --image $img --ranks 4 --seeds 0 --lr $lr \
    --output-dir results/quickstart_protocol/lr_${img}_${lr} --run-dir runs/qs-protocol/lr_${img}_${lr}
done; done
# the grid's upper edge won for some methods on coffee: extend it by one step
for img in coffee chelsea; do
  nice -n 5 python -m sinelr.cli quickstart --image $img --ranks 4 --seeds 0 --lr 0.1 \
    --output-dir results/quickstart_protocol/lr_${img}_0.1 --run-dir runs/qs-protocol/lr_${img}_0.1
done
# budget doubling on the reported photo (astronaut), every method at k = 1, 4, 16, seed 0, lr 0.01 and 0.03
for steps in 300 600; do for lr in 0.01 0.03; do
  nice -n 5 python -m sinelr.cli quickstart --steps $steps --seeds 0 --lr $lr \
    --output-dir results/quickstart_protocol/doubling_steps${steps}_lr${lr} --run-dir runs/qs-protocol/doubling_${steps}_${lr}
done; done
