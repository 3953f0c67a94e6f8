"""`stepper bench`: per-hit cost of each step strategy against gdb, libdebug and a C floor.

    from stepper.bench import Config, run_bench
    report = run_bench(Config(hits=5000, repeat=3, placements=("same", "free")))
    report["per_hit_us"]["emulate"]      # µs per breakpoint hit, tracer and tracee on one CPU

The implementation lives in the private modules: tracee (bundled programs), placement (CPU
affinity of the placements, the colocation watcher), load (--load busy loops), runs (stepper's strategies), peers (C floor, gdb,
libdebug), breakdown (the emulate hit path timed step by step), harness (orchestration,
medians), report (table, JSON) and plot.
"""

from .harness import KEYS, STRATEGIES, Config, run_bench

__all__ = ["Config", "run_bench", "KEYS", "STRATEGIES"]
