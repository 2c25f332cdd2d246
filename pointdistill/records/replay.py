"""Replaying a record store: rebuild each augmented cloud from the dataset and the recorded
parameters, and serve it with the teacher's recorded outputs. Never loads the teacher and
never writes to the store.

Each epoch, every shape contributes one of its A recorded augmentations (seeded choice).
Small stores are loaded into memory once (about 200 MB for ModelNet40 x 10 with D = 1024);
bigger ones are streamed a chunk at a time through a shuffle buffer, read ahead by a thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pointdistill.augment import apply
from pointdistill.data import PointCloudSet
from pointdistill.records.schema import (
    RecordStoreError, StoreLayout, check_chunks_present, layout_of, open_store, read_block,
)

REPLAYED_ARRAYS = ("params", "logits", "pooled")


@dataclass
class ReplayBatch:
    """points float32 [B, P, 3] (rebuilt inputs); labels int64 [B]; teacher_logits float32 [B, C];
    teacher_pooled float32 [B, D]; shape_index, augmentation_index int64 [B] (the record slot)."""

    points: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor
    teacher_pooled: torch.Tensor
    shape_index: torch.Tensor
    augmentation_index: torch.Tensor

    def pin_memory(self) -> "ReplayBatch":
        return ReplayBatch(*(t.pin_memory() for t in vars(self).values()))


def check_store_matches(attrs: dict, dataset: PointCloudSet, uri: str) -> None:
    """Refuse a store recorded on other data than ``dataset`` (names what differs)."""
    recorded = attrs["dataset"]
    problems = []
    if list(recorded["class_names"]) != list(dataset.class_names):
        problems.append(f"class names differ (store {recorded['class_names'][:4]}..., dataset "
                        f"{list(dataset.class_names[:4])}...)")
    if recorded["num_points"] != dataset.num_points:
        problems.append(f"points per shape: store {recorded['num_points']}, dataset {dataset.num_points}")
    if recorded["num_shapes"] != len(dataset):
        problems.append(f"shapes: store {recorded['num_shapes']}, dataset {len(dataset)}")
    if not problems and recorded["fingerprint"] != dataset.fingerprint():
        problems.append(f"dataset fingerprint: store {recorded['fingerprint'][:12]}..., "
                        f"dataset {dataset.fingerprint()[:12]}...")
    if problems:
        raise RecordStoreError(f"{uri} was not recorded on {dataset.source}: " + "; ".join(problems))


class ReplayLoader:
    """Batches of replayed records for training, one epoch at a time.

    store: record store path/URL; dataset: the training split it was recorded on (checked by
    fingerprint, classes and point count). ``use_completed_part`` allows an incomplete store
    (only finished chunks are used). ``held_out``: shape indices never served (a validation
    split). ``in_memory``: True, False, or None = load when the record arrays take at most
    ``memory_limit_bytes``.
    """

    def __init__(self, store: str, dataset: PointCloudSet, batch_size: int, seed: int = 0,
                 use_completed_part: bool = False, in_memory: bool | None = None,
                 memory_limit_bytes: int = 2 << 30, storage_options: dict | None = None,
                 drop_last: bool = True, held_out: np.ndarray | None = None):
        self.uri = store
        self.group = open_store(store, storage_options)
        self.attrs = self.group.attrs.asdict()
        check_store_matches(self.attrs, dataset, store)
        self.layout: StoreLayout = layout_of(self.group, store)
        done = self.group["done"][:].astype(bool)
        if not done.all() and not use_completed_part:
            raise RecordStoreError(
                f"{store} is incomplete ({int(done.sum())}/{done.size} chunks done); finish it with "
                f"record-teacher, or allow training on the completed part")
        if not done.any():
            raise RecordStoreError(f"{store} has no completed chunk")
        self.chunks = np.flatnonzero(done)
        check_chunks_present(self.group, store, self.layout, self.chunks)
        self.served = np.ones(self.layout.num_shapes, dtype=bool)  # [N]: False for held-out shapes
        if held_out is not None:
            self.served[held_out] = False
        self.shapes = np.concatenate([np.arange(*self.layout.chunk_range(int(k))) for k in self.chunks])
        self.shapes = self.shapes[self.served[self.shapes]]
        self.dataset = dataset
        self.points = torch.from_numpy(dataset.points)
        self.labels = torch.from_numpy(dataset.labels)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        l = self.layout
        record_bytes = l.num_shapes * l.augmentations * (6 * 4 + (l.num_classes + l.pooled_dim) * 2)
        self.in_memory = record_bytes <= memory_limit_bytes if in_memory is None else in_memory
        self.arrays = None
        if self.in_memory:  # read chunk by chunk, so that damage is named (and refused) where it is
            self.arrays = {name: np.zeros(shape, dtype) for name, (shape, _, dtype) in l.array_specs().items()
                           if name in REPLAYED_ARRAYS}
            for chunk in self.chunks:
                start, stop = l.chunk_range(int(chunk))
                for name, array in self.arrays.items():
                    array[start:stop] = read_block(self.group, store, name, l, int(chunk))

    def __len__(self) -> int:
        n = self.shapes.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _augmentation_choice(self, epoch: int) -> np.ndarray:
        """int64 [N]: the augmentation of every shape in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, 0])
        return rng.integers(0, self.layout.augmentations, size=self.layout.num_shapes)

    def _blocks(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """One chunk at a time, chunks in shuffled order: its served shape indices [S] ("shape")
        and their chosen records ("params", "logits", "pooled", "augmentation")."""
        rng = np.random.default_rng([self.seed, epoch, 1])
        choice = self._augmentation_choice(epoch)
        for chunk in rng.permutation(self.chunks):
            start, stop = self.layout.chunk_range(int(chunk))
            local = np.flatnonzero(self.served[start:stop])
            shapes = start + local
            if self.arrays is not None:
                block = {k: v[start:stop] for k, v in self.arrays.items()}
            else:
                block = {k: read_block(self.group, self.uri, k, self.layout, int(chunk)) for k in REPLAYED_ARRAYS}
            records = {k: v[local, choice[shapes]] for k, v in block.items()}
            yield {**records, "shape": shapes, "augmentation": choice[shapes]}

    def _read_ahead(self, blocks: Iterator, depth: int = 2) -> Iterator:
        """Iterate ``blocks`` produced by a background thread, ``depth`` blocks ahead."""
        buffer: queue.Queue = queue.Queue(maxsize=depth)
        done = object()

        def produce():
            try:
                for item in blocks:
                    buffer.put(item)
            except BaseException as error:  # surfaced in the consumer
                buffer.put(error)
            buffer.put(done)

        threading.Thread(target=produce, daemon=True).start()
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item

    def epoch(self, epoch: int, shuffle_blocks: int = 8) -> Iterator[ReplayBatch]:
        """The batches of one epoch: every (completed) shape once, with its chosen augmentation.

        In memory: one global shuffle. Streaming: chunks in random order, mixed in a shuffle
        buffer of ``shuffle_blocks`` chunks.
        """
        rng = np.random.default_rng([self.seed, epoch, 2])
        blocks = self._blocks(epoch) if self.in_memory else self._read_ahead(self._blocks(epoch))
        group = shuffle_blocks if not self.in_memory else len(self.chunks)
        pending: list[dict[str, np.ndarray]] = []
        for block in blocks:
            pending.append(block)
            if len(pending) >= group:
                yield from self._batches(pending, rng, final=False)
        yield from self._batches(pending, rng, final=True)

    def _batches(self, pending: list[dict], rng, final: bool) -> Iterator[ReplayBatch]:
        """Shuffle the ``pending`` blocks together and batch them; unless ``final``, the
        remainder smaller than a batch stays in ``pending`` for the next shuffle buffer."""
        if not pending:
            return
        records = {k: np.concatenate([block[k] for block in pending]) for k in pending[0]}
        pending.clear()
        order = rng.permutation(records["shape"].size)
        full = order.size - order.size % self.batch_size
        for start in range(0, full, self.batch_size):
            yield self._batch(records, order[start:start + self.batch_size])
        rest = order[full:]
        if rest.size and final and not self.drop_last:
            yield self._batch(records, rest)
        elif rest.size and not final:
            pending.append({k: v[rest] for k, v in records.items()})

    def _batch(self, records: dict, pick: np.ndarray) -> ReplayBatch:
        index = torch.from_numpy(records["shape"][pick])
        params = torch.from_numpy(np.ascontiguousarray(records["params"][pick]))
        return ReplayBatch(
            points=apply(self.points[index], params),
            labels=self.labels[index],
            teacher_logits=torch.from_numpy(records["logits"][pick].astype(np.float32)),
            teacher_pooled=torch.from_numpy(records["pooled"][pick].astype(np.float32)),
            shape_index=index,
            augmentation_index=torch.from_numpy(records["augmentation"][pick]),
        )
