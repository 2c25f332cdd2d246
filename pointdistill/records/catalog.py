"""The catalog of record stores: a Parquet dataset with one file per store, so teams adding
stores never overwrite each other. Root: ``POINTDISTILL_CATALOG`` or ``store/catalog``
(a local path or an fsspec URL)."""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import warnings
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from pointdistill.records.schema import RecordStoreError, layout_of, open_store
from pointdistill.records.summary import stored_bytes
from pointdistill.parquet import parquet_rows
from pointdistill.storage import filesystem, is_url

DEFAULT_CATALOG = "store/catalog"
CATALOG_SCHEMA = pa.schema([
    ("store_uri", pa.string()), ("status", pa.string()), ("format_version", pa.int32()),
    ("teacher_model", pa.string()), ("teacher_sha256", pa.string()),
    ("dataset_name", pa.string()), ("dataset_fingerprint", pa.string()),
    ("num_shapes", pa.int64()), ("augmentations", pa.int32()), ("num_points", pa.int32()),
    ("classes", pa.list_(pa.string())), ("bytes", pa.int64()), ("created", pa.string()),
    ("creator", pa.string()), ("registered", pa.string()),
])


def catalog_root(catalog: str | None = None) -> str:
    return catalog or os.environ.get("POINTDISTILL_CATALOG") or DEFAULT_CATALOG


def _entry_path(root: str, store_uri: str) -> str:
    return root.rstrip("/") + "/" + hashlib.sha256(store_uri.encode()).hexdigest()[:24] + ".parquet"


def absolute_uri(store_uri: str) -> str:
    """The form a catalog row holds: URLs unchanged, local paths absolute (a relative path means
    nothing to another process, machine or working directory)."""
    return store_uri if is_url(store_uri) else os.path.abspath(store_uri)


def register_store(store_uri: str, catalog: str | None = None, storage_options: dict | None = None) -> dict:
    """Add (or refresh) the catalog row of the store at ``store_uri`` (local paths made
    absolute; ``memory://`` stores, which no other process can read, refused); returns the row."""
    if store_uri.startswith("memory://"):
        raise RecordStoreError(f"{store_uri}: an in-memory store cannot be catalogued (no other process can read it)")
    store_uri = absolute_uri(store_uri)
    group = open_store(store_uri, storage_options)
    attrs = group.attrs.asdict()
    layout = layout_of(group, store_uri)
    row = {
        "store_uri": store_uri, "status": attrs["status"], "format_version": attrs["format_version"],
        "teacher_model": attrs["teacher"]["model"]["name"], "teacher_sha256": attrs["teacher"]["weights_sha256"],
        "dataset_name": attrs["dataset"]["name"], "dataset_fingerprint": attrs["dataset"]["fingerprint"],
        "num_shapes": layout.num_shapes, "augmentations": layout.augmentations,
        "num_points": attrs["dataset"]["num_points"], "classes": list(attrs["dataset"]["class_names"]),
        "bytes": stored_bytes(group)["total"],
        "created": attrs["created"], "creator": f"{getpass.getuser()}@{socket.gethostname()}",
        "registered": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    root = catalog_root(catalog)
    fs, path = filesystem(_entry_path(root, store_uri))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    partial = path + ".partial"
    with fs.open(partial, "wb") as f:
        pq.write_table(pa.Table.from_pylist([row], schema=CATALOG_SCHEMA), f)
    fs.mv(partial, path)
    return row


def list_catalog(catalog: str | None = None, teacher: str | None = None, dataset: str | None = None) -> list[dict]:
    """Catalog rows, newest first. ``teacher`` matches the model name or a weights-sha256 prefix;
    ``dataset`` the dataset name or a fingerprint prefix."""
    root = catalog_root(catalog)
    fs, path = filesystem(root)
    rows = []
    for entry in sorted(fs.glob(path.rstrip("/") + "/*.parquet")):
        with fs.open(entry, "rb") as f:
            rows.extend(parquet_rows(f))
    if teacher:
        rows = [r for r in rows if r["teacher_model"] == teacher or r["teacher_sha256"].startswith(teacher)]
    if dataset:
        rows = [r for r in rows if r["dataset_name"] == dataset or r["dataset_fingerprint"].startswith(dataset)]
    return sorted(rows, key=lambda r: r["created"], reverse=True)


def find_store(teacher_sha256: str, dataset_fingerprint: str, catalog: str | None = None) -> str:
    """The URI of the newest complete store of this teacher on this dataset (prefixes allowed)
    that opens from here and whose own attributes agree with its catalog row; rows that do not
    are skipped with a warning naming why."""
    rows = [r for r in list_catalog(catalog, teacher_sha256, dataset_fingerprint) if r["status"] == "complete"]
    for row in rows:
        problem = _row_problem(row)
        if problem is None:
            return row["store_uri"]
        warnings.warn(f"catalog {catalog_root(catalog)}: skipping {row['store_uri']!r}: {problem}", stacklevel=2)
    raise RecordStoreError(f"no usable complete store in catalog {catalog_root(catalog)} for teacher "
                           f"{teacher_sha256!r} and dataset {dataset_fingerprint!r}"
                           + (f" ({len(rows)} row(s) skipped, see the warnings)" if rows else ""))


def _row_problem(row: dict) -> str | None:
    """Why a catalog row cannot be used from here, or None: its store must open, be complete and
    name the row's teacher and dataset in its own attributes."""
    uri = row["store_uri"]
    if uri.startswith("memory://"):
        return "an in-memory store (no other process can read it)"
    if not is_url(uri) and not os.path.isabs(uri):
        return "a relative path (ambiguous from another working directory)"
    try:
        group = open_store(uri)
        layout_of(group, uri)
    except RecordStoreError as error:
        return str(error)
    attrs = group.attrs.asdict()
    own = {"teacher_sha256": attrs["teacher"]["weights_sha256"], "dataset_fingerprint": attrs["dataset"]["fingerprint"],
           "status": attrs.get("status")}
    differ = [f"{k} {row[k]!r} in the catalog, {v!r} in the store" for k, v in own.items() if row[k] != v]
    return "; ".join(differ) or None
