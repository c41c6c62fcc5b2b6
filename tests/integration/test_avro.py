"""Avro end to end on a running worker: schemaless Avro in (read with a newer reader schema),
Avro in the Schema Registry wire format and JSON-Schema-validated JSON out, bad bytes and
invalid outputs dead-lettered. The registry is tests/unit/serde/registry_server.py (no Confluent
Schema Registry can be installed here; see its docstring)."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from processor.serde import SchemaRegistry, build_serde
from processor.tools.generator import create_topic
from tests.integration.kafka import ROOT, WorkerProcess, read_all
from tests.unit.serde.registry_server import RegistryServer

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "avro"
PASSWORD = "s3cret-registry-pw"


def _orders(n: int) -> list[dict[str, Any]]:
    statuses = ["NEW", "PAID", "SHIPPED"]
    return [{"id": f"o{i}", "customer": f"c{i % 7}", "amount": round(1 + (i % 13) * 2.5, 2),
             "quantity": 1 + i % 3, "ts": 1_700_000_000_000 + i, "status": statuses[i % 3],
             "tags": [], "note": None} for i in range(n)]


def test_avro_in_registry_avro_and_validated_json_out(broker, tmp_path, unique):
    for f in FIXTURES.iterdir():
        shutil.copyfile(f, tmp_path / f.name)
    topo = tmp_path / "avro_orders.yaml"
    names = {"orders-avro": f"orders-avro-{unique}", "customer-totals": f"totals-{unique}",
             "paid-json": f"paid-{unique}", "avro-orders": f"avro-orders-{unique}"}
    text = topo.read_text()
    for old, new in names.items():
        text = text.replace(f"topic: {old}", f"topic: {new}").replace(f"name: {old}", f"name: {new}")
    topo.write_text(text)
    create_topic(broker.bootstrap, names["orders-avro"], 2)

    v1 = build_serde("avro", schema=Path(tmp_path / "order_v1.avsc"))
    orders = _orders(300)
    orders[10]["amount"] = -5.0  # valid Avro, but the JSON Schema of paid-json says minimum 0
    payloads = [v1.encode(o) for o in orders]
    payloads[20] = b"\x02\xff\xff"  # not an order: dead-lettered at the source
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i, value in enumerate(payloads):
        p.produce(names["orders-avro"], value, orders[i]["id"].encode(), partition=i % 2)
    assert p.flush(30) == 0

    with RegistryServer(credentials=("svc", PASSWORD)) as registry:
        w = WorkerProcess(topo, broker.bootstrap, tmp_path / "state", tmp_path, env={
            "PROCESSOR_SCHEMA_REGISTRY_URL": registry.url,
            "PROCESSOR_SCHEMA_REGISTRY_USERNAME": "svc",
            "PROCESSOR_SCHEMA_REGISTRY_PASSWORD": PASSWORD})
        assert w.wait() == 0, w.log_text()
        # the schema was registered once under the sink's subject, not per record
        assert registry.count("POST", f"/subjects/{names['customer-totals']}-value/versions") == 1

        good = [o for i, o in enumerate(orders) if i != 20]
        want: dict[str, dict[str, Any]] = defaultdict(lambda: {"orders": 0, "revenue": 0.0})
        for o in good:
            if o["status"] != "NEW":
                want[o["customer"]]["orders"] += 1
                want[o["customer"]]["revenue"] += o["amount"]
        reader = build_serde("avro_registry", registry=SchemaRegistry(
            registry.url, username="svc", password=PASSWORD))
        totals = {}
        for k, v, _ in read_all(broker.bootstrap, names["customer-totals"]):
            assert v[0] == 0, "Confluent wire format: magic byte 0, then the schema id"
            totals[k.decode()] = reader.decode(v)
    assert set(totals) == set(want)
    for customer, got in totals.items():
        assert got["orders"] == want[customer]["orders"]
        assert abs(got["revenue"] - want[customer]["revenue"]) < 1e-6
        assert got["currency"] == "EUR", "the reader schema's default for a field v1 lacks"

    paid = [orjson.loads(v) for _, v, _ in read_all(broker.bootstrap, names["paid-json"])]
    assert sorted(x["id"] for x in paid) == sorted(o["id"] for i, o in enumerate(orders)
                                                  if i not in (10, 20))
    assert all(x["currency"] == "EUR" and x["amount"] >= 0 for x in paid)

    letters = read_all(broker.bootstrap, f"{names['avro-orders']}-dlq")
    assert sorted(v for _, v, _ in letters) == sorted([payloads[10], payloads[20]])
    assert PASSWORD not in w.log_path.read_text(errors="replace")
