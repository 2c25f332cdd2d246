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
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
NEVER_TRIM = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Serve every block from the heap and never trim it (glibc ``mallopt``: no mmap'd blocks,
    no trim threshold), so that what this process frees stays with it for reuse. For the whole
    process and for the rest of its life: its resident size stays at its peak instead of falling
    between steps. glibc still maps memory where a heap cannot grow, so large requests succeed as
    before. Called by the CPU training loops. Returns whether it took effect (False on a C
    library other than glibc, said in the log)."""
    if platform.libc_ver()[0] != "glibc":
        log.info("C library is not glibc: freed training activations are returned to the OS as usual")
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) & bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
