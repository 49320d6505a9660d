#!/usr/bin/env bash
# The main job, from a fresh clone: build, fetch the text encoder, synthesize the default
# dataset, embed its items and build learned Semantic IDs, score the baselines, train a small
# model for a few minutes (SFT), evaluate it with constrained beam search, then serve it:
# /v1/recommend, /v1/sid/lookup, /metrics on port 8080.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${SIDREC_RUN_DIR:-runs/quickstart}
PORT=${SIDREC_PORT:-8080}
STEPS=${SIDREC_SFT_STEPS:-2000}
# A tiny model runs faster on one thread than on a pool that spins on barriers; the two SFT
# runs take one core each. The embedding and the evaluation run alone and take every core
# (their results do not depend on the thread count).
export SIDREC_THREADS=${SIDREC_THREADS:-1}
CORES=$(nproc 2>/dev/null || echo 2)

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install a Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi

echo "==> building (release; the first build takes about 6 minutes on 2 cores)"
cargo build --release --locked -p sidrec-trainer -p sidrec-server
T=target/release/sidrec-trainer

echo "==> fetching the text encoder (all-MiniLM-L6-v2, once, into .cache/)"
./scripts/fetch-encoder.sh
ENCODER=.cache/encoders/all-MiniLM-L6-v2

echo "==> synthesizing the default dataset into $RUN/data"
$T data synth --out "$RUN/data"

echo "==> embedding every item's text, then learned SIDs (balanced residual k-means)"
$T embed --threads "$CORES" --data "$RUN/data" --encoder "$ENCODER" --out "$RUN/items.npy" \
  --max-length 128
$T sid --data "$RUN/data" --embeddings "$RUN/items.npy" --method rq-kmeans-constrained

echo "==> dataset statistics, SID trie and baselines"
$T data stats --data "$RUN/data" --json "$RUN/stats.json"

echo "==> a small from-scratch checkpoint with item embeddings, then two models of $STEPS SFT steps (16 examples each)"
# A 300-token BPE: the prompts are SIDs and a few words, and every unused token in the softmax
# slows learning. Two layers with a wide MLP (2048) learn the item-to-item associations this
# data is made of much faster per CPU-second than the tiny preset's four narrow ones
# (BENCHMARKS.md, "Quickstart model").
# Users re-buy consumables, and the item after X is often X again: a copy gate (--copy-gate)
# learns when to write the last item's SID again, which the model otherwise learns only for the
# items it has seen repeated (BENCHMARKS.md, "The copy gate").
$T init --data "$RUN/data" --out "$RUN/checkpoints/init" --item-embeddings --copy-gate \
  --vocab-size 300 --layers 2 --intermediate-size 2048
