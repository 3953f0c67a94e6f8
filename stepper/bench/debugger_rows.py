"""The debugger rows of `stepper bench`: what a debugger's user waits for.

- stop-and-continue round trip: on the bench tracee (push_rbp variant, N + 1 calls of
  `probed`), a breakpoint on `probed` without callback; after its first hit (untimed: start-up,
  libc loading), N times "continue until the next stop" through each tool's debugger API:
  stepper's `proc.cont()` (all-stop), libdebug's `cont()` + `wait()`, gdb's `continue`
  (through gdb's Python `gdb.execute`, in batch mode). µs per stop = timed part / N, and each
  run must have seen exactly N stops at the breakpoint. The `_threads` rows: the same with
  IDLE more threads in the program, blocked in pause(), which every all-stop stop stops too.
- instruction steps: on the instruction loop of stepper.bench.steps (bench_steploop.S), stopped
  at `loop_top` by a breakpoint that is then removed, 200 steps untimed, then N timed:
  stepper's `t.step()` through the public API, stepper's engine alone
  (stepper.instruction_step, as `python -m stepper.bench.steps`), the plain C
  PTRACE_SINGLESTEP loop (bench_singlestep.c), libdebug's `step()`, gdb's `stepi`.

Every figure is measured in its own process for the peers (libdebug runs a ptrace thread of
its own; gdb is gdb) and in the harness's process for stepper, under the placement the
harness applied, so they are side by side in one run.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from importlib.util import find_spec
from typing import Callable

from .. import api
from ..errors import StepperError
from . import steps
from .errors import Unmeasurable
from .peers import run_peer
from .placement import Placement, place_tracee
from .tracee import HEADLINE, symbol_values, tracee

#: Round-trip figures (µs per stop), in table order; the _threads ones with IDLE more threads.
STOP_KEYS = ("cont", "libdebug_cont", "gdb_continue")
THREAD_KEYS = ("cont_threads", "libdebug_cont_threads", "gdb_continue_threads")
#: Idle threads of the multi-threaded round trip (5 threads in all).
IDLE = 4
#: Instruction-step figures (µs per step), in table order.
STEP_KEYS = ("step", "engine_step", "c_singlestep", "libdebug_step", "gdb_stepi")
WARMUP = 200  # untimed steps first: plans compiled, caches warm
_COUNT = re.compile(rb"count=(\d+) ns=(\d+)")


def loop_top() -> int:
    """Where the step figures start: the top of the workload's loop."""
    return symbol_values(steps.workload(), "loop_top")[0]


# --- stepper -------------------------------------------------------------------------------

def _argv(n: int, idle: int) -> list[str]:
    return tracee(HEADLINE).argv(n + 1) + ([str(idle)] if idle else [])


def stepper_cont(n: int, placement: Placement, idle: int = 0) -> tuple[int, float]:
    """(stops seen, µs per stop) of `proc.cont()` from breakpoint hit to breakpoint hit."""
    t = tracee(HEADLINE)
    proc = api.spawn(_argv(n, idle))
    ended = False
    try:
        place_tracee(placement, proc.pid)
        bp = proc.break_at(t.probe)
        if proc.cont().kind != "breakpoint":
            raise Unmeasurable("stepper: the first cont() did not stop at the breakpoint")
        seen = 0
        start = time.perf_counter_ns()
        for _ in range(n):
            if proc.cont().kind != "breakpoint":
                break
            seen += 1
        ns = time.perf_counter_ns() - start
        proc.remove(bp)
        ended = proc.cont().kind == "exit"
        return seen, ns / max(seen, 1) / 1000
    except StepperError as e:
        raise Unmeasurable(f"stepper: {e}") from None
    finally:
        if not ended:
            proc.kill()


def _at_loop(placement: Placement):
    """The workload under stepper, stopped at loop_top, the breakpoint removed."""
    proc = api.spawn(steps.workload_argv())
    place_tracee(placement, proc.pid)
    bp = proc.break_at(loop_top())
    stop = proc.cont()
    if stop.kind != "breakpoint":
        proc.kill()
        raise Unmeasurable(f"stepper: the workload stopped with {stop.kind}, not at loop_top")
    proc.remove(bp)
    return proc, stop.thread


def stepper_step(n: int, placement: Placement) -> tuple[int, float]:
    """(steps, µs per step) of `t.step()` through the public API."""
    proc, t = _at_loop(placement)
    try:
        before = proc.step_stats.emulated + proc.step_stats.trapped
        rate = steps.steps_per_second(t.step, n, WARMUP)
        stats = proc.step_stats
        return stats.emulated + stats.trapped - before - WARMUP, 1e6 / rate
    except StepperError as e:
        raise Unmeasurable(f"stepper: {e}") from None
    finally:
        proc.kill()


