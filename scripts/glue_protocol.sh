#!/bin/bash
# Issue 14 (docs/glue.md, "Issue 14"): the protocol steps of the GLUE table, as run. Run from anywhere:
#   SINELR_DATA_DIR=/path/to/data bash scripts/glue_protocol.sh grid sst2      # step 2 on one task
# Two single-thread processes side by side use both cores (e.g. `grid sst2` and `grid stsb`); every
# command resumes (finished rows are skipped, an interrupted fine-tune restarts from its checkpoint). To stop:
# `pkill -f "sinelr glue"` (or Ctrl-C): the step under way is finished and checkpointed, sinelr exits 130 and set -e
# ends this script; the same command later resumes at that step.
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
L="sinelr glue --schedule learn --pooling mean --head-lr 1e-2 --bucket --seeds 0"
# Step 3 (Tab. 3, its DoRA table and its render): one schedule, one output folder, in fp32. Tab. 3 ran in bf16
# autocast with eager attention for a while (~1.5x faster on the Intel Xeon with bf16 units), but on the AVX2 AMD
# EPYC that later sessions drew bf16 runs 15-41x slower than fp32, so a bf16 table could only advance on one kind of
# machine; since stop 32 the table is fp32 (runs everywhere) and the 9 bf16 rows in
# results/glue/all-MiniLM-L6-v2-tab3-bf16 are its precision cross-check (tab3-bf16-render; docs/glue.md).
T3_SCHEDULE="sinelr glue --schedule tab3 --pooling mean --head-lr 1e-2 --bucket --omega 200"
T3_OUT="--output-dir results/glue/all-MiniLM-L6-v2-tab3 --run-dir runs/glue/all-MiniLM-L6-v2-tab3"
T3="$T3_SCHEDULE --tasks cola sst2 stsb mrpc rte $T3_OUT"
T3_BF16="$T3_SCHEDULE --mixed-precision bf16 --attention eager --tasks cola sst2 stsb mrpc rte --output-dir results/glue/all-MiniLM-L6-v2-tab3-bf16 --run-dir runs/glue/all-MiniLM-L6-v2-tab3-bf16"
# Step 4: the high-rank PEFT peers at about LoRA k = 4's trainable count (docs/glue.md).
PEERS="hira randlora vera"
PEER_RANKS="--ranks 4 --method-rank randlora=56 vera=2688"
LADDER="8e-5 2.5e-4 7e-4 2e-3 6e-3 1.8e-2"
# tune TASK PREFIX "LRS" "LADDER" "ARGS" METHOD..: the rates of METHODS on TASK's fixed 10% validation split (seed 0,
# omega 200, the dev set never read; ARGS: their ranks and precision): every method at each of LRS, one folder per rate
# (results/glue/<PREFIX>grid_k4_<task>_lr<lr>); then a method whose best rate sits at an edge of what ran gets the
# ladder's next rate past that edge (alone in its own folder), until its best is interior or the ladder ends.
tune() {
  local task=$1 prefix=$2 lrs=$3 ladder=$4 args=$5 lr method; shift 5
  at() {  # at LR METHOD..
    local rate=$1; shift
    $L --tasks "$task" --methods "$@" $args --val-fraction 0.1 --omega 200 --method-lr $(printf "%s=$rate " "$@") \
       --output-dir results/glue/${prefix}grid_k4_${task}_lr$rate --run-dir runs/glue/${prefix}grid_k4_${task}_lr$rate
  }
  for lr in $lrs; do at $lr "$@"; done
  for method in "$@"; do
    while lr=$(python scripts/glue_grid_best.py "$task" $method --prefix "$prefix" --next $ladder); [ -n "$lr" ]; do
      echo "$method's best rate on $task is at the grid's edge: running lr $lr"
      at $lr $method
    done
  done
  for method in "$@"; do python scripts/glue_grid_best.py "$task" $method --prefix "$prefix" --table; done
}
step=${1:?usage: glue_protocol.sh grid TASK | double | cola-check | tab3 | dora-grid TASK | tab3-dora | peers-grid TASK | peers | offset-grid TASK [RMS] | tab3-offset [RMS] | tab3-render | tab3-bf16-render}
case $step in
grid)
  # Step 2: per-method lr (x1/3, x1, x3 of the task's step-1 rate) at k = 4, seed 0, scored on a fixed 10% of
  # the training rows (--val-fraction 0.1: the dev set is never read); omega 200 for sine-LoRA, then
  # omega 50 and 800 at sine-LoRA's best rate. One folder per rate: results/glue/grid_k4_<task>_lr<lr>.
  task=${2:?the task to tune on}
  case $task in cola|rte) lrs="2.5e-4 7e-4 2e-3";; *) lrs="7e-4 2e-3 6e-3";; esac
  tune "$task" "" "$lrs" "$LADDER" "--ranks 4" lora sine-lora
  best=$(python scripts/glue_grid_best.py "$task" sine-lora)
  echo "sine-LoRA's best lr on $task: $best; omega 50 and 800 there"
  $L --tasks "$task" --methods lora sine-lora --ranks 4 --val-fraction 0.1 --omega 200 --omegas 50 800 \
     --method-lr lora=$best sine-lora=$best \
     --output-dir results/glue/grid_k4_${task}_lr$best --run-dir runs/glue/grid_k4_${task}_lr$best
  ;;
