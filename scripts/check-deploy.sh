#!/usr/bin/env bash
# Offline checks of the deployment files (scripts/check_deploy.py): flags and environment
# variables against the binaries' --help, compose/manifest consistency, and the Kubernetes
# manifests against their schemas with kubernetes-validate (from PyPI, which bundles the
# schemas: nothing else is downloaded). Run by scripts/test.sh after the workspace tests.
#
#   scripts/check-deploy.sh [BIN_DIR]     (default: target/debug, as built by cargo test)
#
# Without pip or PyPI the check is skipped (and counted by scripts/test.sh), unless
# SIDREC_REQUIRE_SHARED=1.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR="${1:-${CARGO_TARGET_DIR:-target}/debug}"
VERSION=1.37.0
VENV="${SIDREC_CACHE:-.cache}/deploy-venv"

skip() {
  if [ "${SIDREC_REQUIRE_SHARED:-0}" = 1 ]; then
    echo "error: $1" >&2
    exit 1
  fi
  echo "SKIP check-deploy: $1" >&2
  if [ -n "${SIDREC_SKIP_LOG:-}" ]; then
    printf 'scripts/check-deploy.sh\t%s\n' "$1" >>"$SIDREC_SKIP_LOG"
  fi
  exit 0
}

for b in sidrec-server sidrec-trainer; do
  [ -x "$BIN_DIR/$b" ] || skip "$BIN_DIR/$b is not built (cargo build --workspace)"
done
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$VERSION"; then
  python3 -m venv "$VENV" >/dev/null 2>&1 \
    || skip "cannot create a Python venv (install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION" \
    >&2 || skip "pip install kubernetes-validate==$VERSION failed (no PyPI?)"
fi
"$VENV/bin/python" scripts/check_deploy.py "$BIN_DIR" \
  --kubernetes-validate "$VENV/bin/kubernetes-validate"

# The checker must catch what it is for: a copy with an unknown variable, an unknown trainer
# flag and a misspelt manifest field has to fail, naming all three.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sidrec-check-deploy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -r docker deploy "$tmp/"
sed -i 's/SIDREC_MAX_QUEUE:/SIDREC_MAX_QUEUES:/' "$tmp/docker/compose.yaml"
sed -i 's/--valid-rows 200/--valid-row 200/' "$tmp/docker/train.sh"
sed -i '0,/periodSeconds:/s//periodSecond:/' "$tmp/deploy/k8s/server.yaml"
if out=$("$VENV/bin/python" scripts/check_deploy.py "$BIN_DIR" --root "$tmp" \
    --kubernetes-validate "$VENV/bin/kubernetes-validate" 2>&1); then
  echo "error: check_deploy.py passed a broken copy of the deployment files" >&2
  exit 1
fi
for want in SIDREC_MAX_QUEUES --valid-row periodSecond; do
  grep -q -- "$want" <<<"$out" || { echo "error: check_deploy.py did not report $want:" >&2; echo "$out" >&2; exit 1; }
done
echo "check_deploy: a broken copy is rejected (unknown variable, flag and manifest field reported)"
