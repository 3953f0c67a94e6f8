"""How a `stepper probe` run ends: signals to stepper while the program it started runs, and
stepper's own end, which is the program's.

The rule (README "How a run ends") is that the user never loses a run: the report is written
however it ends, and stepper then ends the way the program did, so that a shell, `make` or a
supervisor sees the program's own exit status.

- Ctrl-C (SIGINT), Ctrl-\\ (SIGQUIT) and a hangup (SIGHUP) come from the terminal (and the
  shell), which send them to the whole foreground process group: the program gets its own
  copy. stepper does nothing with its copy and keeps tracing; the program decides what the
  signal means (by default it dies of it, and stepper then writes the report and dies of
  the same signal). This is what `perf stat` does, and what strace does when its output
  goes to a file.
- SIGTERM is usually sent to stepper alone (`kill PID`): stepper passes it on to the program
  and keeps tracing until the program has ended, as `timeout` and strace do with the program
  they started.
- A signal ignored when stepper started (nohup, a background job of a script) stays ignored:
  the program inherited that, and stepper leaves it so.
- With `--pid` the program is not stepper's: Ctrl-C and SIGTERM let it go on untraced (the
  engine's own handling, `detach_on_signals` below), SIGHUP and SIGQUIT too, and the report is
  written.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from .records import ExitStatus

#: Sent by the terminal to the foreground group (the program has its own copy): left to it.
#: SIGHUP too: on a hangup the kernel and the shell send it to every job's process group.
FROM_TERMINAL = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
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
    for sig in (*FROM_TERMINAL, *PASSED_ON):
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue   # ignored by whoever started stepper (nohup, a background job): stays so
        previous[sig] = signal.signal(sig, pass_on if sig in PASSED_ON else _left_to_it)
    try:
        yield
    finally:
        alive[0] = False   # reaped: its pid may belong to another process from now on
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Detacher:
    """What `detaching_on` installed: `requested` once one of its signals arrived."""

    requested = False


@contextmanager
def detaching_on(detach: Callable[[], None]) -> Iterator[Detacher]:
    """--pid: SIGTERM, SIGHUP and SIGQUIT (`kill`, a closed terminal, Ctrl-\\) let the process
    go, from the moment the probes are in: ended by them, stepper would leave its INT3 bytes
    in the process, which would die of SIGTRAP at its next hit. `detach` is safe to call from
    a signal handler, also before run() (api.Process.detach). Ctrl-C is the engine's own
    (KeyboardInterrupt once detached)."""
    state = Detacher()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame) -> None:
        state.requested = True
        detach()

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def detach_on_signals(root: Any) -> Callable[[], None]:
    """The engine's own handling while its loop runs on the main thread (where Python runs
    signal handlers); returns what puts the previous handlers back.

    - SIGTERM detaches, when the application has not claimed SIGTERM.
    - Ctrl-C (SIGINT with Python's default handler) detaches at the loop's next safe point,
      then KeyboardInterrupt propagates. Raised where the signal lands, KeyboardInterrupt
      could cut a hit or a step between two ptrace calls: e.g. after XolOps.hit moved RIP
      into the XOL slot but before the step was recorded, or after a step record was taken
      but before `complete` moved RIP back; the detach would then unmap the area under that
      thread (SIGSEGV)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    restore: list[tuple[int, Any]] = []
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: root.request_detach())
        restore.append((signal.SIGTERM, previous))
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:

        def interrupted(signum, frame) -> None:
            if not root.detach_requested:  # once: a second kick during the detach would
                root.interrupted = True    # leave a SIGSTOP pending in a detached thread
                root.request_detach()

        signal.signal(signal.SIGINT, interrupted)
        restore.append((signal.SIGINT, previous))

    def undo() -> None:
        for sig, handler in reversed(restore):
            signal.signal(sig, handler)

    return undo


def _left_to_it(signum, frame) -> None:
    """The program got the same signal from the terminal: nothing for stepper to do."""


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
