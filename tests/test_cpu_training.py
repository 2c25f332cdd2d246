"""CPU training processes keep the memory they free and flush denormals (pointdistill.cpu_training)."""

import platform
import subprocess
import sys

import pytest

KEEP = """
from pointdistill.process_memory import keep_freed_memory
print(keep_freed_memory(), keep_freed_memory())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt")
def test_glibc_takes_both_settings_once_per_process():
    # in a child process: the setting is for a process's whole life, and pytest's should stay as it is
    result = subprocess.run([sys.executable, "-c", KEEP], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


FLUSH = """
import torch
torch.set_num_threads(2)
tiny = torch.full((1 << 20,), 1e-39)  # denormal float32, a multi-threaded op's worth
before = bool((tiny * 1.0 != 0).all()) and bool((tiny[:64, None] * tiny[None, :64] == 0).all())
warm = torch.randn(512, 512) @ torch.randn(512, 512)  # torch's thread pool exists before the flag is set
from pointdistill.cpu_training import flush_denormals
supported = flush_denormals()
a = torch.full((256, 256), 1e-20)
after = bool((tiny * 1.0 == 0).all()) and bool(((a @ a) == 0).all())  # 1e-40 products: flushed on every thread
print(supported, before, after)
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"),
                    reason="flushing is set for x86-64 and AArch64")
def test_denormals_are_flushed_on_every_thread_of_the_pool():
    result = subprocess.run([sys.executable, "-c", FLUSH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]
