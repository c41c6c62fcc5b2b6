#!/usr/bin/env bash
# One command on a fresh machine: install everything, lint, run the whole test suite
# (unit, integration on the embedded broker, crash, rebalance, packaging).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh test
bash scripts/install-helm.sh .venv/bin >/dev/null
bash scripts/install-prometheus.sh >/dev/null
export PATH="$ROOT/.venv/bin:$PATH"
echo "== ruff"
ruff check processor tests benchmarks
echo "== pytest"
set +e
pytest -q "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: failing the run" >&2
    exit 1
fi
exit $rc
