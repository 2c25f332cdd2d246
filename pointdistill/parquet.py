"""Rows of plain values to and from Parquet (per-epoch metrics, catalog entries)."""

from __future__ import annotations

from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_bytes(rows: list[dict]) -> bytes:
    """``rows`` (dicts with the same keys) as a Parquet file's bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def parquet_rows(source: str | BinaryIO) -> list[dict]:
    """The rows of the Parquet file at ``source`` (a path or an open binary file), as dicts.

    Read on the calling thread: the files are small (a row per epoch or per store), so Arrow's
    thread pool buys nothing, and a process that exits right after a threaded read can abort in it
    ("terminate called without an active exception", apache/arrow#34314; `pointdistill store ls`
    did, 3 runs in 60)."""
    return pq.read_table(source, use_threads=False).to_pylist()
