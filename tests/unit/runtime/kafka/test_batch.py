"""Grouping a consumer batch by partition (runtime/kafka/batch.py): order kept, errors handed over."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from processor.runtime.kafka.batch import by_partition


class _Msg:
    def __init__(self, topic: str, partition: int, offset: int, err: KafkaError | None = None):
        self._t, self._p, self._o, self._err = topic, partition, offset, err

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def error(self) -> KafkaError | None:
        return self._err


def test_records_grouped_in_consumed_order_errors_handed_over():
    eof = KafkaError(KafkaError._PARTITION_EOF)
    msgs = [_Msg("a", 0, 1), _Msg("b", 0, 7), _Msg("a", 1, 3), _Msg("a", 0, 2),
            _Msg("a", 1, 4, eof), _Msg("b", 0, 8)]
    errors: list[tuple[Any, KafkaError]] = []
    grouped = by_partition(msgs, lambda m, err: errors.append((m, err)))
    assert list(grouped) == [("a", 0), ("b", 0), ("a", 1)]
    assert {tp: [m.offset() for m in ms] for tp, ms in grouped.items()} == {
        ("a", 0): [1, 2], ("b", 0): [7, 8], ("a", 1): [3]}
    assert [(m.offset(), err.code()) for m, err in errors] == [(4, KafkaError._PARTITION_EOF)]


def test_an_error_handler_may_stop_the_batch():
    def fail(m: Any, err: KafkaError) -> None:
        raise RuntimeError(err.str())

    with pytest.raises(RuntimeError):
        by_partition([_Msg("a", 0, 1, KafkaError(KafkaError._ALL_BROKERS_DOWN))], fail)
