"""Instruction steps per second: a `step` callable on the bundled instruction loop
(bench_steploop.S), next to a plain C PTRACE_SINGLESTEP loop over the same program
(bench_singlestep.c), measured in the same run, alternated. A benchmark, not a test: it asserts nothing.

    python -m stepper.bench.steps [--steps N]

prints µs per step of the C loop and of stepper's emulated step (stepper.instruction_step,
falling back to a real single-step for what it does not emulate). `steps_per_second` is the
building block for `stepper bench`: give it any `step()` (e.g. a debugger thread's `t.step`)
on a process started from `workload_argv()`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .. import kernel, toolchain
from ..errors import StepperError
from ..instruction_step import emulate_one


@lru_cache(maxsize=None)
def workload() -> Path:
    """The instruction loop (static, no libc), built once into the cache."""
    return toolchain.build("bench_steploop.S", ("-static", "-nostdlib", "-no-pie"),
                           output="bench_steploop")


def workload_argv() -> list[str]:
    """argv of the loop that runs (practically) forever: the benchmark stops it."""
    return [str(workload()), "forever"]


@lru_cache(maxsize=None)
def singlestep_peer() -> Path:
    return toolchain.build("bench_singlestep.c", ("-O2",), output="bench_singlestep")


def c_singlestep_us(steps: int) -> float:
    """µs per step of the C PTRACE_SINGLESTEP loop over the workload."""
    out = subprocess.run([str(singlestep_peer()), str(steps), *workload_argv()],
                         capture_output=True, text=True, check=False)
    fields = dict(f.split("=") for f in out.stdout.split())
    if out.returncode != 0 or int(fields.get("steps", 0)) != steps:
        raise StepperError(f"bench_singlestep failed: {out.stderr.strip() or out.stdout.strip()}")
    return int(fields["ns"]) / steps / 1000


def steps_per_second(step: Callable[[], object], steps: int, warmup: int = 200) -> float:
    """Call `step()` `warmup` times untimed (plans compiled, caches warm), then `steps` times
    timed; the rate of the timed part."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def emulated_stepper(p, t) -> Callable[[], bool]:
    """A step of thread `t` (every thread stopped): emulated when emulate_one can, else the
    registers written back and one PTRACE_SINGLESTEP. Returns whether it was emulated."""
    tid, regs = t.tid, t.regs

    def step() -> bool:
        if emulate_one(p, t, True):
            return True
        kernel.setregs(tid, regs)
        kernel.singlestep(tid)
        _, status = os.waitpid(tid, kernel.WALL)
        if not os.WIFSTOPPED(status):
            raise StepperError("the workload ended during the benchmark")
        kernel.getregs(tid, regs)
        return False

    return step


def emulated_us(steps: int) -> tuple[float, float]:
    """(µs per step, fraction emulated) of `emulated_stepper` on the workload."""
    from ..session import Session

    session = Session.spawn(workload_argv())
    try:
        t = session.threads[session.pid]
        kernel.getregs(t.tid, t.regs)
        step = emulated_stepper(session, t)
        emulated = 0

        def counted() -> None:
            nonlocal emulated
            emulated += step()

        rate = steps_per_second(counted, steps)
        return 1e6 / rate, emulated / (steps + 200)
    finally:
        session.kill()


def compare(steps: int, repeat: int = 3) -> dict:
    """The C loop and the emulated stepper, alternated `repeat` times (so both see the same
    machine load); the median of each."""
    c, emulated, shares = [], [], []
    for _ in range(repeat):
        c.append(c_singlestep_us(steps))
        us, share = emulated_us(steps)
        emulated.append(us)
        shares.append(share)
    return {"steps": steps, "repeat": repeat, "c_singlestep_us": statistics.median(c),
            "emulated_us": statistics.median(emulated), "emulated_share": min(shares)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepper.bench.steps",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100000, help="timed steps per figure")
    parser.add_argument("--repeat", type=int, default=3, help="alternated runs; medians shown")
    args = parser.parse_args(argv)
    r = compare(args.steps, args.repeat)
    c_us, emu_us = r["c_singlestep_us"], r["emulated_us"]
    print(f"µs per step, median of {r['repeat']} alternated runs of {r['steps']} steps")
    print(f"C PTRACE_SINGLESTEP loop   {c_us:8.2f}")
    print(f"stepper emulated step      {emu_us:8.2f}  ({r['emulated_share']:.0%} emulated, "
          f"{c_us / emu_us:.1f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
