# syntax=docker/dockerfile:1
#
# Container image of the `processor` stream worker.
#
#   docker build -t processor:0.1.0 .
#   docker run --rm --stop-timeout 90 -e KAFKA_BOOTSTRAP_SERVERS=kafka:9092 -p 9100:9100 \
#       -v processor-state:/var/lib/processor/state processor:0.1.0
#
# Stage 1 builds the project wheel and a virtualenv with every dependency from binary wheels
# (confluent-kafka bundles librdkafka, rocksdict bundles RocksDB: manylinux wheels, so no
# compiler is needed anywhere). Stage 2 copies only that virtualenv onto the same base image,
# so the interpreter path baked into the venv's scripts (/usr/local/bin/python3.11) stays valid.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Packaging metadata first (README.md is optional: the glob keeps COPY working without it).
COPY pyproject.toml README.md* ./
COPY processor/ ./processor/

# Build the project wheel, then install it with its dependencies into /opt/venv.
# --only-binary=:all: fails the build loudly if a dependency ever lacks a wheel for this
# platform, instead of silently needing a compiler the slim image does not have.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: /wheels/processor-*.whl

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="processor" \
      org.opencontainers.image.description="Kafka-native stateful stream processor: YAML topologies, RocksDB state, exactly-once checkpoints" \
      org.opencontainers.image.version="0.1.0"

# A fixed numeric, non-root user: Kubernetes' runAsNonRoot can only verify a numeric USER.
# Its home is the state parent directory, which it owns.
RUN groupadd --system --gid "${APP_GID}" processor \
    && useradd --system --uid "${APP_UID}" --gid processor --no-create-home \
        --home-dir /var/lib/processor --shell /usr/sbin/nologin processor \
    && mkdir -p /var/lib/processor/state \
    && chown -R "${APP_UID}:${APP_GID}" /var/lib/processor

COPY --from=builder /opt/venv /opt/venv
COPY topologies/ /app/topologies/
COPY config/ /app/config/

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROCESSOR_STATE_DIR=/var/lib/processor/state \
    PROCESSOR_METRICS_PORT=9100

# The working directory is the state parent, so a config file's relative `state_dir: state`
# (as in config/default.yaml, which the default CMD passes) also resolves to the volume below.
# PROCESSOR_* variables (and KAFKA_BOOTSTRAP_SERVERS) override the --config file's values.
WORKDIR /var/lib/processor

USER ${APP_UID}:${APP_GID}

# Smoke test at build time: the native wheels load on this base image, the default topology
# parses and the schema registry client (imported only by workers that use a registry) has its
# dependencies, confluent-kafka's `schemaregistry` extra (writes nothing: bytecode writing is off).
RUN processor validate /app/topologies/revenue_per_user.yaml \
    && python -c "import confluent_kafka.schema_registry"

VOLUME ["/var/lib/processor/state"]

# The worker's one HTTP port (setting metrics_port): GET /metrics (Prometheus), /healthz
# (liveness), /readyz (readiness: 503 while restoring) and the state API /state/{store}/{key}.
EXPOSE 9100

# Liveness, not readiness: /healthz answers 200 while the processing loop turns (also during a
# long state restore) and 503 once it is stuck; urlopen raises on a 503, so the check fails.
# No curl in the image: probe with the interpreter that is already there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PROCESSOR_METRICS_PORT', '9100'), timeout=4).read(1)"]

# Exec form: the worker is PID 1 and receives SIGTERM itself (it handles it: finishes the batch,
# commits the last checkpoint, leaves the group). Give it more than the transaction timeout to
# stop (docker stop -t 90; the Helm chart sets terminationGracePeriodSeconds: 90).
# More cores per container: `run ... --processes N` makes PID 1 a supervisor of N workers that
# forwards SIGTERM to each and waits for them; member i serves port 9100 + i (publish them all;
# the HEALTHCHECK above sees member 0, the supervisor restarts a member that dies).
STOPSIGNAL SIGTERM
ENTRYPOINT ["processor"]
CMD ["run", "/app/topologies/revenue_per_user.yaml", "--config", "/app/config/default.yaml"]
