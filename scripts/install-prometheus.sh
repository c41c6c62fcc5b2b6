#!/usr/bin/env bash
# Install a Prometheus server (the Debian package `prometheus`) for tests/integration/test_prometheus.py.
# The only network access is the distribution's apt repositories, through apt-get itself.
#
#   scripts/install-prometheus.sh
#
# Idempotent: does nothing when `prometheus` is already on PATH and runs. Uses sudo only when
# not root. The package's maintainer scripts would start a prometheus service on :9090; a
# temporary policy-rc.d (only if none exists) tells invoke-rc.d not to, and without systemd
# deb-systemd-invoke does nothing, so the install never starts (or fails on) a service.
# Prints the prometheus path last.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && prometheus --version >/dev/null 2>&1; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n1)" >&2
    command -v prometheus
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-prometheus.sh: not root and no sudo to run apt-get" >&2; exit 1; }
    SUDO=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install-prometheus.sh: apt-get is required (Debian/Ubuntu)" >&2; exit 1; }

POLICY=/usr/sbin/policy-rc.d
OURS=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# installed by install-prometheus.sh: start no service\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    OURS=1
fi
LOG="$(mktemp)"
cleanup() {
    if [[ $OURS -eq 1 ]]; then "${SUDO[@]}" rm -f "$POLICY"; fi
    rm -f "$LOG"
}
trap cleanup EXIT

# apt's output goes to a log, shown only when a step fails.
quietly() { "$@" >"$LOG" 2>&1 || { cat "$LOG" >&2; echo "install-prometheus.sh: failed: $*" >&2; exit 1; }; }

echo "installing the Debian package prometheus ..." >&2
quietly "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
quietly "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold prometheus

# Debian installs it to /usr/bin; be explicit in case PATH is unusual.
PROM="$(command -v prometheus || echo /usr/bin/prometheus)"
"$PROM" --version >/dev/null 2>&1 || {
    echo "install-prometheus.sh: $PROM --version failed after install" >&2; exit 1; }
echo "installed $("$PROM" --version 2>&1 | head -n1) at $PROM" >&2
echo "$PROM"
