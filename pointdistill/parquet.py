"""Rows of plain values to and from Parquet (per-epoch metrics, catalog entries)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_bytes(rows: list[dict]) -> bytes:
    """``rows`` (dicts with the same keys) as a Parquet file's bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def parquet_rows(source: str | os.PathLike | BinaryIO) -> list[dict]:
    """The rows of the Parquet file at ``source`` (a local path or an open binary file), as dicts.

    Parsed from memory on the calling thread, where no Arrow thread starts: the files are small (a
    row per epoch or per store), and a process that exits while Arrow's threads live can abort in
    their teardown ("terminate called without an active exception", apache/arrow#34314;
    `pointdistill store ls` did, once in CI with pq.read_table(use_threads=False), which still
    starts two threads on its first read)."""
    data = source.read() if hasattr(source, "read") else Path(source).read_bytes()
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False).to_pylist()