# Batches of 16 learn more per example than 32 at this size, at the same tokens/s. Rows that
# only begin a longer row of the same user are left out (--drop-covered-rows): the history loss
# of the longer row already supervises them, so an epoch takes 45 % of the tokens.
# On this data the next item depends mostly on the last one: each token attends only to the
# item before its own (--item-window 1), so every transition of a whole row is learned from what
# the checkpoint's prompts (validation, eval, serving) will hold, the last history item alone
# (BENCHMARKS.md, "Quickstart model").
# Each history item's vector is left out of a pass at random (--item-dropout 0.3), so the model
# keeps reading the SID codes instead of memorising item pairs through the vector alone. It then
# gains from 2000 steps, where without it 2000 steps score below 1200 (BENCHMARKS.md, "Item
# dropout").
# The item vectors learn at three times the learning rate (--item-lr-scale 3): each one is
# trained only by the rows its item is in, a few dozen times in 2000 steps (BENCHMARKS.md, "Item
# vectors at three times the learning rate").
# One validation, at the end of the schedule (--eval-every 0): the learning rate decays to zero,
# the last checkpoint is as good as the best of eight validations, and each validation costs
# as much as 30 steps (BENCHMARKS.md, "Early stopping and validation in the quickstart's
# schedule").
sft() {
  $T sft --init "$RUN/checkpoints/init" --data "$RUN/data" --out "$1" --seed "$2" \
    --tasks seqrec --history-loss --drop-covered-rows --batch-size 16 --max-steps "$STEPS" \
    --eval-every 0 --valid-rows 500 --lr 3e-3 --warmup 20 --item-window 1 --item-dropout 0.3 \
    --item-lr-scale 3
}
# Two models from other seeds, one per core, decoded together as one ensemble checkpoint: they
# err on different rows, and together they rank the pairs seen once or twice in train much
# better than either alone (BENCHMARKS.md, "Quickstart model"). Each beam step scores a token by
# their mean log-probability (--pool product), so the items both models are sure of come first.
# Each model's first SID code is also scored without its item vectors (--item-free-share 0.7), the
# prediction item dropout trained beside the one with them: the vector recalls the pairs seen in
# train, the SID codes generalise to pairs never seen, and together they rank better than either
# (BENCHMARKS.md, "Item-free twins"; the share was chosen on valid with the copy gate, "The copy
# gate").
echo "    (the second model trains beside the first; its log: $RUN/sft-2.log)"
sft "$RUN/sft-2" 1 > "$RUN/sft-2.log" 2>&1 &
second=$!
# A background job ignores the terminal's Ctrl-C: stop it with the script.
trap 'kill "$second" 2>/dev/null' EXIT
sft "$RUN/sft" 42
wait "$second" || { echo "error: the second SFT run failed; see $RUN/sft-2.log" >&2; exit 1; }
trap - EXIT
$T ensemble --checkpoint "$RUN/sft/best" --members "$RUN/sft-2/best" --pool product \
  --item-free-share 0.7 --out "$RUN/ensemble"

echo "==> the ensemble of both best checkpoints and both baselines on the same 500 test rows (50 beams)"
$T eval --threads "$CORES" --checkpoint "$RUN/ensemble" --data "$RUN/data" --split test \
  --num-beams 50 --limit 500 --out "$RUN/eval-sft"
for b in transition popularity; do
  $T eval --baseline "$b" --data "$RUN/data" --split test --num-beams 50 --limit 500 \
    --out "$RUN/eval-$b" >/dev/null
done
printf '\n%-22s %8s %8s %8s %8s\n' ranker HR@5 NDCG@5 HR@10 NDCG@10
for r in sft transition popularity; do
  awk -v name="$r" -F'|' '
    $2 ~ /^ *5 *$/ { h5 = $3; n5 = $4 }
    $2 ~ /^ *10 *$/ { h10 = $3; n10 = $4 }
    END { printf "%-22s %8.4f %8.4f %8.4f %8.4f\n", name, h5, n5, h10, n10 }
  ' "$RUN/eval-$r/report.md"
done

cat <<MSG

==> serving $RUN/ensemble on http://127.0.0.1:$PORT (Ctrl-C to stop). Try:
  curl -s http://127.0.0.1:$PORT/v1/recommend -H 'content-type: application/json' \
       -d '{"history": [7, 12, 31], "k": 5}'
  curl -s http://127.0.0.1:$PORT/v1/events -H 'content-type: application/json' \
       -d '{"user_id": "alice", "item_ids": [7, 12]}'
  curl -s http://127.0.0.1:$PORT/v1/recommend -H 'content-type: application/json' \
       -d '{"user_id": "alice", "k": 5, "exclude_history": true}'
  curl 'http://127.0.0.1:$PORT/v1/model'
  curl 'http://127.0.0.1:$PORT/v1/sid/lookup?item_id=7'
  curl 'http://127.0.0.1:$PORT/v1/sid/lookup?title=stainless%20steel%20brad%20nails&limit=3'
  curl 'http://127.0.0.1:$PORT/readyz'
  curl 'http://127.0.0.1:$PORT/metrics'
MSG
exec target/release/sidrec-server --model-dir "$RUN/ensemble" --port "$PORT"
