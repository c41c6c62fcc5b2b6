"""A real Prometheus server (the Debian package `prometheus`, see scripts/install-prometheus.sh)
run as a subprocess for a test, and its HTTP query API."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from processor.tools.broker import free_port

INSTALL_HINT = "prometheus is not installed: run scripts/install-prometheus.sh (CI does)"


def find_prometheus() -> str | None:
    """The prometheus binary: on PATH, else where the Debian package puts it."""
    found = shutil.which("prometheus")
    if found:
        return found
    debian = Path("/usr/bin/prometheus")
    return str(debian) if debian.is_file() else None


class PrometheusServer:
    """`prometheus` scraping one target every `scrape_interval`, its TSDB and log under `workdir`.
    Use as a context manager; `query()` evaluates PromQL at the current time."""

    def __init__(self, workdir: Path, job: str, target: str, *, binary: str | None = None,
                 scrape_interval: str = "1s") -> None:
        self.binary = binary or find_prometheus()
        if self.binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.job = job
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        # JSON is YAML: no quoting surprises for the job name or target
        self.config_path.write_text(json.dumps({
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                       "scrape_timeout": scrape_interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
        }, indent=2))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 30) -> PrometheusServer:
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=info"],
            cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n"
                                     + self.log_text())
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready within {timeout}s:\n{self.log_text()}")

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error in the body
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector: `[{"metric": {labels}, "value": float}]`."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        if data["resultType"] != "vector":
            raise AssertionError(f"{expr!r}: expected a vector, got {data['resultType']}")
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]

    def value(self, expr: str) -> float | None:
        """The single sample of `expr`, None when the vector is empty."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr!r}: expected one series, got {result}"
        return result[0]["value"]

    def targets(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/targets")["activeTargets"]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
