"""Record store v1: layout, attributes and opening rules (the spec is store/README.md).

A store is one Zarr v3 group::

    params  float32 [N, A, 6]   augmentation parameters (see pointdistill.augment)
    logits  float16 [N, A, C]   teacher logits
    pooled  float16 [N, A, D]   teacher pooled (global, after max-pool) feature
    labels  int32   [N]         dataset label of each shape
    done    uint8   [K]         1 once chunk k (shapes k*S .. (k+1)*S-1) is fully written

Arrays are chunked by blocks of S shapes (all A augmentations of a shape in one chunk),
compressed with Zstd and closed by a CRC32C checksum, so a damaged chunk fails on read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import zarr
import zarr.codecs
from zarr.core.sync import sync

from pointdistill.storage import is_url, local_path, storage_options_for

FORMAT_NAME = "pointdistill.records"
FORMAT_VERSION = 1
RECORD_ARRAYS = ("params", "logits", "pooled", "labels")
# The attributes that make two recordings "the same recording": a rerun must match all of them.
IDENTITY_FIELDS = (
    "teacher.weights_sha256", "teacher.model", "dataset.fingerprint", "dataset.num_points",
    "augmentation", "augmentations_per_shape", "seed", "chunk_shapes",
)


class RecordStoreError(ValueError):
    """A record store is missing, damaged, of an unknown format, or does not match."""


class RecordStoreMismatch(RecordStoreError):
    """A rerun into an existing store was asked with another teacher, dataset or policy."""


def compressors() -> list:
    """Zstd, then a CRC32C of the compressed bytes so corruption is detected on read."""
    return [zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()]


@dataclass(frozen=True)
class StoreLayout:
    """Array shapes of one store: N shapes, A augmentations, C classes, D pooled channels,
    S shapes per chunk."""

    num_shapes: int
    augmentations: int
    num_classes: int
    pooled_dim: int
    chunk_shapes: int

    @property
    def num_chunks(self) -> int:
        return -(-self.num_shapes // self.chunk_shapes)

    def chunk_range(self, chunk_index: int) -> tuple[int, int]:
        """[start, stop) shape indices of chunk ``chunk_index``."""
        if not 0 <= chunk_index < self.num_chunks:
            raise IndexError(f"chunk {chunk_index} out of range 0..{self.num_chunks - 1}")
        start = chunk_index * self.chunk_shapes
        return start, min(start + self.chunk_shapes, self.num_shapes)

    def array_specs(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], str]]:
        """name -> (shape, chunk shape, dtype)."""
        n, a, s = self.num_shapes, self.augmentations, self.chunk_shapes
        return {
            "params": ((n, a, 6), (s, a, 6), "float32"),
            "logits": ((n, a, self.num_classes), (s, a, self.num_classes), "float16"),
            "pooled": ((n, a, self.pooled_dim), (s, a, self.pooled_dim), "float16"),
            "labels": ((n,), (s,), "int32"),
            "done": ((self.num_chunks,), (1,), "uint8"),
        }


def get_field(attrs: dict, dotted: str):
    value = attrs
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def recording_identity(attrs: dict) -> dict:
    """The identity fields of a recording (IDENTITY_FIELDS), as JSON would give them back."""
    return json.loads(json.dumps({name: get_field(attrs, name) for name in IDENTITY_FIELDS}))


def store_fingerprint(attrs: dict) -> str:
    """sha256 (hex) of the recording's identity as canonical JSON (keys sorted, no whitespace): the
    same for every store of the same recording, different when any identity field differs."""
    canonical = json.dumps(recording_identity(attrs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def open_group(uri: str, mode: str, storage_options: dict | None = None) -> zarr.Group:
    """The Zarr group at a local path or fsspec URL (``file://`` URLs are opened as local paths),
    with ``storage_options`` or else the configured ones (pointdistill.storage)."""
    uri = local_path(uri)
    options = storage_options_for(uri, storage_options)
    kwargs = {"storage_options": options} if is_url(uri) else {}
    return zarr.open_group(store=uri, mode=mode, zarr_format=3, **kwargs)


def open_store(uri: str, storage_options: dict | None = None) -> zarr.Group:
    """Open a record store read-only; refuses anything that is not a v1 record store."""
    try:
        group = open_group(uri, "r", storage_options)
    except FileNotFoundError as error:
        raise RecordStoreError(f"{uri}: no record store here") from error
    except Exception as error:
        raise RecordStoreError(f"{uri}: not a readable Zarr v3 group ({type(error).__name__}: {error})") from error
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT_NAME:
        raise RecordStoreError(f"{uri}: not a pointdistill record store (attribute format={attrs.get('format')!r})")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise RecordStoreError(
            f"{uri}: record store format version {attrs.get('format_version')!r}; "
            f"this pointdistill reads version {FORMAT_VERSION}")
    missing = []
    for name in (*RECORD_ARRAYS, "done"):
        try:
            group[name]
        except KeyError:
            missing.append(name)
        except Exception as error:  # a damaged zarr.json of the array
            raise RecordStoreError(f"{uri}: array {name}: unreadable metadata {name}/zarr.json "
                                   f"({type(error).__name__}: {error}); the store is damaged") from error
    if missing:
        raise RecordStoreError(f"{uri}: record store lacks arrays {missing}")
    return group


def layout_of(group: zarr.Group, uri: str = "") -> StoreLayout:
    """The store's layout, after checking that its attributes and every array's shape, chunking
    and dtype agree (an edited attribute or array is refused, naming it)."""
    attrs = group.attrs.asdict()
    where = uri or str(group.store_path)
    try:
        n, a, c = group["logits"].shape
        layout = StoreLayout(num_shapes=n, augmentations=a, num_classes=c, pooled_dim=group["pooled"].shape[2],
                             chunk_shapes=int(attrs["chunk_shapes"]))
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise RecordStoreError(f"{where}: damaged store metadata ({type(error).__name__}: {error})") from error
    expected_attrs = {"dataset.num_shapes": n, "augmentations_per_shape": a, "num_chunks": layout.num_chunks}
    for field, value in expected_attrs.items():
        if get_field(attrs, field) != value:
            raise RecordStoreError(f"{where}: attribute {field} is {get_field(attrs, field)!r} but the logits "
                                   f"array [N={n}, A={a}, C={c}] implies {value}; the store is damaged")
    if len(get_field(attrs, "dataset.class_names") or []) != c:
        raise RecordStoreError(f"{where}: logits have {c} classes but dataset.class_names lists "
                               f"{len(get_field(attrs, 'dataset.class_names') or [])}; the store is damaged")
    if layout.chunk_shapes < 1:
        raise RecordStoreError(f"{where}: attribute chunk_shapes is {layout.chunk_shapes}; the store is damaged")
    for name, (shape, chunks, dtype) in layout.array_specs().items():
        array = group[name]
        actual = (tuple(array.shape), tuple(array.chunks), str(array.dtype))
        if actual != (shape, chunks, dtype):
            raise RecordStoreError(
                f"{where}: array {name} is shape {list(actual[0])} chunks {list(actual[1])} {actual[2]}, but "
                f"the attributes (chunk_shapes={layout.chunk_shapes}) and logits imply shape {list(shape)} "
                f"chunks {list(chunks)} {dtype}; the store is damaged")
    return layout


def block_problem(group: zarr.Group, name: str, start: int, stop: int) -> tuple[np.ndarray | None, str | None]:
    """Read ``name[start:stop]``; (block, None), or (block or None, what is wrong with it): a
    failed checksum or codec, or NaN/inf in a float array."""
    try:
        block = group[name][start:stop]
    except Exception as error:  # checksum or codec failure: the chunk's bytes are damaged
        return None, f"unreadable ({type(error).__name__}: {error})"
    if block.dtype.kind == "f":
        bad = int(block.size - np.isfinite(block).sum())
        if bad:
            return block, f"{bad} non-finite values (NaN or inf)"
    return block, None


def read_block(group: zarr.Group, uri: str, name: str, layout: StoreLayout, chunk: int) -> np.ndarray:
    """One chunk of one record array, or a RecordStoreError naming store, array, chunk and shapes."""
    start, stop = layout.chunk_range(chunk)
    block, problem = block_problem(group, name, start, stop)
    if problem:
        raise RecordStoreError(f"{uri}: array {name}, chunk {chunk} (shapes {start}..{stop - 1}): {problem}; "
                               f"`pointdistill store verify` lists all damage")
    return block


async def _keys(iterator) -> set[str]:
    return {key async for key in iterator}


def missing_chunks(group: zarr.Group, layout: StoreLayout, chunks) -> list[tuple[str, int]]:
    """(array, chunk) for every chunk in ``chunks`` (done ones) whose object is absent from
    storage: Zarr would read it back as zeros. Record chunks are always written whole (even
    when all zero), so absence is damage."""
    missing = []
    for name in RECORD_ARRAYS:
        array = group[name]
        stored = sync(_keys(array.store_path.store.list_prefix(array.path + "/")))
        for chunk in chunks:
            coords = (int(chunk),) + (0,) * (array.ndim - 1)
            if f"{array.path}/{array.metadata.encode_chunk_key(coords)}" not in stored:
                missing.append((name, int(chunk)))
    return missing


def check_chunks_present(group: zarr.Group, uri: str, layout: StoreLayout, chunks) -> None:
    """Refuse a store in which a done chunk's data is missing (names the first few)."""
    missing = missing_chunks(group, layout, chunks)
    if missing:
        listed = ", ".join(f"{name} chunk {chunk} (shapes {layout.chunk_range(chunk)[0]}.."
                           f"{layout.chunk_range(chunk)[1] - 1})" for name, chunk in missing[:4])
        raise RecordStoreError(f"{uri}: {len(missing)} chunk(s) marked done have no data in storage: {listed}"
                               f"{' ...' if len(missing) > 4 else ''}; the store is damaged")
