"""The Zarr record store: schema, writer, replay, summary, verification, catalog."""

from pointdistill.records.schema import (
    FORMAT_NAME, FORMAT_VERSION, RecordStoreError, RecordStoreMismatch, StoreLayout, layout_of, open_store,
)
from pointdistill.records.catalog import find_store, list_catalog, register_store
from pointdistill.records.inspect import format_inspection, inspect_store
from pointdistill.records.reader import Records, RecordStore
from pointdistill.records.replay import ReplayBatch, ReplayLoader, check_store_matches
from pointdistill.records.summary import format_summary, store_summary
from pointdistill.records.verify import verify_store
from pointdistill.records.writer import (
    RecordingJob, RecordingPlan, finalize_store, prepare_store, record_chunk, record_in_process,
)

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "RecordStore", "RecordStoreError", "Records", "RecordStoreMismatch", "RecordingJob", "RecordingPlan",
    "ReplayBatch", "ReplayLoader", "StoreLayout", "check_store_matches", "finalize_store", "format_inspection", "format_summary",
    "find_store", "inspect_store", "layout_of", "list_catalog", "open_store", "prepare_store", "record_chunk", "record_in_process",
    "register_store", "store_summary", "verify_store",
]
