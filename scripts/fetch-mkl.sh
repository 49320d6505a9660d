#!/usr/bin/env bash
# Intel MKL for the `mkl` cargo feature, from PyPI's wheels, into .cache/mkl (once).
# Prints the MKLROOT to build with:
#   MKLROOT=$(./scripts/fetch-mkl.sh) cargo build --release --features sidrec-trainer/mkl,sidrec-server/mkl
# candle's `mkl` feature links MKL statically with Intel OpenMP (libiomp5); its build script
# finds the libraries through $MKLROOT and would otherwise try a download that fails offline.
# The binaries then need nothing from MKL at run time. About 650 MB on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${SIDREC_MKL_VERSION:-2026.2.0}
ROOT=$PWD/.cache/mkl
if [ -f "$ROOT/lib/libmkl_core.a" ] && [ -f "$ROOT/include/mkl.h" ]; then
  echo "$ROOT"
  exit 0
fi
for tool in python3 unzip; do
  command -v "$tool" >/dev/null || { echo "error: fetch-mkl.sh needs $tool" >&2; exit 1; }
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps -d "$TMP/whl" \
  "mkl-static==$VERSION" "mkl-include==$VERSION" "intel-openmp==$VERSION" >&2
mkdir -p "$TMP/unz"
for w in "$TMP"/whl/*.whl; do unzip -q -o "$w" -d "$TMP/unz"; done
STAGE=$ROOT.partial
rm -rf "$STAGE" && mkdir -p "$STAGE/lib" "$STAGE/include"
cp "$TMP"/unz/mkl_include-*.data/data/include/mkl*.h "$STAGE/include/"
cp "$TMP"/unz/mkl_static-*.data/data/lib/libmkl_{intel_lp64,intel_thread,core}.a "$STAGE/lib/"
cp "$TMP"/unz/intel_openmp-*.data/data/lib/libiomp5.a "$STAGE/lib/"
rm -rf "$ROOT" && mv "$STAGE" "$ROOT"
echo "$ROOT"
