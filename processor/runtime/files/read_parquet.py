"""Parquet: decoded by pyarrow one batch of at most `chunk_rows` rows at a time, so memory is
bounded by the chunk, not the file (row groups are read as the batches need them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from processor.runtime.files.arrow_rows import ArrowRows
from processor.runtime.files.chunks import RowChunk
from processor.runtime.files.errors import FileInputError


def read_parquet(path: Path, chunk_rows: int) -> Iterator[RowChunk]:
    """The rows of one parquet file in order."""
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise FileInputError(f"cannot read {str(path)!r} as parquet: {exc}") from exc
    with file:
        convert = ArrowRows(file.schema_arrow)
        batches = file.iter_batches(batch_size=chunk_rows)
        row_no = 0
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                raise FileInputError(
                    f"cannot read {str(path)!r} as parquet after row {row_no}: {exc}") from exc
            if batch is None:
                return
            if batch.num_rows:
                yield RowChunk(path, row_no, convert.rows(batch), [])
                row_no += batch.num_rows
