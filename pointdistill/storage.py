"""Where files live: local paths and fsspec URLs, with the storage options (endpoint,
credentials, ...) that a URL needs taken from configuration, not from every call site.

Storage options come from, first match wins:

1. ``POINTDISTILL_STORAGE_OPTIONS``: JSON, mapping URL prefixes to fsspec options;
2. the JSON file named by ``POINTDISTILL_STORAGE_CONFIG``, else
   ``~/.config/pointdistill/storage.json``, with the same mapping.

Within one mapping the longest matching prefix wins, so ``"s3://"`` can give defaults for every
bucket and ``"s3://team-a/"`` another endpoint or key for one. Example::

    {"s3://": {"endpoint_url": "http://127.0.0.1:8333", "key": "...", "secret": "..."}}

Options explicitly passed by a caller replace the configured ones. Being environment-based, the
configuration reaches Dask workers and Prefect flow-run processes started from this environment.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

OPTIONS_ENV = "POINTDISTILL_STORAGE_OPTIONS"
CONFIG_ENV = "POINTDISTILL_STORAGE_CONFIG"
DEFAULT_CONFIG = Path("~/.config/pointdistill/storage.json")


class StorageConfigError(ValueError):
    """The storage options configuration cannot be read."""


def is_url(location: str) -> bool:
    """Whether ``location`` names a protocol (``s3://...``) rather than a local path."""
    return "://" in str(location)


def local_path(location: str) -> str:
    """``file://`` URLs as plain local paths; anything else unchanged."""
    location = str(location)
    return location.removeprefix("file://") if location.startswith("file://") else location


def _mapping(text: str, source: str) -> dict[str, dict]:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise StorageConfigError(f"{source}: not valid JSON ({error})") from error
    if not isinstance(mapping, dict) or not all(isinstance(v, dict) for v in mapping.values()):
        raise StorageConfigError(f"{source}: expected a JSON object mapping URL prefixes to option objects")
    return mapping


def configured_mappings() -> list[tuple[str, dict[str, dict]]]:
    """(source, mapping) pairs in priority order: the environment variable, then the file."""
    found = []
    if os.environ.get(OPTIONS_ENV):
        found.append((OPTIONS_ENV, _mapping(os.environ[OPTIONS_ENV], f"${OPTIONS_ENV}")))
    config = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()
    if config.is_file():
        found.append((str(config), _mapping(config.read_text(), str(config))))
    elif os.environ.get(CONFIG_ENV):
        raise StorageConfigError(f"{config}: storage config file named by ${CONFIG_ENV} does not exist")
    return found


def storage_options_for(location: str, explicit: dict | None = None) -> dict:
    """The fsspec storage options for ``location`` (empty for local paths)."""
    if explicit is not None:
        return dict(explicit)
    location = str(location)
    if not is_url(location) or location.startswith("file://"):
        return {}
    for _, mapping in configured_mappings():
        matches = [prefix for prefix in mapping if location.startswith(prefix)]
        if matches:
            return dict(mapping[max(matches, key=len)])
    return {}


def filesystem(location: str, explicit: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or URL, with its configured options."""
    location = local_path(location)
    return fsspec.core.url_to_fs(location, **storage_options_for(location, explicit))


def open_file(location: str, mode: str = "rb", explicit: dict | None = None):
    """Open one file at a local path or URL (a context manager, like ``open``)."""
    location = local_path(location)
    return fsspec.open(location, mode, **storage_options_for(location, explicit))


def write_private_copy(path: str | Path, data: bytes) -> Path:
    """``data`` in a new file beside ``path`` with a name of its own, flushed to disk (fsync);
    its path. The caller moves it into place (rename, link) or removes it; should the write
    fail, it is removed here and the error raised."""
    path = Path(path)
    private = path.with_name(f"{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(private, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        private.unlink(missing_ok=True)
        raise
    return private


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(OSError):
    """Writing a file ran out of space; the partial file was removed, earlier files are intact."""


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a partial file, fsync, rename onto ``path``: a reader never sees half a
    file. A full disk raises DiskFullError naming ``path``, the partial file removed and
    ``path`` unchanged."""
    path = Path(path)
    partial = None
    try:
        partial = write_private_copy(path, data)
        os.replace(partial, path)
    except BaseException as error:
        if partial is not None:
            partial.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            raise DiskFullError(error.errno, f"disk full while writing {path} (nothing was replaced; "
                                             f"free space and run again)") from error
        raise


def create_exclusively(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create the file ``path`` holding ``data`` unless it exists; whether this call created it.

    No reader ever sees the file empty or partial: on local disk the bytes are written to a
    private file first and hard-linked into place (link fails if the name exists); elsewhere the
    filesystem's exclusive create (a conditional put on object storage) sends them in one piece.
    """
    if isinstance(fs, LocalFileSystem):
        private = write_private_copy(path, data)
        try:
            os.link(private, path)
            return True
        except FileExistsError:
            return False
        finally:
            private.unlink(missing_ok=True)
    try:
        with fs.open(path, "xb") as f:
            f.write(data)
        return True
    except FileExistsError:
        return False
