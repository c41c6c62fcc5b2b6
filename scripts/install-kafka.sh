#!/usr/bin/env bash
# Resolve the pinned Apache Kafka broker (kafka_2.13, its runtime dependencies and a log4j2
# backend) from Maven Central into .kafka/<version>/lib, a git-ignored cache in the repo.
# A complete cache is reused. Prints the lib directory on success.
#   scripts/install-kafka.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/kafka/pom.xml"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
DEST="$ROOT/.kafka/$VERSION/lib"

if [[ -f "$DEST/.complete" ]]; then
    echo "$DEST"
    exit 0
fi
if ! command -v java >/dev/null 2>&1; then
    echo "install-kafka: Java >= 17 is required to run Apache Kafka $VERSION, and 'java' is not on PATH" >&2
    exit 1
fi
JAVA_MAJOR="$(java -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')"
if [[ -z "$JAVA_MAJOR" || "$JAVA_MAJOR" -lt 17 ]]; then
    echo "install-kafka: Java >= 17 is required to run Apache Kafka $VERSION, found '${JAVA_MAJOR:-unknown}'" >&2
    exit 1
fi
if ! command -v mvn >/dev/null 2>&1; then
    echo "install-kafka: Maven ('mvn') is required to resolve Apache Kafka $VERSION from Maven Central" >&2
    exit 1
fi
# one install at a time (parallel test processes may each ask for the broker): the others wait,
# then find it complete
mkdir -p "$ROOT/.kafka"
exec 9>"$ROOT/.kafka/.install.lock"
flock 9
if [[ -f "$DEST/.complete" ]]; then
    echo "$DEST"
    exit 0
fi
TMP="$ROOT/.kafka/$VERSION/lib.partial"
rm -rf "$TMP"
mkdir -p "$TMP"
if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$TMP" >"$ROOT/.kafka/maven.log" 2>&1; then
    echo "install-kafka: Maven could not resolve Apache Kafka $VERSION (see $ROOT/.kafka/maven.log)" >&2
    exit 1
fi
# one slf4j binding: the broker's own 1.7 api is superseded by the 2.x one we pin
find "$TMP" -name 'slf4j-api-1.*.jar' -delete
touch "$TMP/.complete"
rm -rf "$DEST"
mv "$TMP" "$DEST"
echo "$DEST"