double)
  # Step 1's budget doubling for the task whose check was missing (MRPC: LoRA k = 8, lr 2e-3, 5 -> 10 epochs, dev).
  $L --tasks mrpc --methods lora --ranks 8 --lr 2e-3 --epochs 10 \
     --output-dir results/glue/learn_mrpc_lora8_e10 --run-dir runs/glue/learn_mrpc_lora8_e10
  ;;
tab3)
  # Step 3: LoRA vs sine-LoRA, k = 1, 2, 4, 8, seeds 0 1 2, the schedule and per-task, per-method rates of
  # configs/glue_tab3.yaml (omega 200, step 2). k = 4 first (a whole rank with its verdict), then k = 8 (the
  # paper's second claim, sine-LoRA k = 4 vs LoRA k = 8), then k = 1 and 2. One output folder for all.
  for ranks in 4 8 "1 2"; do
    $T3 --methods lora sine-lora --ranks $ranks --seeds 0 1 2
  done
  ;;
dora-grid)
  # Step 2 for DoRA / sine-DoRA (the protocol tunes every method; tab3-dora uses these rates): k = 4, seed 0, the
  # 10% validation split (dev never read), omega 200, step 2's schedule; 7e-4 / 2e-3 / 6e-3 as LoRA's grid, then
  # the ladder past an edge per method, in fp32 like Tab. 3. One folder per rate: results/glue/dora_grid_k4_<task>_lr<lr>.
  task=${2:?the task to tune on (sst2 and stsb, like step 2)}
  tune "$task" dora_ "7e-4 2e-3 6e-3" "$LADDER" "--ranks 4" dora sine-dora
  ;;
offset-grid)
  # Beyond the paper: sine-LoRA's offset start (--init-argument-rms S: omega B A starts with rms S, where the sine is
  # far from linear, and the update subtracts its starting value; docs/peft.md). From PEFT's B = 0 start the Tab. 3
  # adapters stay where sine-LoRA is LoRA+ (docs/glue.md), so this is the start that can test the rank argument.
  # Tuned as step 2 tunes sine-LoRA (k = 4, seed 0, the 10% validation split, dev never read), at 7e-4 and 2e-3
  # (sine-LoRA's B = 0 best on SST-2 and STS-B and the next rung up), then the ladder past an edge. One folder per
  # rate: results/glue/offset<S>_grid_k4_<task>_lr<lr>, beside the B = 0 grid (grid_k4_<task>_lr<lr>) it compares with.
  task=${2:?the task to tune on (sst2 and stsb, like step 2)}
  rms=${3:-1}
  tune "$task" "offset${rms}_" "7e-4 2e-3" "$LADDER" "--ranks 4 --init-argument-rms $rms" sine-lora
  ;;
tab3-offset)
  # Beyond the paper: Tab. 3's sine-LoRA cells from the offset start S (default 1), k = 4 then 1, seeds 0 1 2, under
  # Tab. 3's schedule and per-task rates: the offset grid's best rate equals sine-LoRA's B = 0 best on SST-2 and STS-B
  # (checked here first). Into results/glue/all-MiniLM-L6-v2-tab3-offset<S>; scripts/glue_offset.py pairs its rows by
  # seed with Tab. 3's LoRA and B = 0 sine-LoRA rows (versus_tab3.md in the same folder).
  rms=${2:-1}
  for t in sst2 stsb; do
    offset=$(python scripts/glue_grid_best.py $t sine-lora --prefix "offset${rms}_")
    plain=$(python scripts/glue_grid_best.py $t sine-lora)
    if [ "$offset" != "$plain" ]; then
      echo "the offset start's best rate on $t ($offset) is not sine-LoRA's ($plain): give it its own rates first" >&2
      exit 1
    fi
  done
  out=all-MiniLM-L6-v2-tab3-offset$rms
  for ranks in 4 1; do
    $T3_SCHEDULE --init-argument-rms $rms --tasks cola sst2 stsb mrpc rte --methods sine-lora --ranks $ranks \
      --seeds 0 1 2 --output-dir results/glue/$out --run-dir runs/glue/$out
    python scripts/glue_offset.py --offset-dir results/glue/$out --output results/glue/$out/versus_tab3.md
  done
  ;;
