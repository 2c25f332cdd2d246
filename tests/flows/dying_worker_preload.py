"""Dask worker preload for the cluster test: the first worker to write a chunk's pooled array
SIGKILLs itself there, once per marker file ($POINTDISTILL_TEST_KILL_MARKER), leaving that chunk
with params and logits written but not marked done — a worker dying mid-chunk."""

import os
import signal

from pointdistill.records import writer

MARKER = os.environ["POINTDISTILL_TEST_KILL_MARKER"]
# Dask imports a preload again in the same process: wrap the original opener, once.
_open_group = getattr(writer, "_original_open_group", writer.open_group)
writer._original_open_group = _open_group


class _DyingGroup:
    def __init__(self, group):
        self.group = group

    def __getitem__(self, name):
        if name == "pooled":
            try:
                fd = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return self.group[name]
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return self.group[name]


def _open_group_then_die(uri, mode, storage_options=None):
    group = _open_group(uri, mode, storage_options)
    return _DyingGroup(group) if mode == "r+" else group


writer.open_group = _open_group_then_die
