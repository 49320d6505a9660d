#!/usr/bin/env bash
# The best pure generative recipe on MiniOneRec's Industrial data, train split only (or train
# and valid, SIDREC_TRAIN_VALID=1), one command: for each seed, a from-scratch model of two wide
# layers trained with attention over the last history item (`sft --item-window 1`), covered rows
# left out, early-stopped on the valid split; beside them one model of the same recipe with a
# learned vector per item (`init --item-embeddings`) and no dropout, which memorises the item
# pairs of the train split; the seeds' best checkpoints and that model joined into one ensemble
# checkpoint (each beam step scores a token by the models' weighted mean probability, the
# item-vector model at half a seed's share); then every seed, the ensemble and the last-item
# transition baseline on all test rows (50 beams), and `trainer compare` (bootstrap over rows and
# seeds) of the seeds and of the ensemble against the baseline and of the ensemble against the
# seeds.
# Usage: scripts/recipe-industrial.sh [seeds=42,1,2]
# SIDREC_DATA (default ../shared/data/industrial), SIDREC_INIT_SEED (the initial weights,
# default 42), SIDREC_RUN_DIR (default runs/industrial, runs/industrial-init<seed> for another
# SIDREC_INIT_SEED), SIDREC_THREADS (default 1: two seeds run side by side on a 2-core machine
# with SIDREC_PARALLEL=2, the default), SIDREC_TRAIN_VALID=1 (train on the train and valid
# splits, to be reported as such: no early stopping, `last` checkpoints, the transition table
# fitted on both splits as the baseline; default run directory <run>-train-valid).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-42,1,2}
D=${SIDREC_DATA:-../shared/data/industrial}
INIT_SEED=${SIDREC_INIT_SEED:-42}
TRAIN_VALID=${SIDREC_TRAIN_VALID:-0}
if [ "$INIT_SEED" = 42 ]; then RUN=runs/industrial; else RUN=runs/industrial-init$INIT_SEED; fi
if [ "$TRAIN_VALID" = 1 ]; then
  RUN=${SIDREC_RUN_DIR:-$RUN-train-valid}
  # Valid rows are training data here: validation would say nothing, so every model trains its
  # whole schedule and its last checkpoint is used.
  VALIDATION=(--include-valid --eval-every 100000 --valid-rows 64 --valid-beams 20 --patience 1000)
  CKPT=last
else
  RUN=${SIDREC_RUN_DIR:-$RUN}
  VALIDATION=(--eval-every 250 --valid-rows 512 --valid-beams 20 --patience 4)
  CKPT=best
fi
PARALLEL=${SIDREC_PARALLEL:-2}
export SIDREC_THREADS=${SIDREC_THREADS:-1}
[ -d "$D" ] || { echo "error: no dataset at $D (set SIDREC_DATA)" >&2; exit 1; }

# The same package set as the quickstart's build, so that both reuse one set of artifacts.
cargo build --release --locked -p sidrec-trainer -p sidrec-server
T=target/release/sidrec-trainer
mkdir -p "$RUN"
start=$(date +%s)

echo "==> init: tiny preset, two layers with a 2048-wide MLP, seed $INIT_SEED"
[ -f "$RUN/init/sidrec.json" ] ||
  $T init --data "$D" --out "$RUN/init" --preset tiny --layers 2 --intermediate-size 2048 \
    --seed "$INIT_SEED"

# The item-vector model: the same SFT recipe from its own init without dropout, so that it
# memorises the item pairs of the train split the seeds only generalise from; trained beside them.
train_items() {
  if [ -f "$RUN/sft-items-d0/$CKPT/sidrec.json" ]; then
    echo "item-vector model: kept from an earlier run ($RUN/sft-items-d0)"
    return
  fi
  [ -f "$RUN/init-items/sidrec.json" ] ||
    $T init --data "$D" --out "$RUN/init-items" --preset tiny --layers 2 --intermediate-size 2048 \
      --seed "$INIT_SEED" --item-embeddings > /dev/null
  sft_recipe "$RUN/init-items" "$RUN/sft-items-d0" "${seeds[0]}" 0 > "$RUN/sft-items-d0.log" 2>&1
  tail -n 1 "$RUN/sft-items-d0.log"
}

