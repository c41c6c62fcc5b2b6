"""RocksStore: a real RocksDB (rocksdict) directory under tmp_path."""

from __future__ import annotations

import pytest

from processor.state import RocksStore


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "topo" / "store" / "0"


@pytest.fixture
def store(path):
    s = RocksStore(path)
    yield s
    s.close()


def test_creates_directory_and_starts_empty(store, path):
    assert path.is_dir()
    assert store.get(b"missing") is None
    assert list(store.items()) == []
    assert store.changelog_offset == 0  # replay the whole changelog
    assert store.position is None  # unknown


def test_apply_puts_and_get(store):
    store.apply({b"a": b"1", b"b": b"22", b"": b"empty key"}, {})
    assert store.get(b"a") == b"1"
    assert store.get(b"b") == b"22"
    assert store.get(b"") == b"empty key"
    assert store.get(b"c") is None


def test_apply_overwrites_and_deletes_with_none(store):
    store.apply({b"a": b"1", b"b": b"2"}, {})
    store.apply({b"a": b"10", b"b": None, b"never-there": None}, {})
    assert store.get(b"a") == b"10"
    assert store.get(b"b") is None
    assert dict(store.items()) == {b"a": b"10"}


def test_meta_changelog_offset_and_position(store):
    store.apply({}, {"changelog_offset": 42, "position": 1000})
    assert store.changelog_offset == 42
    assert store.position == 1000
    assert store.meta_int("changelog_offset") == 42
    store.apply({}, {"position": 1001})
    assert (store.changelog_offset, store.position) == (42, 1001)
    assert store.meta_int("never-written") is None


def test_position_zero_is_known_not_none(store):
    store.apply({}, {"position": 0})
    assert store.position == 0


def test_data_and_meta_are_written_in_one_batch(store, path):
    store.apply({b"k": b"v1"}, {"position": 1, "changelog_offset": 1})
    store.apply({b"k": b"v2", b"j": b"w"}, {"position": 2, "changelog_offset": 3})
    # both the data and the checkpoint of the second apply are visible together
    assert (store.get(b"k"), store.get(b"j"), store.position, store.changelog_offset) == (b"v2", b"w", 2, 3)


def test_failed_apply_writes_nothing(store):
    store.apply({b"k": b"v1"}, {"position": 1})
    with pytest.raises(ValueError, match="bytes"):  # a bad value aborts the whole batch
        store.apply({b"k": b"v2", b"bad": 12345}, {"position": 2})  # type: ignore[dict-item]
    assert store.get(b"k") == b"v1"
    assert store.get(b"bad") is None
    assert store.position == 1


def test_items_returns_only_data_keys_in_order(store):
    store.apply({b"b": b"2", b"a": b"1", b"m-like": b"3", b"\x00": b"0", b"\xff": b"x"},
                {"position": 7, "changelog_offset": 9})
    items = list(store.items())
    assert items == [(b"\x00", b"0"), (b"a", b"1"), (b"b", b"2"), (b"m-like", b"3"), (b"\xff", b"x")]
    assert all(not k.startswith(b"position") and not k.startswith(b"changelog") for k, _ in items)


def test_data_keys_do_not_collide_with_meta_names(store):
    store.apply({b"position": b"data"}, {"position": 5})
    assert store.get(b"position") == b"data"
    assert store.position == 5


def test_reopen_after_close_keeps_data_and_meta(path):
    first = RocksStore(path)
    first.apply({b"a": b"1", b"gone": b"x"}, {"position": 3, "changelog_offset": 8})
    first.apply({b"gone": None}, {})
    first.close()

    again = RocksStore(path)
    try:
        assert dict(again.items()) == {b"a": b"1"}
        assert (again.position, again.changelog_offset) == (3, 8)
        again.apply({b"b": b"2"}, {"position": 4})
    finally:
        again.close()

    reader = RocksStore(path, read_only=True)
    try:
        assert dict(reader.items()) == {b"a": b"1", b"b": b"2"}
        assert reader.position == 4
    finally:
        reader.close()


def test_wipe_removes_the_directory(path):
    s = RocksStore(path)
    s.apply({b"a": b"1"}, {"position": 1})
    s.close()
    RocksStore.wipe(path)
    assert not path.exists()
    RocksStore.wipe(path)  # wiping a missing directory is fine
    fresh = RocksStore(path)
    try:
        assert list(fresh.items()) == []
        assert fresh.position is None
    finally:
        fresh.close()


def test_many_keys(store):
    writes = {f"key-{i:05d}".encode(): str(i).encode() for i in range(2000)}
    store.apply(writes, {"position": 2000})
    assert dict(store.items()) == writes
    store.apply({k: None for k in list(writes)[::2]}, {})
    assert len(list(store.items())) == 1000
