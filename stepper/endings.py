"""How a `stepper probe` run ends: signals to stepper while the program it started runs, and
stepper's own end, which is the program's.

The rule (README "How a run ends") is that the user never loses a run: the report is written
however it ends, and stepper then ends the way the program did, so that a shell, `make` or a
supervisor sees the program's own exit status.

- Ctrl-C (SIGINT) and Ctrl-\\ (SIGQUIT) come from the terminal, which sends them to the whole
  foreground process group: the program gets its own copy. stepper does nothing with its copy
  and keeps tracing; the program decides what the signal means (by default it dies of it, and
  stepper then writes the report and dies of the same signal). This is what `perf stat`
  does, and what strace does when its output goes to a file.
- SIGTERM is usually sent to stepper alone (`kill PID`): stepper passes it on to the program
  and keeps tracing until the program has ended, as `timeout` and strace do with the program
  they started.
- With `--pid` the program is not stepper's: Ctrl-C and SIGTERM let it go on untraced (the
  engine's own handling, see stepper.session), and the report is written.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from .session import ExitStatus

#: Sent by the terminal to the foreground group (the program has its own copy): left to it.
FROM_TERMINAL = (signal.SIGINT, signal.SIGQUIT)
#: Sent to stepper alone, as a rule: passed on to the program.
PASSED_ON = (signal.SIGTERM,)


@contextmanager
def program_decides(pid: int) -> Iterator[None]:
    """While the block runs (the engine's loop over program `pid`, which stepper started),
    the signals above are handled as the module says instead of ending stepper. Handlers
    are Python's, so they are reset to the default in anything stepper execs later."""
    if threading.current_thread() is not threading.main_thread():
        yield   # signal handlers can only be set from the main thread
        return
    alive = [True]

    def pass_on(signum, frame) -> None:
        if alive[0]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {}
    for sig in FROM_TERMINAL:
        previous[sig] = signal.signal(sig, lambda signum, frame: None)
    for sig in PASSED_ON:
        previous[sig] = signal.signal(sig, pass_on)
    try:
        yield
    finally:
        alive[0] = False   # reaped: its pid may belong to another process from now on
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def end_like(status: ExitStatus) -> int:
    """Exit code to return, or die of the program's signal (without a core file)."""
    if status.signal is None:
        return status.exit_code or 0
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    if status.signal != signal.SIGKILL:   # SIGKILL's disposition cannot be set, nor blocked
        signal.signal(status.signal, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [status.signal])
    os.kill(os.getpid(), status.signal)
    return 128 + status.signal
