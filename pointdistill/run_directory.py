"""Where a training run lives while it runs, and how its outputs land.

A run writes to ``out`` (a file for a teacher checkpoint, a directory for a student run). While
it runs, everything it writes lives in the work directory ``<out>.incomplete/``:

- ``lock``: held (``flock``) by the one process running it; the kernel drops it when that
  process dies, even by kill -9, so a killed run never leaves it stuck;
- ``state.pt``: the resume state after the last finished epoch (model, optimiser, schedule,
  RNG states, history, ...), replaced atomically each epoch;
- ``result``: the finished outputs, staged, then moved onto ``out`` in one rename.

So a reader of ``out`` sees a whole earlier run or a whole new one, never a mix; a run
interrupted at any moment resumes from its last finished epoch.

What happens when something is already there is the caller's choice (``existing``):
"refuse" (the default: an earlier finished or interrupted run is never replaced silently),
"resume" (continue an interrupted run, or report a finished one; start afresh if there is
none), "overwrite" (start afresh, replacing both).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Literal

import torch

from pointdistill.storage import write_bytes_atomically

EXISTING = ("refuse", "resume", "overwrite")
Existing = Literal["refuse", "resume", "overwrite"]
STATE_FORMAT = "pointdistill.train-state"
STATE_VERSION = 1


class RunDirectoryError(ValueError):
    """An output that may not be written (exists, busy, or resumed with other settings)."""


def torch_bytes(payload) -> bytes:
    """``torch.save`` to memory (then written by write_bytes_atomically, so that a full disk is
    an OSError with its errno, not torch's writer error)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree; nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def settings_differences(saved: dict, current: dict, saved_by: str, defaults: dict | None = None,
                         prefix: str = "") -> list[str]:
    """'field: saved value in <saved_by>, current value now' for every leaf that differs. A field
    absent from ``saved`` but in ``defaults`` (nested like the settings) reads as its default: the
    run was saved by a version before that setting existed, and a new setting's default is what
    the versions before it did."""
    defaults = defaults or {}
    differences = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        a, b = saved.get(key, defaults.get(key, "<absent>")), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            nested = defaults.get(key)
            differences += settings_differences(a, b, saved_by, nested if isinstance(nested, dict) else None,
                                                f"{name}.")
        elif a != b:
            differences.append(f"{name}: {a!r} in {saved_by}, {b!r} now")
    return differences


