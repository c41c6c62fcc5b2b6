#!/usr/bin/env bash
# Create .venv and install the project with the given extras (default: local).
#   scripts/setup.sh [EXTRAS]     e.g. scripts/setup.sh test,bench
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-local}"
PY="${PYTHON:-python3}"
cd "$ROOT"
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${EXTRAS}]"
