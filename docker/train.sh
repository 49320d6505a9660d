#!/usr/bin/env bash
# One-shot training job (installed in the images as `sidrec-train`; run by the compose fleet's
# `trainer` service and the Kubernetes trainer Job): make a dataset (synthetic unless
# $SIDREC_DATA already holds one), train a checkpoint from scratch with SFT, and move it into
# the shared model directory $SIDREC_MODEL_DIR under a new name. Replicas load it when a message
# arrives on the Redis reload channel (or at their next --watch-interval check).
#
# Settings (environment): SIDREC_MODEL_DIR (required), SIDREC_DATA (dataset directory),
# TRAIN_WORK_DIR (scratch space), TRAIN_STEPS (SFT steps), CHECKPOINT_NAME (directory name in
# the model directory; default sft-<UTC time>). SIDREC_DEVICE selects cpu or cuda.
set -euo pipefail

: "${SIDREC_MODEL_DIR:?set SIDREC_MODEL_DIR to the shared model directory}"
WORK="${TRAIN_WORK_DIR:-${TMPDIR:-/tmp}/sidrec-train}"
DATA="${SIDREC_DATA:-$WORK/data}"
STEPS="${TRAIN_STEPS:-200}"
NAME="${CHECKPOINT_NAME:-sft-$(date -u +%Y%m%dT%H%M%SZ)}"
TRAINER="${TRAINER_BIN:-sidrec-trainer}"

case "$NAME" in
  .* | */* | "") echo "sidrec-train: CHECKPOINT_NAME must be a plain name, not '$NAME'" >&2; exit 2 ;;
esac
if [ -e "$SIDREC_MODEL_DIR/$NAME" ]; then
  echo "sidrec-train: $SIDREC_MODEL_DIR/$NAME already exists" >&2
  exit 2
fi
mkdir -p "$WORK"

if ! ls "$DATA"/*.json >/dev/null 2>&1; then
  echo "==> synthesizing a dataset into $DATA"
  "$TRAINER" data synth --out "$DATA"
fi
echo "==> a tiny model initialised from the dataset's SID vocabulary"
rm -rf "$WORK/init" "$WORK/sft"
"$TRAINER" init --data "$DATA" --out "$WORK/init"
echo "==> $STEPS SFT steps"
"$TRAINER" sft --init "$WORK/init" --data "$DATA" --out "$WORK/sft" \
  --tasks seqrec,title2sid --max-steps "$STEPS" --eval-every "$STEPS" \
  --valid-rows 200 --lr 3e-3 --warmup 20

# Replicas skip names that start with '.', so the copy is staged under one and renamed into
# place in one step: no replica ever sees a half-copied checkpoint.
stage="$SIDREC_MODEL_DIR/.$NAME.partial"
rm -rf "$stage"
cp -r "$WORK/sft/best" "$stage"
mv -T "$stage" "$SIDREC_MODEL_DIR/$NAME"
echo "==> checkpoint $NAME written to $SIDREC_MODEL_DIR"
