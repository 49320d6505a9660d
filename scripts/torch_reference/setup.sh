#!/usr/bin/env bash
# Installs CPU PyTorch and transformers from PyPI into .cache/torch-venv (once), for the
# PyTorch yardstick of the training and decoding benchmarks. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.cache/torch-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch, transformers, safetensors, numpy' 2>/dev/null; then
  "$VENV/bin/pip" install --quiet torch transformers safetensors numpy
fi
"$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
