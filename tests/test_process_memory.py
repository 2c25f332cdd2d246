"""The CPU training loops keep the memory they free (pointdistill.process_memory)."""

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
