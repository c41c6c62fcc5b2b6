#!/usr/bin/env bash
# One command on a fresh machine: install, start the embedded broker, generate orders, run the
# revenue-per-user topology, print results as they arrive. Extra args go to `processor demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" local
cd "$ROOT"
exec .venv/bin/processor demo "$@"
