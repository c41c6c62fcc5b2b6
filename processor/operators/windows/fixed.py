"""Tumbling and hopping windows: fixed [start, start + size) windows aligned to `advance`.

Each (window, key) is one store entry `W <end> <start> <key> -> accumulator`, cached in
`buckets[end][key bytes] = [acc, key, stored, dirty]`. `stored` is 1 once the window is in the
store or in a flushed write (closing it must then delete it), 0 before, 2 once closed. Tumbling
(advance == size) has its own loop: it is the hot path, one dict lookup and one generated
update per record.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.operators.base import Batch, KeyFamilyError, StoreKeys
from processor.operators.windows.base import MAX_END, EndIndexed, merge_max_end
from processor.serde.formats import compact_json
from processor.state.keys import pack_ts, unpack_ts

_NEW, _STORED, _CLOSED = 0, 1, 2


def record_key(store_key: bytes) -> bytes | None:
    """The key of a `W <end> <start> <key>` entry; None for `M` (bookkeeping)."""
    if store_key[:1] == b"W" and len(store_key) >= 17:
        return store_key[17:]
    if store_key == MAX_END:
        return None
    raise KeyFamilyError(f"{store_key[:1]!r} is no family of a tumbling or hopping window store")


STORE_KEYS = StoreKeys("W<end><start><key>, M", record_key, merge_max_end)


class FixedWindows(EndIndexed):
    """Tumbling (advance == size) or hopping windows."""

    prefix, prefix_end = b"W", b"X"

    def __init__(self, *args: Any, size: int, advance: int, **kwargs: Any) -> None:
        self.size = size
        self.advance = advance
        super().__init__(*args, **kwargs)

    def _cached(self) -> int:
        return sum(map(len, self.buckets.values()))

    def _load(self, end: int, kb: bytes, key: Any) -> list[Any]:
        if self.so_next <= end <= self.so_max:  # the store may hold it (restore, cache trim)
            raw = self.store.get(b"W" + pack_ts(end) + pack_ts(end - self.size) + kb)
            if raw is not None:
                return [orjson.loads(raw), key, _STORED, False]
        return [self.fresh(), key, _NEW, False]

    def read(self, store: Any, kb: bytes) -> list[dict[str, Any]]:
        """The key's open windows as committed (queryable state): a scan of the open windows,
        which is all the store holds."""
        out = []
        for sk, raw in store.range(b"W", b"X"):
            if sk[17:] == kb:
                out.append({"window_start": unpack_ts(sk[9:17]), "window_end": unpack_ts(sk[1:9]),
                            **self.result(orjson.loads(raw))})
        return out

    def process(self, batch: Batch) -> Batch:
        if not batch:
            return []
        if self.advance == self.size:
            return self._tumbling(batch)
        return self._hopping(batch)

    def _tumbling(self, batch: Batch) -> Batch:
        wms = self.clock.watermarks_for(batch)
        out: Batch = []
        lateness, size, skip, enc = self.lateness, self.size, self.skip_below, self.key_encode
        update, result, final = self.update, self.result, self.final
        buckets, dirty, late = self.buckets, self.dirty, self.late
        next_close = self.next_close
        record = None
        try:
            for record, w in zip(batch, wms, strict=True):
                if w >= next_close:
                    self._close(w - lateness, record[3] - 1, out)
                    next_close = self.next_close
                k, v, t, o = record
                if v is None or o < skip:
                    continue
                end = t - t % size + size
                if end + lateness <= w:
                    late.append((record, end - size, end, w))
                    self.late_count += 1
                    continue
                kb = enc(k)
                if kb is None:
                    self._no_key()
                bucket = buckets.get(end)
                if bucket is None:
                    bucket = self._bucket(end)
                    next_close = self.next_close
                e = bucket.get(kb)
                if e is None:  # cached only once updated: a failing record leaves no entry
                    e = self._load(end, kb, k)
                    update(e[0], k, v, t)
                    bucket[kb] = e
                else:
                    update(e[0], k, v, t)
                if not e[3]:
                    e[3] = True
                    dirty.append((end, kb, e))
                if not final:
                    out.append((k, {"window_start": end - size, "window_end": end, **result(e[0])},
                                end - 1, o))
        except Exception as exc:
            raise self._failed(record, exc, batch=batch, out=out) from exc
        return out

    def _hopping(self, batch: Batch) -> Batch:
        wms = self.clock.watermarks_for(batch)
        out: Batch = []
        lateness, size, adv, skip = self.lateness, self.size, self.advance, self.skip_below
        enc, update, result, final = self.key_encode, self.update, self.result, self.final
        buckets, dirty, late = self.buckets, self.dirty, self.late
        record = None
        try:
            for record, w in zip(batch, wms, strict=True):
                if w >= self.next_close:
                    self._close(w - lateness, record[3] - 1, out)
                k, v, t, o = record
                if v is None or o < skip:
                    continue
                last = t - t % adv  # the latest window containing t
                if last + size + lateness <= w:
                    late.append((record, last, last + size, w))
                    self.late_count += 1
                    continue
                kb = enc(k)
                if kb is None:
                    self._no_key()
                first = -((size - 1 - t) // adv) * adv  # the earliest: ceil((t - size + 1) / adv)
                for start in range(first, last + 1, adv):
                    end = start + size
                    if end + lateness <= w:
                        continue  # closed; a later window of the record is open
                    bucket = buckets.get(end)
                    if bucket is None:
                        bucket = self._bucket(end)
                    e = bucket.get(kb)
                    if e is None:
                        e = self._load(end, kb, k)
                        update(e[0], k, v, t)
                        bucket[kb] = e
                    else:
                        update(e[0], k, v, t)
                    if not e[3]:
                        e[3] = True
                        dirty.append((end, kb, e))
                    if not final:
                        out.append((k, {"window_start": start, "window_end": end, **result(e[0])},
                                    end - 1, o))
        except Exception as exc:
            raise self._failed(record, exc, batch=batch, out=out) from exc
        return out

    def _close(self, bound: int, offset: int, out: Batch) -> None:
        popped, stored = self._due(bound)
        size, writes = self.size, self.writes
        closing = []
        for end, bucket in popped.items():
            for kb, e in bucket.items():
                if e[2] == _STORED:
                    writes[b"W" + pack_ts(end) + pack_ts(end - size) + kb] = None
                e[2] = _CLOSED
                closing.append((end, end - size, kb, e[1], e[0]))
        for end, skey, raw in stored:
            kb = skey[17:]
            bucket = popped.get(end)
            if bucket is not None and kb in bucket:
                continue  # the cached copy is newer
            writes[skey] = None
            closing.append((end, end - size, kb, None, orjson.loads(raw)))
        self._emit_closed(closing, offset, out)

    def flush(self) -> tuple[Batch, dict[bytes, bytes | None]]:
        writes, self.writes = self.writes, {}
        size = self.size
        mx = self.max_persisted
        for end, kb, e in self.dirty:
            e[3] = False
            if e[2] == _CLOSED:
                continue
            writes[b"W" + pack_ts(end) + pack_ts(end - size) + kb] = compact_json(e[0])
            e[2] = _STORED
            if end > mx:
                mx = end
        self.dirty = []
        self._persisted_max(writes, mx)
        return [], writes
