#!/usr/bin/env bash
# One command on a fresh machine: install everything (Python packages, Apache Kafka from Maven
# Central, helm, Prometheus, Graphviz), lint, run the whole test suite on Apache Kafka (the reference
# broker), then the Tansu lane (the embedded broker of the demo) on the end-to-end tests.
#   scripts/test.sh [PYTEST ARGS]    extra arguments go to the Apache Kafka lane only
#   PROCESSOR_TEST_PROCESSES=N       test processes of that lane (default 2, or 0 = one without
#                                    xdist when KAFKA_BOOTSTRAP_SERVERS names a shared cluster)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh test
bash scripts/install-helm.sh .venv/bin >/dev/null
bash scripts/install-prometheus.sh >/dev/null
bash scripts/install-graphviz.sh
echo "== Apache Kafka: $(bash scripts/install-kafka.sh)"
export PATH="$ROOT/.venv/bin:$PATH"
echo "== ruff"
ruff check processor tests benchmarks scripts

run_pytest() {
    set +e
    pytest "$@"
    local rc=$?
    set -e
    if [[ $rc -eq 5 ]]; then
        echo "pytest collected no tests: failing the run" >&2
        exit 1
    fi
    return $rc
}

lane="${PROCESSOR_TEST_KAFKA:-apache}"
echo "== pytest: the whole suite on ${KAFKA_BOOTSTRAP_SERVERS:-$lane}"
rc=0
# two processes (pytest-xdist), a file's tests together in one of them, each process with its
# own broker: the suite spends most of its time waiting on Kafka and worker subprocesses
# (~10 CPU-minutes in ~30 minutes when run in one process). One process on an external
# cluster (KAFKA_BOOTSTRAP_SERVERS), which both would share.
processes="${PROCESSOR_TEST_PROCESSES:-$([[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]] && echo 0 || echo 2)}"
PROCESSOR_TEST_KAFKA="$lane" run_pytest -q --durations=25 -n "$processes" --dist loadfile "$@" \
    || rc=$?
if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" && "$lane" != "tansu" ]]; then
    echo "== pytest: Tansu lane (embedded broker, classic group protocol)"
    PROCESSOR_TEST_KAFKA=tansu run_pytest -q tests/integration/test_end_to_end.py || rc=$?
fi
exit $rc
