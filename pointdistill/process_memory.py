"""How a CPU training process keeps the memory it frees.

A training step on the CPU allocates and frees the same large activations every step ([B, N, C]
float32: 8 MB for 64 channels, 16 MB for 128 at batch 32 and 1,024 points). glibc's malloc hands
blocks that large back to the kernel when they are freed (unmapped, or trimmed from the top of
the heap), so the next step touches fresh pages and takes a page fault every 4 KiB: on ModelNet40
widths the fast student step spends about 9 % of its time there (`sign` of a 16 MB activation:
10 ms median inside a step, 2 ms with its pages kept; benchmarks/train_throughput.py measures
the step with this setting, as training runs it).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform

log = logging.getLogger(__name__)

# <malloc.h>: mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2). Blocks below it come
# from the heap and are reused; larger ones (an evaluation batch's 1 GB activations) are still
# mapped and returned whole when freed, so they do not stay resident. With no mmap at all, a
# teacher run held 9.6 GB after its first evaluations instead of about 1 GB.
MMAP_THRESHOLD_MAX = 32 * 2**20
NEVER_TRIM = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Serve blocks under 32 MB from the heap and never trim it (glibc ``mallopt``), so that the
    activations this process frees stay with it for the next step. For the whole process and for
    the rest of its life: its heap stays at its peak instead of shrinking between steps. Called
    by the CPU training loops. Returns whether it took effect (False on a C library other than
    glibc, said in the log)."""
    if platform.libc_ver()[0] != "glibc":
        log.info("C library is not glibc: freed training activations are returned to the OS as usual")
        return False
    libc = ctypes.CDLL(None)
    accepted = [libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)]
    return all(accepted)  # both applied, whichever is refused
