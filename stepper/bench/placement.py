"""Where tracer and tracee run, and the follow-the-tracee policy.

A ptrace stop wakes the tracer and a resume wakes the tracee; when the two sit on different
CPUs every hit pays two cross-CPU wake-ups (~70 µs here against ~3 µs on one CPU, see
docs/costs.md). So the bench reports each figure per placement:

- `same`:  the tracer (and the tracee it forks, gdb, libdebug) pinned to one CPU (the last
           one this process may use);
- `free`:  nobody pinned, as users run things;
- `split`: tracer on one CPU, tracee on another (the worst case, on request).

`free` runs stepper with its placement policy off (`none`), `free+policy` with it on
(`follow`, the engine's default, stepper.placement); in `same` and `split` the tracer may use
one CPU only, so the policy has nothing to choose. With `--load N` each placement's stepper
figures are measured again under N busy loops (scopes `same+load`, `free+load`,
`free+policy+load`; stepper.bench.load).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import StepperError
from ..placement import thread_cpu

PLACEMENTS = ("same", "free", "split")
#: The placement under which `stepper`'s own runs also use the policy (extra figures).
POLICY = "free+policy"
#: Suffix of a scope measured under `--load` busy loops ("same+load", "free+policy+load").
LOADED = "+load"


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
        return thread_cpu(f.read())


class Colocation:
    """Watch how often tracer and tracee share a CPU, around the tracer's loop.

    A daemon thread reads both threads' last CPU every `period` seconds: the share of
    samples that found them together (`colocated`, 0..1) is the mechanism behind the
    unpinned timings, which a busy machine cannot blur. It only reads; whether the tracer
    follows its tracee is the engine's placement policy (stepper.placement)."""

    def __init__(self, tracee_pid: int, period: float = 0.02) -> None:
        self.pid = tracee_pid
        self.period = period
        self.samples = 0
        self.together = 0
        self._tracer = threading.get_native_id()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="colocation")

    @property
    def colocated(self) -> float | None:
        return self.together / self.samples if self.samples else None

    def __enter__(self) -> "Colocation":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.period):
            try:
                together = last_cpu(self.pid) == last_cpu(os.getpid(), self._tracer)
            except (OSError, ValueError, IndexError):
                continue  # the tracee is gone
            self.samples += 1
            self.together += together
