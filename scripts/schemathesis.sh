#!/usr/bin/env bash
# Install schemathesis (the OpenAPI contract fuzzer of server/tests/contract.rs) into a virtual
# environment under .cache, once, and print the path of its `st` command.
# Idempotent: reuses the environment when it already holds the pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
VENV=".cache/schemathesis-$VERSION"
ST="$PWD/$VENV/bin/st"

if [ -x "$ST" ] && "$ST" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$ST"
  exit 0
fi
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; schemathesis needs Python >= 3.9" >&2
  exit 1
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
"$ST" --version >&2
echo "$ST"
