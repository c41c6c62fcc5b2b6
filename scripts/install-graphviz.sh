#!/usr/bin/env bash
# Install Graphviz (the Debian package `graphviz`) so tests/unit/graph/test_diagram.py can check
# that `processor describe --format dot` is valid DOT with the real `dot`.
# The only network access is the distribution's apt repositories, through apt-get itself.
#
#   scripts/install-graphviz.sh
#
# Idempotent: does nothing when `dot` is already on PATH. Uses sudo only when not root.
set -euo pipefail

if command -v dot >/dev/null 2>&1; then
    echo "graphviz already installed: $(dot -V 2>&1)" >&2
    exit 0
fi
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-graphviz.sh: not root and no sudo to run apt-get" >&2; exit 1; }
    SUDO=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install-graphviz.sh: apt-get is required (Debian/Ubuntu)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get install -y --no-install-recommends graphviz >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -qq >/dev/null
    "${SUDO[@]}" apt-get install -y --no-install-recommends graphviz >/dev/null
fi
echo "graphviz installed: $(dot -V 2>&1)" >&2
