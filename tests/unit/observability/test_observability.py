"""The HTTP server's routes, the partitioner the state API relies on, the progress bar, the
window operators' committed reads and the stall fault — without a broker."""

from __future__ import annotations

import io
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter

from processor.observability.http import HttpServer
from processor.observability.progress import ProgressBar
from processor.state import RocksStore
from processor.state.partitioner import murmur2, partition_for
from tests.unit.operators.windows.test_windows import FAST, STRING, Harness, window_spec


def _signed(x: int) -> int:
    return x - (1 << 32) if x >= 1 << 31 else x


def test_murmur2_matches_kafkas_reference_vectors():
    # the values of Kafka's own UtilsTest for Utils.murmur2 (Java ints)
    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
               "a-little-bit-longer-string": -1486304829,
               "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    assert {k: _signed(murmur2(k.encode())) for k in vectors} == vectors
    # and librdkafka's murmur2_random over 7 partitions (checked against a real producer)
    assert [partition_for(k, 7) for k in (b"", b"a", b"ab", b"abc", b"user-0", b"user-17")] == [
        2, 5, 0, 4, 5, 6]


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            body = resp.read()
            return resp.status, body if path == "/metrics" else orjson.loads(body)
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_http_routes():
    registry = CollectorRegistry()
    Counter("processor_demo_total", "demo", registry=registry).inc(3)
    state_calls: list[tuple[str, str, bool, dict[str, str]]] = []
    healthy = {"ok": True}

    def state(store: str, key: str, forwarded: bool, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        state_calls.append((store, key, forwarded, query))
        return 200, {"value": 1}

    def health() -> tuple[int, dict[str, Any]]:
        return (200, {"status": "ok"}) if healthy["ok"] else (503, {"status": "stuck"})

    server = HttpServer(0, registry, host="127.0.0.1", health=health,
                        ready=lambda: (503, {"ready": False, "reason": "restoring 1 task(s)"}),
                        state=state).start()
    try:
        status, body = get(server.port, "/metrics")
        assert status == 200 and b"processor_demo_total 3.0" in body
        assert get(server.port, "/healthz") == (200, {"status": "ok"})
        healthy["ok"] = False
        assert get(server.port, "/healthz")[0] == 503
        assert get(server.port, "/readyz")[0] == 503
        assert get(server.port, "/state/totals/a%2Fb%20c?from=5&to=9") == (200, {"value": 1})
        assert state_calls == [("totals", "a/b c", False, {"from": "5", "to": "9"})]
        assert get(server.port, "/state/totals")[0] == 400
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_progress_bar_draws_in_place_and_finishes():
    out = io.StringIO()
    bar = ProgressBar("restoring state", out, width=10, min_interval_s=0)
    bar.update(50, 200)
    bar.update(200, 200)
    bar.finish("restore complete")
    text = out.getvalue()
    assert "\rrestoring state [##........]  25.0% 50/200 records" in text
    assert "[##########] 100.0% 200/200 records" in text
    assert text.endswith("\rrestore complete\x1b[K\n")


@pytest.mark.parametrize(("kind", "params"), [
    ("tumbling", {"size": 10}), ("hopping", {"size": 10, "advance": 5}),
    ("session", {"gap": 5}), ("sliding", {"span": 5}), ("count", {"size": 3}),
])
def test_window_reads_show_the_committed_open_windows(kind, params):
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp), window_spec(kind, params), FAST, 0)
        try:
            h.run([("a", {"x": 1}, 1, 0), ("b", {"x": 5}, 2, 1), ("a", {"x": 2}, 3, 2)], False)
            assert h.op.read(h.store, STRING.encode("a")) == []  # nothing committed yet
            h.checkpoint()
            got = h.op.read(h.store, STRING.encode("a"))
            assert got and all(w["n"] >= 1 and w["window_start"] <= w["window_end"] for w in got)
            assert max(w["n"] for w in got) == 2 and max(w["s"] for w in got) == 3
            assert h.op.read(h.store, STRING.encode("zz")) == []
        finally:
            h.close()


def test_store_stats_are_estimates_of_keys_and_bytes(tmp_path):
    store = RocksStore(tmp_path / "s")
    try:
        store.apply({f"k{i}".encode(): b"x" * 100 for i in range(1000)}, {})
        keys, size = store.stats()
        assert keys > 0 and size > 0
    finally:
        store.close()
