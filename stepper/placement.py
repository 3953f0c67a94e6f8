"""Where the tracer runs: keep it on the CPU of the thread it serves.

Every breakpoint hit is a stop (the program's thread wakes the tracer) and a resume (the
tracer wakes the thread). On one CPU each wake-up costs about 3 µs here; across CPUs about
70 µs (docs/costs.md), which dwarfs the whole hit path. Left alone, the scheduler sometimes
keeps the pair together and sometimes not, so unpinned runs are bimodal.

The policy (`follow`, the default) changes only the affinity of stepper's own loop thread,
never the program's: a program can read its own affinity (sched_getaffinity) and its threads
and children inherit it, so touching it would not be transparent. It:

- at the start of `run`, pins the tracer to the CPU the program's main thread last ran on;
- every `EVERY` stops, reads the CPU of the thread that stopped (/proc/TID/task/TID/stat,
  field 39; one read costs 5-20 µs, hence the sampling: about 0.1 µs per stop) and moves
  the tracer when the last `AGREE` readings name the same other CPU (hysteresis: one
  migration costs far more than a few slow hits, see docs/costs.md);
- only ever picks a CPU stepper was allowed to use when the run started (taskset, cpusets);
- puts the tracer's old affinity back when the run ends.

`none` (`--placement none`, or `STEPPER_PLACEMENT=none`) leaves stepper's affinity alone,
for users who pin stepper and the program themselves.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Iterable, Sequence

from .errors import StepperError

#: The policies: `follow` keeps the tracer on its tracee's CPU, `none` never pins.
POLICIES = ("follow", "none")
#: Environment variable choosing the default policy (the CLI's --placement overrides it).
ENV = "STEPPER_PLACEMENT"
#: Stops between two readings of the stopped thread's CPU.
EVERY = 128
#: Consecutive readings that must agree on a new CPU before the tracer moves there.
AGREE = 2


def default_policy() -> str:
    """The policy of a new session: $STEPPER_PLACEMENT, else `follow`."""
    return check(os.environ.get(ENV) or "follow", f"${ENV}")


def check(policy: str, where: str = "--placement") -> str:
    if policy not in POLICIES:
        raise StepperError(f"{where} {policy!r}: choose one of {', '.join(POLICIES)}")
    return policy


def choose(history: Sequence[int], allowed: Iterable[int], current: int | None,
           agree: int = AGREE) -> int | None:
    """The CPU the tracer should be pinned to, given the tracee's CPUs observed so far
    (`history`, oldest first), the CPUs stepper may use (`allowed`) and where it is pinned
    now (`current`, None: not pinned). Stays at `current` unless the last `agree` readings
    all name one other allowed CPU; a CPU outside `allowed` is never chosen (nor kept)."""
    allowed = frozenset(allowed)
    if current is not None and current not in allowed:
        current = None
    if len(history) < agree or agree < 1:
        return current
    recent = set(list(history)[-agree:])
    if len(recent) != 1:
        return current
    cpu = recent.pop()
    return cpu if cpu in allowed else current


def thread_cpu(stat: bytes) -> int:
    """Field 39 ("processor") of a /proc/PID/task/TID/stat line. The command name (field 2)
    is in parentheses and may hold spaces and ')', so fields are counted from the last ')'."""
    return int(stat[stat.rindex(b")") + 2:].split()[36])


class Follower:
    """The policy for one run of the event loop. `start()` before the loop, `seen(tid)` at
    every stop (it costs a counter decrement except every `every` stops), `end()` after.
    Only the calling thread's (the loop's) affinity ever changes."""

    def __init__(self, pid: int, policy: str = "follow", every: int | None = None,
                 agree: int | None = None) -> None:
        self.pid = pid
        self.active = check(policy) == "follow"
        self.every = max(1, EVERY if every is None else every)
        self.agree = AGREE if agree is None else agree
        self.moves = 0
        self.readings = 0
        self.cpu: int | None = None  # where the loop thread is pinned, None: not by us
        self._old: set[int] | None = None
        self._allowed: frozenset[int] = frozenset()
        self._history: deque[int] = deque(maxlen=max(1, self.agree))
        self._count = self.every
        self._fd: int | None = None
        self._tid: int | None = None
        self.owner = 0  # native id of the thread pinned (the one that called start)
        if not self.active:
            self.seen = _nothing  # type: ignore[method-assign]

    def start(self) -> "Follower":
        """Pin the loop thread to the CPU the main thread last ran on."""
        self.owner = threading.get_native_id()
        if not self.active:
            return self
        self._old = os.sched_getaffinity(0)
        self._allowed = frozenset(self._old)
        if len(self._allowed) > 1 and self._observe(self.pid):
            self._apply(agree=1)  # no history yet: the first reading decides
        return self

    def seen(self, tid: int) -> None:
        """One stop of thread `tid`: every `every` stops, read its CPU and follow it."""
        self._count -= 1
        if self._count:
            return
        self._count = self.every
        if len(self._allowed) > 1 and self._observe(tid):
            self._apply()

    def end(self) -> None:
        """Give the loop thread its old affinity back (from any thread: by its own id)."""
        self._close()
        if self._old is not None and self.cpu is not None:
            try:
                os.sched_setaffinity(self.owner, self._old)
            except OSError:
                pass  # a cpuset changed under us, or the thread ended: nothing to restore
        self.cpu = None

    def _observe(self, tid: int) -> bool:
        try:
            if tid != self._tid:  # one descriptor, of the last thread read: pread is a
                self._close()     # quarter of open+read+close
                # by tid alone: a thread of a followed child is found as well
                self._fd = os.open(f"/proc/{tid}/task/{tid}/stat", os.O_RDONLY)
                self._tid = tid
            cpu = thread_cpu(os.pread(self._fd, 1024, 0))
        except (OSError, ValueError, IndexError):
            self._close()
            return False  # the thread is gone: nothing to follow
        self.readings += 1
        self._history.append(cpu)
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._tid = None

    def _apply(self, agree: int | None = None) -> None:
        cpu = choose(self._history, self._allowed, self.cpu,
                     self.agree if agree is None else agree)
        if cpu is None or cpu == self.cpu:
            return
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            return  # a CPU no longer ours (cpuset changed): stay where we are
        self.cpu = cpu
        self.moves += 1


def _nothing(tid: int) -> None:
    """`seen` under policy `none`."""