class RunDirectory:
    """The work directory of one run at ``out``; use as a context manager (it holds the lock).

    settings: everything that must be equal for a run to be resumed (plain JSON-like values);
    defaults: the default of each setting that has one, nested like ``settings``, which a run
    saved before that setting existed is taken to have used (``settings_differences``);
    after ``__enter__``, ``finished`` says whether ``out`` already holds the finished run (only
    with ``existing="resume"``) and ``state`` is the resume state (None = start from scratch).
    """

    def __init__(self, out: str | Path, existing: Existing, settings: dict, defaults: dict | None = None):
        if existing not in EXISTING:
            raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
        self.out = Path(out)
        self.work = self.out.with_name(self.out.name + ".incomplete")
        self.existing = existing
        self.settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
        self.defaults = json.loads(json.dumps(defaults or {}))
        self.finished = False
        self.state: dict | None = None
        self._lock_fd: int | None = None

    @property
    def result(self) -> Path:
        """Where the outputs are staged before ``commit`` moves them onto ``out``."""
        return self.work / "result"

    @property
    def state_path(self) -> Path:
        return self.work / "state.pt"

    def __enter__(self) -> "RunDirectory":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # retried only when another process commits or claims meanwhile
            if self._claim_new() or self._lock_existing():
                break
        else:
            raise RunDirectoryError(f"{self.work}: could not take the lock (another run keeps replacing it)")
        try:
            self._decide()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        """Drop the lock; a work directory holding nothing but the lock goes too (a run refused
        or failed before its first checkpoint leaves nothing behind)."""
        if self._lock_fd is None:
            return
        try:
            if self.work.is_dir() and [p.name for p in self.work.iterdir()] == ["lock"]:
                shutil.rmtree(self.work)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _claim_new(self) -> bool:
        """Create the work directory with its lock already held (built aside, renamed in)."""
        if self.work.exists():
            return False
        staging = self.out.with_name(f"{self.out.name}.incomplete-{uuid.uuid4().hex[:8]}")
        staging.mkdir()
        fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            os.rename(staging, self.work)  # fails if another process created it meanwhile
        except OSError:
            os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        self._lock_fd = fd
        return True

    def _lock_existing(self) -> bool:
        """Lock an existing work directory (left by an interrupted run); refuse if a live run holds it."""
        try:
            fd = os.open(self.work / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            return False  # committed or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirectoryError(f"{self.out}: another run (pid {holder}) is writing it now; "
                                    f"one run at a time per output") from None
        try:  # the lock must still be the one at the path, not a removed directory's
            same = os.stat(self.work / "lock").st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return True

    def _decide(self) -> None:
        interrupted = self.state_path.exists()
        if self.existing == "refuse":
            if interrupted:
                raise RunDirectoryError(
                    f"{self.out}: an interrupted run is at {self.work}; continue it with --resume, "
                    f"or start over with --overwrite")
            if self._out_holds_a_run():
                raise RunDirectoryError(f"{self.out} already exists; choose another output, or replace "
                                        f"it with --overwrite")
        if self.existing == "resume" and interrupted:
            self.state = self._load_state()
            for leftover in (self.result, self.work / "replaced"):  # from a kill while committing
                _remove(leftover)
            return
        self.finished = self.existing == "resume" and self._out_holds_a_run()
        self._clear_work()

    def _out_holds_a_run(self) -> bool:
        """``out`` exists and is not an empty directory (one made ready for the run)."""
        return self.out.exists() and not (self.out.is_dir() and not any(self.out.iterdir()))

    def _clear_work(self) -> None:
        for entry in self.work.iterdir():
            if entry.name != "lock":
                _remove(entry)

    def _load_state(self) -> dict:
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise RunDirectoryError(f"{self.state_path}: unreadable resume state ({type(error).__name__}: "
                                    f"{error}); start over with --overwrite") from error
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise RunDirectoryError(f"{self.state_path}: not a pointdistill resume state")
        if state.get("version") != STATE_VERSION:
            raise RunDirectoryError(f"{self.state_path}: resume state version {state.get('version')!r}, "
                                    f"this pointdistill reads {STATE_VERSION}")
        differences = settings_differences(state.get("settings", {}), self.settings, "the interrupted run",
                                           self.defaults)
        if differences:
            raise RunDirectoryError(f"cannot resume {self.out}: settings differ from the interrupted run: "
                                    + "; ".join(differences))
        return state

    def check_finished(self, saved_settings: dict) -> None:
        """Refuse to report a finished run at ``out`` as the result of other settings."""
        differences = settings_differences(saved_settings, self.settings, "that run", self.defaults)
        if differences:
            raise RunDirectoryError(f"{self.out} holds a finished run with other settings: "
                                    + "; ".join(differences) + "; choose another output, or replace it "
                                    "with --overwrite")

    def save_state(self, state: dict) -> None:
        """Replace the resume state atomically (format, version and settings are added)."""
        payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "settings": self.settings, **state}
        write_bytes_atomically(self.state_path, torch_bytes(payload))

    def commit(self) -> None:
        """Move the staged ``result`` onto ``out`` (replacing an earlier run) and remove the work
        directory. Until the rename, ``out`` holds the earlier run (or nothing)."""
        if not self.result.exists():
            raise RunDirectoryError(f"{self.result}: nothing staged to commit")
        if self.out.is_dir():
            replaced = self.work / "replaced"
            os.rename(self.out, replaced)
        os.replace(self.result, self.out)
        shutil.rmtree(self.work)
