"""Pure record logic over batches of `(key, value, timestamp, offset)` tuples; no Kafka imports."""

from processor.operators.aggregate import Aggregate, compile_aggregation, parse_field
from processor.operators.base import Batch, Operator, Record, StepFailed
from processor.operators.sink import Sink
from processor.operators.stateless import Filter, FlatMap, KeyBy, MapValue, PythonStep

__all__ = [
    "Aggregate", "Batch", "Filter", "FlatMap", "KeyBy", "MapValue", "Operator", "PythonStep",
    "Record", "Sink", "StepFailed", "compile_aggregation", "parse_field",
]
