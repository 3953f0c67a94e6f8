"""Child process of the libdebug peer: `python -m stepper.bench._libdebug_child TRACEE N ADDR
CPU` runs TRACEE N under libdebug with a breakpoint (Python callback) at hex ADDR (0: none),
the tracee moved to CPU first unless it is -1, and prints "hits=H ns=T" with T the time from
the first continue to the exit."""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> int:
    from libdebug import debugger

    path, iterations, address, cpu = argv[0], argv[1], int(argv[2], 16), int(argv[3])
    d = debugger([path, iterations])
    d.run()
    if cpu >= 0:
        os.sched_setaffinity(d.pid, {cpu})
    hits = 0

    def on_hit(thread, bp) -> None:
        nonlocal hits
        hits += 1

    if address:
        d.breakpoint(address, callback=on_hit, file="absolute")
    start = time.perf_counter_ns()
    d.cont()
    d.wait()
    ns = time.perf_counter_ns() - start
    d.terminate()
    print(f"hits={hits} ns={ns}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
