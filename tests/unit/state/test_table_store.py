"""TableStore (a real RocksDB under tmp_path) and BroadcastState (pure Python)."""

from __future__ import annotations

import logging

import orjson
import pytest

from processor.operators.broadcast import BroadcastState
from processor.state.table import TableStore


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "topo" / "table-customers" / "3"


@pytest.fixture
def store(path):
    s = TableStore(path)
    yield s
    s.close()


# -- TableStore -------------------------------------------------------------------------------

def test_starts_empty_without_offsets(store, path):
    assert path.is_dir()
    assert store.get(b"missing") is None
    assert list(store.items()) == []
    assert store.offsets() == {}


def test_apply_puts_overwrites_and_deletes(store):
    store.apply({b"a": b"1", b"b": b"2", b"": b"empty key"}, {0: 3})
    assert store.get(b"a") == b"1"
    assert store.get(b"") == b"empty key"
    store.apply({b"a": b"10", b"b": None, b"never-there": None}, {0: 6})
    assert store.get(b"a") == b"10"
    assert store.get(b"b") is None  # tombstone
    assert list(store.items()) == [(b"", b"empty key"), (b"a", b"10")]
    assert store.offsets() == {0: 6}


def test_offsets_per_partition(store):
    store.apply({}, {0: 5, 2: 7, 12: 1})
    store.apply({b"k": b"v"}, {2: 9})
    assert store.offsets() == {0: 5, 2: 9, 12: 1}


def test_keys_never_collide_with_metadata(store):
    """Raw table keys are arbitrary bytes, including what metadata keys look like."""
    store.apply({b"next_offset/0": b"data", b"m": b"x", b"d": b"y"}, {0: 42})
    assert store.offsets() == {0: 42}
    assert store.get(b"next_offset/0") == b"data"
    assert dict(store.items()) == {b"next_offset/0": b"data", b"m": b"x", b"d": b"y"}


def test_reopen_keeps_data_and_offsets(path):
    s = TableStore(path)
    s.apply({b"a": b"1", b"b": b"2"}, {0: 2, 1: 5})
    s.apply({b"b": None}, {1: 6})
    s.close()
    again = TableStore(path)  # the lock is released: column family handles did not leak
    try:
        assert again.get(b"a") == b"1"
        assert again.get(b"b") is None
        assert again.offsets() == {0: 2, 1: 6}
    finally:
        again.close()


def test_wipe(path):
    s = TableStore(path)
    s.apply({b"a": b"1"}, {0: 1})
    s.close()
    TableStore.wipe(path)
    assert not path.exists()
    fresh = TableStore(path)
    try:
        assert fresh.get(b"a") is None and fresh.offsets() == {}
    finally:
        fresh.close()


def test_many_keys_and_estimates(store):
    store.apply({b"k%05d" % i: b"v%d" % i for i in range(5000)}, {0: 5000})
    assert store.get(b"k01234") == b"v1234"
    assert store.get(b"k99999") is None
    assert store.approximate_keys() > 0
    keys, size = store.stats()
    assert keys > 0 and size > 0
    assert sum(1 for _ in store.items()) == 5000


# -- BroadcastState ---------------------------------------------------------------------------

def _rules() -> BroadcastState:
    state = BroadcastState()
    state.declare("rules", bytes.decode, orjson.loads)
    return state


def test_broadcast_update_and_delete():
    state = _rules()
    assert dict(state["rules"]) == {} and state.version["rules"] == 0
    state.update("rules", [(b"max", b'{"amount": 10}'), (b"country", b'"NL"')])
    assert dict(state["rules"]) == {"max": {"amount": 10}, "country": "NL"}
    state.update("rules", [(b"max", b'{"amount": 20}'), (b"country", None), (b"gone", None)])
    assert dict(state["rules"]) == {"max": {"amount": 20}}
    assert state.version["rules"] == 2


def test_broadcast_pairs_apply_in_order():
    state = _rules()
    state.update("rules", [(b"a", b"1"), (b"a", None), (b"b", b"1"), (b"b", b"2")])
    assert dict(state["rules"]) == {"b": 2}


def test_broadcast_view_is_read_only_and_live():
    state = _rules()
    view = state["rules"]
    with pytest.raises(TypeError):
        view["x"] = 1  # type: ignore[index]
    state.update("rules", [(b"x", b"1")])
    assert view["x"] == 1  # the same view sees later updates


def test_broadcast_bad_record_is_skipped_counted_and_logged(caplog):
    state = _rules()
    with caplog.at_level(logging.WARNING, logger="processor.broadcast"):
        state.update("rules", [(b"ok", b"1"), (b"bad", b"{not json"), (b"\xff", b"1"),
                               (b"after", b"2")])
    assert dict(state["rules"]) == {"ok": 1, "after": 2}
    assert state.errors["rules"] == 2
    assert state.version["rules"] == 1
    warnings = [r for r in caplog.records if r.name == "processor.broadcast"]
    assert len(warnings) == 1  # once per 100 failures
    assert warnings[0].key == b"bad"  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="processor.broadcast"):
        state.update("rules", [(b"bad%d" % i, b"{") for i in range(150)])
    assert state.errors["rules"] == 152
    assert len([r for r in caplog.records if r.name == "processor.broadcast"]) == 1  # the 101st


def test_broadcast_unknown_name_lists_declared():
    state = _rules()
    state.declare("limits", bytes.decode, bytes.decode)
    with pytest.raises(KeyError, match=r"'nope'.*limits, rules"):
        state["nope"]
    with pytest.raises(KeyError, match="nope"):
        state.update("nope", [(b"a", b"1")])
    assert "rules" in state and "nope" not in state


def test_broadcast_snapshot():
    state = _rules()
    state.update("rules", [(b"a", b"1"), (b"b", b"{")])
    assert state.snapshot() == {"rules": {"keys": 1, "version": 1, "errors": 1,
                                          "entries": {"a": 1}}}


def test_broadcast_reload_from_store_then_follow(store):
    """The worker seeds the state with what the store holds, then applies followed chunks."""
    store.apply({b"a": b"1", b"b": b"2"}, {0: 2})
    state = _rules()
    state.update("rules", list(store.items()))
    state.update("rules", [(b"b", None)])
    assert dict(state["rules"]) == {"a": 1}
