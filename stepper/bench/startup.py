"""Start-up figures: what stepper costs before the first hit, timed from outside as a user
meets it (wall time of the whole command, its own Python start included).

- `help`: `stepper --help`.
- `one_probe`: `stepper probe --quiet -p libc.so.6:malloc -- /bin/true` minus `/bin/true`
  alone: what one libc probe adds to a program's wall time.
- `all_probes`: `stepper probe --quiet -p 'libc.so.6:*' -- /bin/true` (every function of libc,
  thousands of sites: resolved, checked, inserted, reported), and `all_over_one`, that minus
  the one-probe run: what the other sites cost.

Each with a warm cache (the parsed-ELF cache filled by an earlier run) and a cold one (an
empty cache directory for every run; the kernel's page cache is left as it is). Medians of
`repeat` runs, the commands interleaved so a noisy moment of the machine moves one sample of
each. `commands` lets the same run time several installs of stepper side by side.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

ONE = "libc.so.6:malloc"
ALL = "libc.so.6:*"
PROGRAM = "/bin/true"
FIGURES = ("help", "one_probe", "all_probes", "all_over_one")


def this_stepper() -> list[str]:
    """The command of the stepper running now (its console script, else its module)."""
    script = os.path.join(os.path.dirname(sys.executable), "stepper")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-c", "import sys; from stepper.cli import main; sys.exit(main())"]


def _wall(argv: list[str], cache: str, cpu: list[float] | None = None) -> float:
    """Wall seconds of `argv`; its CPU seconds (user + system, its children's included) are
    appended to `cpu`: on a loaded machine they vary far less than the wall time."""
    env = dict(os.environ, STEPPER_CACHE=cache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): "
                           f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall


def _runs(stepper: list[str]) -> dict[str, list[str]]:
    return {"help": [*stepper, "--help"],
            "one": [*stepper, "probe", "--quiet", "-p", ONE, "--", PROGRAM],
            "all": [*stepper, "probe", "--quiet", "-p", ALL, "--", PROGRAM]}


def measure(repeat: int = 5, commands: dict[str, list[str]] | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """{label: {"warm": {figure: seconds}, "cold": {...}, "samples": ...}}, medians of
    `repeat`, for each stepper command of `commands` (default: this one, as "stepper")."""
    commands = commands or {"stepper": this_stepper()}
    say = progress or (lambda line: None)
    samples: dict[tuple[str, str, str], list[float]] = {}
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stepper-startup-") as scratch:
        warm = {label: os.path.join(scratch, f"warm-{n}") for n, label in enumerate(commands)}
        for label, stepper in commands.items():   # fill the warm caches
            for argv in _runs(stepper).values():
                _wall(argv, warm[label])
        for r in range(repeat):
            bare.append(_wall([PROGRAM], warm[next(iter(commands))]))
            for label, stepper in commands.items():
                for state in ("warm", "cold"):
                    for name, argv in _runs(stepper).items():
                        cache = warm[label]
                        if state == "cold":
                            cache = os.path.join(scratch, f"cold-{r}-{label}-{name}")
                        cpu = samples.setdefault((label, state, name + "_cpu"), [])
                        samples.setdefault((label, state, name), []).append(
                            _wall(argv, cache, cpu))
                        if state == "cold":
                            shutil.rmtree(cache, ignore_errors=True)
            say(f"start-up repeat {r + 1}/{repeat}")
    out: dict = {"program": PROGRAM, "one": ONE, "all": ALL, "repeat": repeat,
                 "bare_s": round(statistics.median(bare), 3)}
    for label in commands:
        entry: dict = {}
        for state in ("warm", "cold"):
            s = {name: samples[(label, state, name)] for name in ("help", "one", "all")}
            one = [a - b for a, b in zip(s["one"], bare)]
            over = [a - b for a, b in zip(s["all"], s["one"])]
            entry[state] = {"help": _median(s["help"]), "one_probe": _median(one),
                            "all_probes": _median(s["all"]), "all_over_one": _median(over)}
            entry[state + "_samples"] = {k: [round(v, 3) for v in vs] for k, vs in s.items()}
            cpu = {name: samples[(label, state, name + "_cpu")] for name in ("help", "one", "all")}
            entry[state + "_cpu"] = {"help": _median(cpu["help"]), "one": _median(cpu["one"]),
                                     "all": _median(cpu["all"])}
        out[label] = entry
    return out


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


#: (figure, goal in seconds, cache state it is judged on)
GOALS = (("help", 0.15, "warm"), ("one_probe", 0.25, "warm"), ("all_probes", 0.5, "warm"))


def table_lines(startup: dict) -> list[str]:
    """The start-up rows of the bench table: one column per (stepper, cache state)."""
    labels = [k for k, v in startup.items() if isinstance(v, dict)]
    columns = [(label, state) for label in labels for state in ("warm", "cold")]
    head = [f"{label} {state}" if len(labels) > 1 else state for label, state in columns]
    lines = [f"start-up, s (wall, median of {startup['repeat']}; {startup['program']} alone "
             f"{startup['bare_s']:.3f} s; one = -p {startup['one']}, all = -p "
             f"'{startup['all']}'):"]
    names = {"help": "stepper --help", "one_probe": "one probe, added to the program",
             "all_probes": "all of libc (whole run)", "all_over_one": "all minus one"}
    rows = [[names[f], *(f"{startup[label][state][f]:.3f}" for label, state in columns)]
            for f in FIGURES]
    widths = [max(len(r[i]) for r in [["figure", *head], *rows]) for i in range(len(head) + 1)]
    for row in [["figure", *head], *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    cpu = [[f"  {name}", *(f"{startup[label][state + '_cpu'][key]:.3f}"
                          for label, state in columns)]
           for key, name in (("help", "stepper --help"), ("one", "one probe (whole run)"),
                             ("all", "all of libc (whole run)"))]
    lines.append("  CPU seconds (user + system, the program's included):")
    for row in cpu:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for figure, goal, state in GOALS:
        for label in labels:
            value = startup[label][state][figure]
            verdict = "met" if value <= goal else "MISSED"
            who = f"{label} " if len(labels) > 1 else ""
            lines.append(f"  goal {who}{names[figure]} <= {goal} s ({state}): {value:.3f} s, "
                         f"{verdict}")
    return lines
