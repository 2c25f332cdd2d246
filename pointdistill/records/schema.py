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

from dataclasses import dataclass

import zarr
import zarr.codecs

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
    missing = [name for name in (*RECORD_ARRAYS, "done") if name not in group]
    if missing:
        raise RecordStoreError(f"{uri}: record store lacks arrays {missing}")
    return group


def layout_of(group: zarr.Group) -> StoreLayout:
    attrs = group.attrs.asdict()
    n, a, c = group["logits"].shape
    return StoreLayout(num_shapes=n, augmentations=a, num_classes=c,
                       pooled_dim=group["pooled"].shape[2], chunk_shapes=attrs["chunk_shapes"])
