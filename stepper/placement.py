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

Pinning alone does not keep the pair together on an idle machine: the tracer resumes the
thread while it still runs itself, so the kernel wakes the thread on the other, idle CPU
(select_idle_sibling), and a thread followed there flees again at the next resume. So while
the machine is quiet (`/proc/loadavg` counts no runnable task but the tracer, `QUIET_AGREE`
looks in a row, one look every `QUIET_EVERY` stops), `follow` also runs the loop thread as
SCHED_IDLE: the kernel counts a CPU running only SCHED_IDLE tasks as idle, so the resumed
thread stays on the tracer's CPU (and preempts it there). The first look that finds another
runnable task puts the tracer back to SCHED_OTHER: a SCHED_IDLE thread gets almost no CPU
next to a busy one (and the pair stays together anyway when no CPU is idle). While yielding,
a stop not ready at the first `waitpid` (WNOHANG) means the thread ran elsewhere or for long:
every `MISSES` such polls, the next stop's CPU is read and followed at once. Yielding needs
the right to go back to SCHED_OTHER (root, CAP_SYS_NICE, or RLIMIT_NICE allowing the
tracer's nice value); without it, and when stepper does not run as SCHED_OTHER, `follow`
only pins. Threads and processes started by the loop thread (a callback's) do not inherit
SCHED_IDLE (SCHED_RESET_ON_FORK). docs/costs.md has the measurements.

`pin` (`--placement pin`) pins as `follow` does but never changes the tracer's scheduling
policy. `none` (`--placement none`, or `STEPPER_PLACEMENT=none`) leaves stepper's affinity
alone, for users who pin stepper and the program themselves.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Iterable, Sequence

from .errors import StepperError

#: The policies: `follow` keeps the tracer on its tracee's CPU (pinning it, and yielding its
#: CPU to the tracee on a quiet machine), `pin` only pins, `none` never pins.
POLICIES = ("follow", "pin", "none")
#: Environment variable choosing the default policy (the CLI's --placement overrides it).
ENV = "STEPPER_PLACEMENT"
#: Stops between two readings of the stopped thread's CPU.
EVERY = 128
#: Consecutive readings that must agree on a new CPU before the tracer moves there.
AGREE = 2
#: Stops between two looks at the number of runnable tasks (`follow`, while it may yield).
QUIET_EVERY = 16
#: Consecutive quiet looks (no runnable task but the tracer) before the tracer yields.
QUIET_AGREE = 2
#: While yielding: polls that found no stop ready, after which the next stop's CPU is read.
MISSES = 4
#: Where the number of runnable tasks is read (4th field, "running/total").
LOADAVG = "/proc/loadavg"


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


def running_tasks(loadavg: bytes) -> int:
    """The tasks runnable right now, the caller included, from a /proc/loadavg line
    ("0.08 0.48 0.83 1/91 11335")."""
    return int(loadavg.split()[3].split(b"/")[0])


_may_yield: bool | None = None


def may_yield() -> bool:
    """Whether a thread of this process may go SCHED_IDLE and come back to SCHED_OTHER.
    Going is always allowed; coming back needs CAP_SYS_NICE or an RLIMIT_NICE that allows
    the thread's nice value (sched(7)), so a thread that could not come back would be left
    starving. Tried once, on a short-lived thread of its own."""
    global _may_yield
    if _may_yield is None:
        ok: list[bool] = []

        def attempt() -> None:
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
                ok.append(True)
            except OSError:
                pass

        t = threading.Thread(target=attempt, name="stepper-may-yield", daemon=True)
        t.start()
        t.join()
        _may_yield = bool(ok)
    return _may_yield


def thread_cpu(stat: bytes) -> int:
    """Field 39 ("processor") of a /proc/PID/task/TID/stat line. The command name (field 2)
    is in parentheses and may hold spaces and ')', so fields are counted from the last ')'."""
    return int(stat[stat.rindex(b")") + 2:].split()[36])


class Follower:
    """The policy for one run of the event loop. `start()` before the loop, `seen(tid)` at
    every stop (it costs a counter decrement except every few stops), `missed()` when a
    poll found no stop ready while `yielding`, `end()` after. Only the calling thread's (the
    loop's) affinity and scheduling policy ever change. `yields=False`: pin only (the
    debugger's cont(), whose thread runs the user's code between stops)."""

    def __init__(self, pid: int, policy: str = "follow", every: int | None = None,
                 agree: int | None = None, yields: bool = True) -> None:
        self.pid = pid
        self.active = check(policy) != "none"
        self.every = max(1, EVERY if every is None else every)
        self.agree = AGREE if agree is None else agree
        self.moves = 0
        self.readings = 0
        self.yields = 0  # times the loop thread went SCHED_IDLE
        self.yielding = False  # SCHED_IDLE now: the loop polls once before it blocks
        self.cpu: int | None = None  # where the loop thread is pinned, None: not by us
        self._may_yield = yields and policy == "follow"
        self._period = self.every  # stops between two ticks (looks and/or readings)
        self._ticks = 0
        self._quiet = 0
        self._misses = 0
        self._urgent = False
        self._load_fd: int | None = None
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
        if (self._may_yield and self.cpu is not None
                and os.sched_getscheduler(0) == os.SCHED_OTHER and may_yield()):
            try:
                self._load_fd = os.open(LOADAVG, os.O_RDONLY)
            except OSError:
                pass
            else:
                self._period = self._count = min(self.every, QUIET_EVERY)
        return self

    def seen(self, tid: int) -> None:
        """One stop of thread `tid`: every few stops, look at the load and read its CPU."""
        self._count -= 1
        if self._count:
            return
        self._count = self._period
        self._ticks += 1
        if self._load_fd is not None:
            self._look()
        if self._urgent:  # polls kept missing while yielding: follow this thread now
            self._urgent = False
            if self._observe(tid):
                self._apply(agree=1)
        elif self._ticks * self._period % self.every < self._period and \
                len(self._allowed) > 1 and self._observe(tid):
            self._apply()

    def missed(self) -> None:
        """While yielding, a poll found no stop ready: the thread that stops next may have
        run on another CPU. Every `MISSES` of them, its CPU is read at its stop."""
        self._misses += 1
        if self._misses >= MISSES:
            self._misses = 0
            self._urgent = True
            self._count = 1

    def _look(self) -> None:
        """Yield while the machine is quiet; stop at the first look that finds it busy."""
        try:
            running = running_tasks(os.pread(self._load_fd, 128, 0))
        except (OSError, ValueError, IndexError):
            return
        if running > 1:
            self._quiet = 0
            if self.yielding:
                self._policy(False)
        else:
            self._quiet += 1
            if not self.yielding and self._quiet >= QUIET_AGREE:
                self._policy(True)

    def _policy(self, idle: bool, tid: int = 0) -> None:
        """SCHED_IDLE (children reset to SCHED_OTHER) or back to SCHED_OTHER, nice kept. A
        refusal leaves things as they were: going idle is then given up, coming back is
        tried again at the next look (may_yield() said it is allowed)."""
        policy = os.SCHED_IDLE | os.SCHED_RESET_ON_FORK if idle else os.SCHED_OTHER
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except OSError:
            return
        self.yielding = idle
        self.yields += idle

    def end(self) -> None:
        """Give the loop thread its old affinity and scheduling policy back (from any
        thread: by its own id)."""
        if self.yielding:
            self._policy(False, self.owner)  # fails only if the thread ended
            self.yielding = False
        if self._load_fd is not None:
            os.close(self._load_fd)
            self._load_fd = None
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
