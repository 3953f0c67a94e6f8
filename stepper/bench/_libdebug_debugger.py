"""Child process of the libdebug debugger rows: `python -m stepper.bench._libdebug_debugger
MODE PROGRAM ARG ADDR N CPU [IDLE]`.

- MODE `cont`: PROGRAM ARG under libdebug, a breakpoint (no callback) at hex ADDR; after its
  first hit (untimed), N times `cont()` + `wait()`, each returning at the breakpoint; prints
  "count=HITS ns=T" with HITS the breakpoint's hit count over the timed part.
- MODE `step`: runs to the breakpoint at ADDR, disables it, steps 200 times untimed, then N
  times `step()`; prints "count=N ns=T", with T the timed part.
The tracee is moved to CPU first unless it is -1; IDLE, if given and not 0, is passed to
PROGRAM as a second argument (the bench tracee's idle threads). libdebug runs its own ptrace
thread: it must not share the harness's process."""

from __future__ import annotations

import os
import sys
import time

WARMUP = 200


def main(argv: list[str]) -> int:
    from libdebug import debugger

    mode, path, arg, address, n, cpu = (argv[0], argv[1], argv[2], int(argv[3], 16),
                                        int(argv[4]), int(argv[5]))
    idle = argv[6] if len(argv) > 6 and argv[6] != "0" else None
    d = debugger([path, arg, *([idle] if idle else [])])
    d.run()
    if cpu >= 0:
        os.sched_setaffinity(d.pid, {cpu})
    bp = d.breakpoint(address, file="absolute")
    d.cont()
    d.wait()
    if mode == "cont":
        first = bp.hit_count
        start = time.perf_counter_ns()
        for _ in range(n):
            d.cont()
            d.wait()
        ns = time.perf_counter_ns() - start
        count = bp.hit_count - first
    else:
        bp.disable()
        for _ in range(WARMUP):
            d.step()
        start = time.perf_counter_ns()
        for _ in range(n):
            d.step()
        ns = time.perf_counter_ns() - start
        count = n
    d.kill()
    print(f"count={count} ns={ns}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
