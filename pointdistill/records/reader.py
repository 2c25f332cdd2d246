"""Reading records by shape: the store opened read-only, checked, and read chunk by chunk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointdistill.records.schema import (
    RecordStoreError, StoreLayout, check_chunks_present, layout_of, open_store, read_block,
)


@dataclass(frozen=True)
class Records:
    """The records of some shapes, every augmentation each (n shapes, A augmentations).

    shapes: int64 [n] (indices into the recorded training split); labels: int64 [n];
    params: float32 [n, A, 6] (pointdistill.augment: scale x, y, z then translation x, y, z);
    logits: float32 [n, A, C] and pooled: float32 [n, A, D], as recorded (float16, widened)."""

    shapes: np.ndarray
    labels: np.ndarray
    params: np.ndarray
    logits: np.ndarray
    pooled: np.ndarray


class RecordStore:
    """A record store at a local path or fsspec URL, read-only (nothing here writes to it).

    ``attrs`` are the store's self-description (teacher, dataset, augmentation policy, seed);
    ``layout`` its sizes. ``read(shapes)`` returns their records; a chunk not yet recorded,
    absent from storage, failing its checksum or holding NaN is refused, naming it."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri
        self.group = open_store(uri, storage_options)
        self.attrs: dict = self.group.attrs.asdict()
        self.layout: StoreLayout = layout_of(self.group, uri)
        self.done = self.group["done"][:].astype(bool)

    def __len__(self) -> int:
        """The number of shapes (each with ``layout.augmentations`` records)."""
        return self.layout.num_shapes

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def class_names(self) -> list[str]:
        return list(self.attrs["dataset"]["class_names"])

    def read(self, shapes) -> Records:
        """The records of ``shapes`` (an int, a slice, or a sequence of shape indices)."""
        index = np.arange(self.layout.num_shapes)[shapes]
        index = np.atleast_1d(index).astype(np.int64)
        chunks = np.unique(index // self.layout.chunk_shapes)
        not_done = [int(k) for k in chunks if not self.done[k]]
        if not_done:
            start, stop = self.layout.chunk_range(not_done[0])
            raise RecordStoreError(f"{self.uri}: chunk {not_done[0]} (shapes {start}..{stop - 1}) is not "
                                   f"recorded yet ({int(self.done.sum())}/{self.done.size} chunks done)")
        check_chunks_present(self.group, self.uri, self.layout, chunks)
        arrays = {}
        for name in ("labels", "params", "logits", "pooled"):
            blocks = {int(k): read_block(self.group, self.uri, name, self.layout, int(k)) for k in chunks}
            arrays[name] = np.stack([blocks[int(i) // self.layout.chunk_shapes][int(i) % self.layout.chunk_shapes]
                                     for i in index])
        return Records(shapes=index, labels=arrays["labels"].astype(np.int64),
                       params=arrays["params"].astype(np.float32), logits=arrays["logits"].astype(np.float32),
                       pooled=arrays["pooled"].astype(np.float32))
