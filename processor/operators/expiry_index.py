"""Which keys of a join's state expire next: key bytes -> earliest expiry, in memory.

An interval join drops a key's records and a reconcile reports a key's group when the watermark
passes their expiry. Keeping every key's earliest expiry here replaces event-time timers stored
per record: a record costs a dict update, a watermark check costs a look at the smallest
expiry, and the due keys come out in (expiry, key bytes) order — the order stored timers fired
in. The heap holds distinct expiries (ints compare fast), each with the keys due then; an entry
whose key has moved on to another expiry since is stale and skipped. The owner rebuilds the
index from its store (one scan) after a bind or a discard: the store is the truth.
"""

from __future__ import annotations

from heapq import heappop, heappush

NEVER = 1 << 64  # due() of an empty index: later than any watermark


class ExpiryIndex:
    def __init__(self) -> None:
        self.next: dict[bytes, int] = {}  # every key with something pending -> its earliest expiry
        self._heap: list[int] = []
        self._due: dict[int, list[bytes]] = {}
        self._draining: list[bytes] = []  # the keys of the expiry being handed out, last first
        self._draining_at = NEVER

    def due(self) -> int:
        """The earliest expiry still to hand out (NEVER if none)."""
        if self._draining:
            return self._draining_at
        return self._heap[0] if self._heap else NEVER

    def set(self, kb: bytes, expiry: int) -> None:
        """Key `kb`'s earliest expiry is now `expiry`."""
        self.next[kb] = expiry
        keys = self._due.get(expiry)
        if keys is None:
            self._due[expiry] = [kb]
            heappush(self._heap, expiry)
        else:
            keys.append(kb)

    def lower(self, kb: bytes, expiry: int) -> None:
        """Key `kb` has something expiring at `expiry` too."""
        if expiry < self.next.get(kb, expiry + 1):
            self.set(kb, expiry)

    def remove(self, kb: bytes) -> None:
        """Key `kb` has nothing pending any more."""
        self.next.pop(kb, None)

    def pop(self, limit: int) -> tuple[int, bytes] | None:
        """The next (expiry, key) with expiry <= limit, or None. The key stays in `next` at that
        expiry: the caller then calls set() (its next expiry, later) or remove()."""
        nxt = self.next
        while True:
            draining = self._draining
            while draining:
                kb = draining.pop()
                if nxt.get(kb) == self._draining_at:
                    return self._draining_at, kb
            heap = self._heap
            if not heap or heap[0] > limit:
                self._draining_at = NEVER
                return None
            expiry = heappop(heap)
            keys = self._due.pop(expiry)
            if len(keys) > 1:
                keys.sort(reverse=True)
            self._draining, self._draining_at = keys, expiry
