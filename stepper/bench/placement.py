"""Where tracer and tracee run, and the follow-the-tracee policy.

A ptrace stop wakes the tracer and a resume wakes the tracee; when the two sit on different
CPUs every hit pays two cross-CPU wake-ups (~70 µs here against ~3 µs on one CPU, see
docs/costs.md). So the bench reports each figure per placement:

- `same`:  the tracer (and the tracee it forks, gdb, libdebug) pinned to one CPU (the last
           one this process may use);
- `free`:  nobody pinned, as users run things;
- `split`: tracer on one CPU, tracee on another (the worst case, on request).

The policy (`FollowTracee`) changes only the *tracer's* affinity, never the tracee's, which the
program could observe with sched_getaffinity: it moves the tracer onto the CPU its tracee last
ran on (/proc/PID/stat field 39, "processor"), then re-checks from a background thread in case
the scheduler moved the tracee. The hit path itself does nothing extra.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import StepperError

PLACEMENTS = ("same", "free", "split")
#: The placement under which `stepper`'s own runs also use the policy (extra figures).
POLICY = "free+policy"


@dataclass(frozen=True)
class Placement:
    """CPU sets for one placement: `tracer` for this process (inherited by what it starts);
    `tracee`, if set, the CPU a tracee is moved to (split only)."""

    name: str
    tracer: frozenset[int]
    tracee: int | None = None


def resolve(name: str, allowed: frozenset[int] | None = None) -> Placement:
    """The CPUs of placement `name`, from the CPUs this process may use."""
    cpus = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    if name == "same":  # the last CPU: by habit, other pinned work goes to CPU 0
        return Placement(name, frozenset(cpus[-1:]))
    if name == "free":
        return Placement(name, frozenset(cpus))
    if name == "split":
        if len(cpus) < 2:
            raise StepperError("placement split needs two CPUs; this process may use one")
        return Placement(name, frozenset(cpus[-1:]), cpus[0])
    raise StepperError(f"unknown placement {name!r}: choose one of {', '.join(PLACEMENTS)}, all")


@contextmanager
def applied(placement: Placement) -> Iterator[Placement]:
    """Run the block with this process on `placement.tracer`; the old affinity comes back."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, placement.tracer)
    try:
        yield placement
    finally:
        os.sched_setaffinity(0, old)


def place_tracee(placement: Placement, pid: int) -> None:
    """For `split`: move a freshly started (stopped) tracee to its own CPU."""
    if placement.tracee is not None:
        os.sched_setaffinity(pid, {placement.tracee})


def last_cpu(pid: int, tid: int | None = None) -> int:
    """The CPU thread `tid` of process `pid` (default: its main thread) last ran on."""
    with open(f"/proc/{pid}/task/{pid if tid is None else tid}/stat", "rb") as f:
        return processor_field(f.read())


def processor_field(stat: bytes) -> int:
    """Field 39 of a /proc stat line. The command name (field 2) is in parentheses and may
    itself hold spaces and ')', so fields are counted from the last ')'."""
    return int(stat[stat.rindex(b")") + 2:].split()[36])


class FollowTracee:
    """Keep the calling (tracer) thread on the CPU its tracee last ran on.

    A context manager around the tracer's loop: pins the tracer at entry, then a daemon thread
    re-reads the tracee's CPU every `period` seconds and re-pins when it moved. On exit the
    tracer's own affinity is restored. Only the tracer's affinity ever changes.

    `pin=False` only observes (the bench's `free` runs): either way the watcher samples how
    often tracer and tracee were last on the same CPU (`colocated`, 0..1), the mechanism
    behind the timings, which a busy machine cannot blur. `active()`, if given, is asked
    before each re-pin: when it says False (say, the program now has several threads that
    one CPU should not serialise) the tracer's old affinity is put back instead."""

    def __init__(self, tracee_pid: int, period: float = 0.02, pin: bool = True,
                 active: Callable[[], bool] | None = None) -> None:
        self.pid = tracee_pid
        self.period = period
        self.pin = pin
        self.active = active
        self.moves = 0
        self.samples = 0
        self.together = 0
        self._tracer = threading.get_native_id()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="follow-tracee")
        self._old: set[int] | None = None
        self._cpu = -1

    @property
    def colocated(self) -> float | None:
        return self.together / self.samples if self.samples else None

    def __enter__(self) -> "FollowTracee":
        self._old = os.sched_getaffinity(self._tracer)
        self._follow()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._old is not None and self.moves:
            os.sched_setaffinity(self._tracer, self._old)

    def _follow(self) -> None:
        if not self.pin:
            return
        if self.active is not None and not self.active():
            if self._cpu != -1 and self._old is not None:
                os.sched_setaffinity(self._tracer, self._old)
                self._cpu = -1
            return
        try:
            cpu = last_cpu(self.pid)
        except (OSError, ValueError, IndexError):
            return  # the tracee is gone: nothing to follow
        if cpu != self._cpu:
            try:
                os.sched_setaffinity(self._tracer, {cpu})
            except OSError:
                return  # a CPU this tracer may not use (cpuset): stay where it is
            self._cpu = cpu
            self.moves += 1

    def _sample(self) -> None:
        try:
            together = last_cpu(self.pid) == last_cpu(os.getpid(), self._tracer)
        except (OSError, ValueError, IndexError):
            return
        self.samples += 1
        self.together += together

    def _watch(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()
            self._follow()
