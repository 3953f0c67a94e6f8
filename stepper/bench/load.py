"""A controlled background load for `stepper bench --load N`: N busy-looping processes.

A placement figure means little unless the machine's other work is known: on an idle
machine the scheduler may wake a tracee on the idle CPU (a cross-CPU hit), on a busy one it
keeps tracer and tracee together. The load makes the busy case reproducible.

Each loader is a forked child that spins in a tight loop, unpinned (the CPUs this process
was allowed when the bench started, not a placement's single CPU). They are killed when the
block ends, however it ends (exception, Ctrl-C), and each asks the kernel to kill it if the
bench itself dies first (PR_SET_PDEATHSIG), so none outlives the bench.
"""

from __future__ import annotations

import ctypes
import os
import signal
from contextlib import contextmanager
from typing import Iterator

_PR_SET_PDEATHSIG = 1


@contextmanager
def busy(n: int) -> Iterator[list[int]]:
    """Run the block with `n` busy-looping child processes; yields their pids."""
    pids: list[int] = []
    try:
        for _ in range(n):
            pids.append(_spawn())
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _spawn() -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: never returns into the bench's code
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the bench's to handle
        if os.getppid() != parent:  # the bench died before the prctl
            os._exit(0)
        while True:
            pass
    finally:
        os._exit(0)
