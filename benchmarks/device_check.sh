#!/usr/bin/env bash
# Device check (issue 19): the CUDA tests, then the layer, sine-LoRA and training-step benchmarks in
# bf16 (torch.autocast; the sine argument and sine stay fp32) on one GPU. About 3-5 minutes, most of
# it the one-time Triton compile of the fused chain. Writes its tables under results/bench/ (or the
# folder given as the first argument) as device_tests_cuda.txt, layers_cuda_bf16.md,
# peft_cuda_bf16.md and steps_cuda_bf16.md.
#
#   bash benchmarks/device_check.sh                 # from the repository root
#   bash benchmarks/device_check.sh "$OUT"          # write the tables elsewhere
#
# Exit status: 0 when every part ran and passed, 1 when a part failed or timed out, 2 without a GPU.
set -u
cd "$(dirname "$0")/.."
out=${1:-results/bench}
mkdir -p "$out"
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device" >&2; exit 2; }
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
export SINELR_NO_PROGRESS=1
rc=0
step() {  # step <seconds> <name> <command...>: run with a time limit, report, remember failures
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@"
  local code=$?
  echo "== $name: exit $code after $((SECONDS - t0)) s"
  [ "$code" -eq 0 ] || rc=1
}
step 120 tests bash -c "python -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tee '$out/device_tests_cuda.txt'; exit \${PIPESTATUS[0]}"
step 75 layers python benchmarks/bench_layers.py --device cuda --dtype bf16 --repeats 20 --allow-busy --out "$out/layers_cuda_bf16.md"
step 75 peft python benchmarks/bench_peft.py --device cuda --dtype bf16 --repeats 20 --allow-busy --out "$out/peft_cuda_bf16.md"
step 60 steps python benchmarks/bench_steps.py --device cuda --dtype bf16 --repeats 20 --allow-busy --out "$out/steps_cuda_bf16.md"
echo "device_check: exit $rc (tables in $out)"
exit $rc