# sft_recipe INIT OUT SEED [DROPOUT=0.2]
sft_recipe() {
  $T sft --init "$1" --data "$D" --out "$2" --seed "$3" --tasks seqrec \
    --history-loss --drop-covered-rows --item-window 1 --dropout "${4:-0.2}" --weight-decay 0.01 \
    --batch-size 32 --lr 2e-3 --warmup 100 --cosine --epochs 12 "${VALIDATION[@]}"
}

train_and_eval() {
  local s=$1
  # A seed whose test evaluation is written is kept, as the init is: a rerun adds what is
  # missing (remove $RUN/test-s$s and $RUN/sft-s$s to train that seed again).
  if [ -f "$RUN/test-s$s/report.json" ]; then
    echo "seed $s: kept from an earlier run ($RUN/test-s$s)"
    return
  fi
  sft_recipe "$RUN/init" "$RUN/sft-s$s" "$s" > "$RUN/sft-s$s.log" 2>&1
  tail -n 1 "$RUN/sft-s$s.log"
  $T eval --checkpoint "$RUN/sft-s$s/$CKPT" --data "$D" --split test --num-beams 50 \
    --out "$RUN/test-s$s" > /dev/null
}

echo "==> SFT and test evaluation of seeds $SEEDS, and the item-vector model ($PARALLEL at a time; logs in $RUN/sft-*.log)"
# Jobs in groups of $PARALLEL; every job's exit status is checked.
seeds=(${SEEDS//,/ })
jobs=("${seeds[@]}")
[ ${#seeds[@]} -gt 1 ] && jobs+=(items)
for ((i = 0; i < ${#jobs[@]}; i += PARALLEL)); do
  pids=()
  for s in "${jobs[@]:i:PARALLEL}"; do
    if [ "$s" = items ]; then train_items & else train_and_eval "$s" & fi
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
done

BASE_D=$D
if [ "$TRAIN_VALID" = 1 ]; then
  # The table fitted on what the models saw: a copy of the dataset whose train split also holds
  # the valid rows.
  BASE_D=$RUN/data-train-valid
  if [ ! -f "$BASE_D/train.csv" ]; then
    rm -rf "$BASE_D" "$BASE_D.part" && mkdir -p "$BASE_D.part"
    cp -r "$D"/. "$BASE_D.part/"
    tail -n +2 "$D/valid.csv" >> "$BASE_D.part/train.csv"
    mv "$BASE_D.part" "$BASE_D"
  fi
  echo "==> last-item transition fitted on train+valid, on the same rows"
else
  echo "==> last-item transition on the same rows"
fi
$T eval --baseline transition --data "$BASE_D" --split test --num-beams 50 --out "$RUN/test-transition" >/dev/null

evals=""
for s in "${seeds[@]}"; do evals="$evals${evals:+,}$RUN/test-s$s"; done
$T compare --a "$RUN/test-transition" --b "$evals" --ks 10

if [ ${#seeds[@]} -gt 1 ]; then
  echo "==> the seeds and the item-vector model as one ensemble checkpoint ($RUN/ensemble), on the same rows"
  # Shares 2 per seed, 1 for the item-vector model (chosen on valid): it lifts the pairs seen in
  # train without crowding the unseen ones out of the top 10.
  members="" weights=2
  for s in "${seeds[@]:1}"; do
    members="$members${members:+,}$RUN/sft-s$s/$CKPT"
    weights="$weights,2"
  done
  $T ensemble --checkpoint "$RUN/sft-s${seeds[0]}/$CKPT" --members "$members,$RUN/sft-items-d0/$CKPT" \
    --weights "$weights,1" --out "$RUN/ensemble"
  $T eval --checkpoint "$RUN/ensemble" --data "$D" --split test --num-beams 50 \
    --out "$RUN/test-ensemble" > /dev/null
  $T compare --a "$RUN/test-transition" --b "$RUN/test-ensemble" --ks 10
  $T compare --a "$evals" --b "$RUN/test-ensemble" --ks 10
fi
echo "==> done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
