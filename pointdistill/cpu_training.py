"""Process settings for training on the CPU, applied once by both training loops (train.py,
distill.py) and by the throughput benchmark: freed memory kept (pointdistill.process_memory) and
denormal floats flushed to zero."""

from __future__ import annotations

import functools
import logging

import torch

from pointdistill.binary.popcount import available_paths, kernels
from pointdistill.process_memory import keep_freed_memory

log = logging.getLogger(__name__)


@functools.cache
def flush_denormals() -> bool:
    """Treat denormal float32 inputs and results as zero (x86 FTZ and DAZ, AArch64 FZ) on this
    thread and on every thread of torch's OpenMP pool, for the rest of the process.

    Under weight decay the weights of dead ReLU channels shrink towards zero and turn denormal
    after tens of epochs, and arithmetic on denormals is slow: a ModelNet40 PointNet teacher's
    epoch went from 52 s to about 200 s by epoch 48 (2,137 of its widest layer's 131,072 weights
    were denormal), nearly all of it in MKL's sgemm. Returns whether this CPU supports it."""
    supported = torch.set_flush_denormal(True)
    if supported and available_paths():  # the kernels' OpenMP team is torch's: set it on each thread
        kernels().flush_denormals(torch.get_num_threads())
    if not supported:
        log.info("this CPU cannot flush denormal floats to zero: a long run may slow down as weights decay")
    return supported


def prepare_cpu_training() -> None:
    """Everything a CPU training process sets once: freed memory kept, denormals flushed."""
    keep_freed_memory()
    flush_denormals()
