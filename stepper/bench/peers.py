"""The reference points: the C floor tracer and its XOL twin, gdb, and libdebug.

Each runs as its own process, with the CPU placement inherited from the harness (the harness
pins itself before starting them; `split` moves only the tracee). Each returns a Sample; the
harness subtracts the same tool's run without a breakpoint.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec

from .errors import Unmeasurable
from .placement import Placement
from .runs import Sample
from .tracee import Tracee, floor

_TIMEOUT = 600
_FLOOR_OUT = re.compile(rb"hits=(\d+) ns=(\d+)")
_GDB_HITS = re.compile(rb"^stepper-bench-hits=(\d+)$", re.M)
_DPRINTF_MARK = b"stepper-bench-hit"


def c_floor(tracee: Tracee, iterations: int, mode: str | None, placement: Placement) -> Sample:
    """bench_floor.c: mode "emulate" (c_floor), "xol" (c_floor_xol), None (its baseline)."""
    if mode is not None and tracee.instruction != "push rbp":
        raise Unmeasurable(f"the C floor only steps push rbp, not {tracee.instruction}")
    cpu = placement.tracee if placement.tracee is not None else -1
    argv = [str(floor()), mode or "none", f"{tracee.probe:x}", f"{tracee.slot:x}", str(cpu),
            *tracee.argv(iterations)]
    out = run_peer(argv, "the C floor")
    match = _FLOOR_OUT.search(out)
    if match is None:
        raise Unmeasurable(f"the C floor printed no figures: {out[-200:]!r}")
    return Sample(int(match[1]), int(match[2]))


def gdb(tracee: Tracee, iterations: int, kind: str | None, placement: Placement) -> Sample:
    """gdb in batch mode: kind "break" (break + commands/silent/continue), "dprintf", or None
    (no breakpoint: gdb's start-up and the tracee's own run, subtracted by the harness).
    Timed from outside, so start-up is in every sample and cancels in the difference."""
    exe = shutil.which("gdb")
    if exe is None:
        raise Unmeasurable("gdb is not installed (apt-get install gdb)")
    script = ["set startup-with-shell off", "set pagination off", "set $hits = 0", "starti"]
    if placement.tracee is not None:  # split: move the stopped tracee (gdb stays put)
        script.append(f"python import os; os.sched_setaffinity(gdb.selected_inferior().pid, "
                      f"{{{placement.tracee}}})")
    if kind == "break":
        script += [f"break *{tracee.probe:#x}", "commands", "silent",
                   "set $hits = $hits + 1", "continue", "end"]
    elif kind == "dprintf":
        script.append(f'dprintf *{tracee.probe:#x},"{_DPRINTF_MARK.decode()}\\n"')
    script += ["continue", 'printf "stepper-bench-hits=%d\\n", $hits']
    with tempfile.NamedTemporaryFile("w", suffix=".gdb", prefix="stepper-bench-") as f:
        f.write("\n".join(script) + "\n")  # a command list needs a file: -ex takes one line
        f.flush()
        argv = [exe, "-nx", "-batch", "-x", f.name, "--args", *tracee.argv(iterations)]
        start = time.perf_counter_ns()
        out = run_peer(argv, "gdb")
        ns = time.perf_counter_ns() - start
    if kind == "dprintf":
        return Sample(out.count(_DPRINTF_MARK + b"\n"), ns)
    match = _GDB_HITS.search(out)
    if match is None:
        raise Unmeasurable(f"gdb printed no hit count: {out[-200:]!r}")
    return Sample(int(match[1]), ns)


def libdebug(tracee: Tracee, iterations: int, probed: bool, placement: Placement) -> Sample:
    """libdebug 0.9: a breakpoint with a Python callback, in a child Python process (libdebug
    runs its own ptrace thread; it must not share the harness's process)."""
    if find_spec("libdebug") is None:
        raise Unmeasurable("libdebug is not installed (pip install -e .[bench])")
    cpu = placement.tracee if placement.tracee is not None else -1
    # The cache file's own name, as libdebug may match the program's mappings by file name
    # (the checked cache directory is the user's own; see stepper.toolchain).
    argv = [sys.executable, "-m", "stepper.bench._libdebug_child", os.path.realpath(tracee.path),
            str(iterations), f"{tracee.probe:x}" if probed else "0", str(cpu)]
    out = run_peer(argv, "libdebug")
    match = _FLOOR_OUT.search(out)
    if match is None:
        raise Unmeasurable(f"libdebug printed no figures: {out[-200:]!r}")
    return Sample(int(match[1]), int(match[2]))


def run_peer(argv: list[str], what: str) -> bytes:
    """Run a measuring program (a peer, a C loop) to its end: its output (stdout and stderr
    together), or Unmeasurable saying why it gave none."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unmeasurable(f"{what} did not run: {e}") from None
    if proc.returncode != 0:
        last = (proc.stdout.strip().splitlines() or [b"no output"])[-1].decode(errors="replace")
        raise Unmeasurable(f"{what} failed (exit {proc.returncode}): {last}")
    return proc.stdout