def engine_step(n: int, placement: Placement) -> tuple[int, float]:
    """(steps, µs per step) of the engine's emulated step alone (stepper.bench.steps)."""
    us, _ = steps.emulated_us(n)
    return n, us


def c_singlestep(n: int, placement: Placement) -> tuple[int, float]:
    try:
        return n, steps.c_singlestep_us(n)
    except StepperError as e:
        raise Unmeasurable(str(e)) from None


# --- peers ---------------------------------------------------------------------------------

def libdebug_cont(n: int, placement: Placement, idle: int = 0) -> tuple[int, float]:
    t = tracee(HEADLINE)
    return _libdebug("cont", os.path.realpath(t.path), str(n + 1), t.probe, n, placement,
                     idle)


def libdebug_step(n: int, placement: Placement) -> tuple[int, float]:
    return _libdebug("step", os.path.realpath(steps.workload()), "forever", loop_top(), n,
                     placement)


def _libdebug(mode: str, path: str, arg: str, address: int, n: int,
              placement: Placement, idle: int = 0) -> tuple[int, float]:
    if find_spec("libdebug") is None:
        raise Unmeasurable("libdebug is not installed (pip install -e .[bench])")
    cpu = placement.tracee if placement.tracee is not None else -1
    out = run_peer([sys.executable, "-m", "stepper.bench._libdebug_debugger", mode, path, arg,
                f"{address:x}", str(n), str(cpu), str(idle)], "libdebug")
    return _counted(out, n, "libdebug")


_GDB_SCRIPT = """\
import time
import gdb
gdb.execute("set startup-with-shell off")
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("starti", to_string=True)
{move}
bp = gdb.Breakpoint("*{address:#x}")
gdb.execute("continue", to_string=True)
n = {n}
if "{mode}" == "cont":
    first = bp.hit_count
    start = time.perf_counter_ns()
    for _ in range(n):
        gdb.execute("continue", to_string=True)
    ns = time.perf_counter_ns() - start
    count = bp.hit_count - first
else:
    bp.delete()
    for _ in range({warmup}):
        gdb.execute("stepi", to_string=True)
    start = time.perf_counter_ns()
    for _ in range(n):
        gdb.execute("stepi", to_string=True)
    ns = time.perf_counter_ns() - start
    count = n if gdb.selected_inferior().pid else 0  # still running: every stepi stepped
print(f"count={{count}} ns={{ns}}", flush=True)
gdb.execute("kill")
"""


def gdb_continue(n: int, placement: Placement, idle: int = 0) -> tuple[int, float]:
    return _gdb("cont", _argv(n, idle), tracee(HEADLINE).probe, n, placement)


def gdb_stepi(n: int, placement: Placement) -> tuple[int, float]:
    return _gdb("step", steps.workload_argv(), loop_top(), n, placement)


def _gdb(mode: str, argv: list[str], address: int, n: int,
         placement: Placement) -> tuple[int, float]:
    exe = shutil.which("gdb")
    if exe is None:
        raise Unmeasurable("gdb is not installed (apt-get install gdb)")
    move = ""
    if placement.tracee is not None:  # split: move the stopped tracee (gdb stays put)
        move = (f"import os; os.sched_setaffinity(gdb.selected_inferior().pid, "
                f"{{{placement.tracee}}})")
    script = _GDB_SCRIPT.format(move=move, address=address, n=n, mode=mode, warmup=WARMUP)
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="stepper-bench-") as f:
        f.write(script)
        f.flush()
        out = run_peer([exe, "-nx", "-batch", "-x", f.name, "--args", *argv], "gdb")
    return _counted(out, n, "gdb")


def _counted(out: bytes, n: int, what: str) -> tuple[int, float]:
    match = _COUNT.search(out)
    if match is None:
        raise Unmeasurable(f"{what} printed no figures: {out[-200:]!r}")
    count, ns = int(match[1]), int(match[2])
    return count, ns / max(count, 1) / 1000


#: key -> measuring function (n, placement) -> (count seen, µs each).
FIGURES: dict[str, Callable[[int, Placement], tuple[int, float]]] = {
    "cont": stepper_cont, "libdebug_cont": libdebug_cont, "gdb_continue": gdb_continue,
    "cont_threads": lambda n, pl: stepper_cont(n, pl, IDLE),
    "libdebug_cont_threads": lambda n, pl: libdebug_cont(n, pl, IDLE),
    "gdb_continue_threads": lambda n, pl: gdb_continue(n, pl, IDLE),
    "step": stepper_step, "engine_step": engine_step, "c_singlestep": c_singlestep,
    "libdebug_step": libdebug_step, "gdb_stepi": gdb_stepi,
}