tab3-dora)
  # Step 3's second table: DoRA vs sine-DoRA at k = 4 and 8, seeds 0 1 2, at the rates of configs/glue_tab3.yaml
  # (today LoRA's and sine-LoRA's; where dora-grid finds other bests, change the dora / sine-dora entries there
  # first: rates are per row, so the folder takes them), into the same folder as Tab. 3. The four learned tasks
  # first (k = 4, then 8: every cell a verdict reads), RTE last: it is out of Avg and the verdicts (below its bar
  # in Tab. 3), so its cells complete the table but cannot change a verdict.
  for tasks in "cola sst2 stsb mrpc" rte; do
    $T3_SCHEDULE --tasks $tasks --methods dora sine-dora --ranks 4 8 --seeds 0 1 2 $T3_OUT
  done
  ;;
cola-check)
  # CoLA's rates came from the 1/3 ratio of the SST-2 / STS-B grids (LoRA 7e-4, sine-LoRA 2.5e-4), not from CoLA:
  # LoRA 7e-4 and sine-LoRA 7e-4, 2.5e-4 and 8e-5 on CoLA's held-out 10% (k = 4, seed 0, Tab. 3's 10-epoch
  # schedule); 8e-5 (stop 35: 20.40) because 2.5e-4 (24.22) was the better of the first two, an edge: now interior.
  # LoRA's 7e-4 is interior on CoLA already (step 1, dev, k = 8: 2.5e-4 / 7e-4 / 2e-3 / 6e-3 = 14.78 / 17.71 / 9.26 /
  # 0.00, results/glue/learn_lora8*).
  for lr in 7e-4 2.5e-4 8e-5; do
    methods="sine-lora"; [ $lr = 7e-4 ] && methods="lora sine-lora"
    $T3_SCHEDULE --tasks cola --methods $methods --ranks 4 --seeds 0 --val-fraction 0.1 --method-lr lora=$lr sine-lora=$lr \
      --output-dir results/glue/grid_k4_cola_lr$lr --run-dir runs/glue/grid_k4_cola_lr$lr
  done
  ;;
peers-grid)
  # Step 4's tuning, as step 2 tuned LoRA: each peer's lr at its k = 4-sized rank, seed 0, on the 10% validation
  # split (dev never read), under step 2's schedule; x1/3, x1, x3 around 6e-3 (the peers' documented rates sit
  # above LoRA's), then the ladder past an edge per method, in fp32 like Tab. 3. One folder per rate:
  # results/glue/peers_grid_k4_<task>_lr<lr>.
  task=${2:?the task to tune on (sst2 and stsb, like step 2)}
  tune "$task" peers_ "2e-3 6e-3 1.8e-2" "$LADDER 5e-2 1.5e-1" "$PEER_RANKS" $PEERS
  ;;
peers)
  # Step 4's table: the peers on SST-2, STS-B and MRPC, seeds 0 1 2, Tab. 3's schedule, into Tab. 3's folder (rates
  # are per row), where they pair by seed with LoRA / sine-LoRA k = 4 on the same tasks. Each task takes its own
  # grid's best rate; MRPC, which has no grid, STS-B's (the other sentence-pair task, also max length 128).
  for task in sst2 stsb mrpc; do
    grid=$task; [ $task = mrpc ] && grid=stsb
    rates=""
    for m in $PEERS; do
      r=$(python scripts/glue_grid_best.py $grid $m)  # set -e: no grid rows for a peer stops here, naming them
      rates="$rates $m=$r"
    done
    $T3_SCHEDULE --tasks $task --methods $PEERS $PEER_RANKS --seeds 0 1 2 --method-lr $rates $T3_OUT
  done
  ;;
