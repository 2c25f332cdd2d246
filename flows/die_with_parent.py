"""Start a Python program that dies with the process that started it (Linux):

    python -m flows.die_with_parent PARENT_PID -m some.module args...

sets PR_SET_PDEATHSIG (SIGTERM when the parent exits, even by kill -9), exits at once if
PARENT_PID is already gone, then execs ``python args...`` (the setting survives exec). Used for
the temporary Prefect server, so that a killed ``pointdistill`` never leaves one behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = int(sys.argv[1])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the setting took effect
        sys.exit(0)
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])


if __name__ == "__main__":
    main()