tab3-render|tab3-bf16-render)
  # Re-render the Tab. 3 summary from its rows (no training), the protocol facts measured elsewhere on top. The
  # grid numbers are read from the grid folders (glue_grid_best.py --table); the plateau numbers (results/glue/
  # learn_*, each folder its own schedule) are stated here. tab3-bf16-render: the bf16 folder (the precision cross-check).
  # The folder keeps these lines and NOTE (report_text.json), so the renders that follow each landing row show them.
  g() { python scripts/glue_grid_best.py "$@" --table; }
  grid="SST-2: $(g sst2 lora), $(g sst2 sine-lora), sine-lora's $(g sst2 omega); STS-B: $(g stsb lora), $(g stsb sine-lora), sine-lora's $(g stsb omega)"
  plots=""  # the omega plots of the grid folders (omega 50 / 200 / 800 at sine-LoRA's best rate), linked from the summary
  for t in sst2 stsb; do
    p=grid_k4_${t}_lr$(python scripts/glue_grid_best.py $t sine-lora)/omega_${t}_r4.png
    [ -f results/glue/$p ] && plots="$plots${plots:+, }[$t](../$p)"
  done
  grid="$grid${plots:+ (omega plots: $plots)}"
  cola="$(g cola lora), $(g cola sine-lora)"
  table="$T3"; [ "$step" = tab3-bf16-render ] && table="$T3_BF16"
  folder=$(echo "$table" | sed 's/.*--output-dir \([^ ]*\).*/\1/')
  dora="DoRA takes LoRA's rate, sine-DoRA sine-LoRA's (configs/glue_tab3.yaml)" dora_methods=""
  if grep -qs ",dora," $folder/summary.csv; then
    dora_methods="dora sine-dora"
    d() { g "$@" --prefix dora_; }
    same="equal LoRA's and sine-LoRA's on both tasks, so they take those"
    for t in sst2 stsb; do
      for pair in dora:lora sine-dora:sine-lora; do
        [ "$(python scripts/glue_grid_best.py $t ${pair%:*} --prefix dora_)" = "$(python scripts/glue_grid_best.py $t ${pair#*:})" ] \
          || same="are not all LoRA's and sine-LoRA's: each takes its own"
      done
    done
    dora="DoRA and sine-DoRA tuned the same way (dora-grid; results/glue/dora_grid_k4_*): SST-2: $(d sst2 dora), $(d sst2 sine-dora); STS-B: $(d stsb dora), $(d stsb sine-dora): their best rates $same (configs/glue_tab3.yaml)"
  fi
  $table --methods lora sine-lora $dora_methods \
    --ranks 1 2 4 8 --seeds 0 1 2 --render-only true \
    --protocol "plateau (step 1; LoRA k = 8, seed 0, dev, budget doubled; threshold 1 point): CoLA 10 -> 20 epochs -2.04 MCC, SST-2 2 -> 4 epochs +0.00, MRPC 5 -> 10 epochs -3.43, STS-B 5 -> 10 epochs -0.09, RTE 8 -> 16 epochs +0.72: passes for every task (results/glue/learn_*)" \
      "LR / omega grid (step 2; k = 4, seed 0, a fixed 10% of the training rows held out, dev never read; results/glue/grid_k4_*): $grid. Chosen: LoRA 2e-3, sine-LoRA 7e-4, omega 200 (SST-2, STS-B, MRPC); CoLA and RTE, where LoRA needs 7e-4 to learn (step 1), LoRA 7e-4 and sine-LoRA 2.5e-4 (the 1/3 ratio both grids found). $dora. Check of the transfer on CoLA (cola-check, val split, Tab. 3's schedule): $cola (the rate used is the best, interior; results/glue/grid_k4_cola_lr*). Steps 1 and 2 ran in fp32, like the table" \
      "full fine-tune ceiling (step 1; every weight, lr 5e-5, seed 0, dev; results/glue/learn_full): CoLA MCC 30.61 (5 epochs), RTE 61.01 (8 epochs, as in Tab. 3) (bar 58: a task no adapter brings to its bar on its seed mean is left out of Avg and the verdicts and reported against this ceiling)" \
      "$(python scripts/glue_precision.py --line)" \
    ${NOTE:+--note "$NOTE"}
  ;;
*) echo "unknown step $step (expected: grid, double, cola-check, tab3, dora-grid, tab3-dora, peers-grid, peers, tab3-render or tab3-bf16-render)"; exit 2;;
esac
