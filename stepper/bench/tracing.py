"""`stepper bench --trace`: the per-call cost of tracing a function with its arguments, stepper's
traced probes against the tools people print arguments with (ltrace, gdb dprintf, bpftrace,
uftrace), on one workload: N calls of `long work(long a, const char *s)` (bench_trace.c).

Every row is a whole command run from outside and timed with its start-up; the row's
baseline is the same tool on the same program probing only `main` (one hit), or for gdb no
breakpoint, so per call = (probed run - baseline run) / N. Each tool writes its trace to a
file (never a terminal), and the hits are counted back from that file: a row that saw
another count than N is null with the reason. The `*_deep` rows run the same program with
`deep`: each call of `work` under a 10-frame stack (bench_trace.c), probed with and without
`--stack`; their stacks are checked from stepper's JSON (N stacks of DEEP_FRAMES frames, or
null). The `c_floor_*` rows are bench_trace_floor.c, a C ptrace tracer doing the least work of
stepper's counting and args rows: what any ptrace tracer could reach here, for information.
See docs/bench.md ("Traced probes").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import toolchain
from .errors import Unmeasurable
from .peers import run_peer
from .runs import Sample
from .tracee import symbol_values

_TIMEOUT = 900
_EXE = "bench_trace"
#: The fetch arguments of stepper's traced rows: two registers and the string at the second.
STEPPER_ARGS = "a=%di:s64 p=%si s=+0(%si):string"
#: Row key -> what it runs (the table's second column).
ROWS: dict[str, str] = {
    "stepper_count": "stepper probe -p 'work' (counting)",
    "stepper_args": f"stepper probe -p 'work {STEPPER_ARGS}' --trace",
    "stepper_return": f"stepper probe -p 'work%return {STEPPER_ARGS}' --trace",
    "ltrace": "ltrace -x work (prototype: long work(long, string))",
    "ltrace_L": "ltrace -L -x work",
    "gdb_dprintf": 'gdb dprintf work,"%ld %lx %s",$rdi,$rsi,(char*)$rsi',
    "bpftrace": 'bpftrace uprobe:work printf("%d %lx %s", arg0, arg1, str(arg1))',
    "uftrace": "uftrace record -P work -A work@arg1,arg2/s (dynamic patching)",
    "stepper_fetch_deep": "stepper probe -p 'work a=%di:s64' (10-frame stack, no --stack)",
    "stepper_stack_deep": "stepper probe -p 'work a=%di:s64' --stack (10-frame stack)",
    "gdb_bt_deep": "gdb break work + commands: silent, bt, continue (10-frame stack)",
    "bpftrace_ustack_deep": "bpftrace uprobe:work { print(ustack) } (frame pointers only)",
    "c_floor_count": "bench_trace_floor count: C ptrace loop, movsbq emulated (no output)",
    "c_floor_args": "bench_trace_floor args: the same + the string read, one line to FILE",
}
#: The frames at `work` in bench_trace's `deep` mode: work, deep5..deep1, main,
#: __libc_start_call_main, __libc_start_main, _start.
DEEP_FRAMES = 10
#: The probe of the deep rows, with and without --stack: a callback with one fetch.
DEEP_ARGS = "a=%di:s64"


def program() -> Path:
    """The workload, built once into the cache under its own file name (the probe specs and
    the peers name it `bench_trace`)."""
    return toolchain.build("bench_trace.c", ("-O2", "-no-pie"), output="bench_trace",
                           filename=_EXE)


def floor() -> Path:
    """The C floor tracer of the traced rows (bench_trace_floor.c)."""
    return toolchain.build("bench_trace_floor.c", ("-O2",), output="bench_trace_floor")


@dataclass
class Row:
    """One row: the probed run and its baseline, each returning a Sample."""

    key: str
    probed: Callable[[], Sample]
    baseline: Callable[[], Sample]


def rows(n: int, workdir: Path) -> list[Row]:
    """Every row, in table order."""
    exe = os.path.realpath(program())
    argv = [exe, str(n)]
    deep = [exe, str(n), "deep"]
    out = workdir / "trace.out"

    def stepper(spec: str, extra: tuple[str, ...] = (), on: list[str] = argv
                ) -> Callable[[], Sample]:
        return lambda: _stepper(spec, extra, on, out)

    traced = ("--trace", "-o", str(out))
    return [
        Row("stepper_count", stepper(f"{_EXE}:work"), stepper(f"{_EXE}:main")),
        Row("stepper_args", stepper(f"{_EXE}:work {STEPPER_ARGS}", traced),
            stepper(f"{_EXE}:main", traced)),
        Row("stepper_return", stepper(f"{_EXE}:work%return {STEPPER_ARGS}", traced),
            stepper(f"{_EXE}:main%return", traced)),
        Row("ltrace", lambda: _ltrace("work", (), argv, workdir),
            lambda: _ltrace("main", (), argv, workdir)),
        Row("ltrace_L", lambda: _ltrace("work", ("-L",), argv, workdir),
            lambda: _ltrace("main", ("-L",), argv, workdir)),
        Row("gdb_dprintf", lambda: _gdb(True, argv, out), lambda: _gdb(False, argv, out)),
        Row("bpftrace", lambda: _bpftrace("work", exe, argv, out),
            lambda: _bpftrace("main", exe, argv, out)),
        Row("uftrace", lambda: _uftrace("work", argv, workdir),
            lambda: _uftrace("main", argv, workdir)),
        Row("stepper_fetch_deep", stepper(f"{_EXE}:work {DEEP_ARGS}", (), deep),
            stepper(f"{_EXE}:main", (), deep)),
        Row("stepper_stack_deep", stepper(f"{_EXE}:work {DEEP_ARGS}", ("--stack",), deep),
            stepper(f"{_EXE}:main", ("--stack",), deep)),
        Row("gdb_bt_deep", lambda: _gdb_bt(True, deep, workdir),
            lambda: _gdb_bt(False, deep, workdir)),
        Row("bpftrace_ustack_deep", lambda: _bpftrace_ustack("work", exe, deep, out),
            lambda: _bpftrace_ustack("main", exe, deep, out)),
        Row("c_floor_count", lambda: _c_floor("count", "work", exe, argv, out),
            lambda: _c_floor("count", "main", exe, argv, out)),
        Row("c_floor_args", lambda: _c_floor("args", "work", exe, argv, out),
            lambda: _c_floor("args", "main", exe, argv, out)),
    ]


def _timed(argv: list[str], what: str, stdout=subprocess.DEVNULL) -> int:
    """Run `argv`; its wall time in ns. A failure or a timeout makes the row unmeasurable."""
    start = time.perf_counter_ns()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                              stderr=subprocess.PIPE, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unmeasurable(f"{what} did not run: {e}") from None
    ns = time.perf_counter_ns() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [b"no output"])[-1]
        raise Unmeasurable(f"{what} failed (exit {proc.returncode}): "
                           f"{last.decode(errors='replace')}")
    return ns


def _count(path: Path, pattern: bytes) -> int:
    with open(path, "rb") as f:
        return len(re.findall(pattern, f.read(), re.M))


def _stepper(spec: str, extra: tuple[str, ...], argv: list[str], out: Path) -> Sample:
    report = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "stepper.cli", "probe", "--quiet", "--json", str(report),
           "-p", spec, *extra, "--", *argv]
    ns = _timed(cmd, "stepper probe")
    with open(report) as f:
        data = json.load(f)
    hits = sum(p["hits"] for p in data["probes"])
    if "--stack" in extra and "main" not in spec:  # every hit's stack, all of it
        stacks = [s for t in data["trace"] for s in t.get("stacks", ())]
        depths = {len(s["stack"]) for s in stacks}
        if sum(s["count"] for s in stacks) != hits or depths != {DEEP_FRAMES}:
            raise Unmeasurable(f"stepper read {sum(s['count'] for s in stacks)} stacks of "
                               f"{sorted(depths)} frames for {hits} hits, not "
                               f"{DEEP_FRAMES}-frame stacks for each")
    if "--trace" in extra and "main" not in spec:  # every hit must be in the trace too
        lines = _count(out, rb"^\S+ \d+ \S+:work")
        if lines != hits:
            raise Unmeasurable(f"stepper counted {hits} hits but traced {lines}")
    return Sample(hits, ns)


def _ltrace(symbol: str, extra: tuple[str, ...], argv: list[str], workdir: Path) -> Sample:
    exe = shutil.which("ltrace")
    if exe is None:
        raise Unmeasurable("ltrace is not installed (apt-get install ltrace)")
    conf = workdir / "work.conf"  # the prototype: ltrace prints the string, like the others
    conf.write_text("long work(long, string);\n")
    out = workdir / "ltrace.out"
    ns = _timed([exe, *extra, "-F", str(conf), "-o", str(out), "-x", symbol, *argv], "ltrace")
    return Sample(_count(out, rb"work\(" if symbol == "work" else rb"main\("), ns)


def _gdb(probed: bool, argv: list[str], out: Path) -> Sample:
    exe = shutil.which("gdb")
    if exe is None:
        raise Unmeasurable("gdb is not installed (apt-get install gdb)")
    script = ["set startup-with-shell off", "set pagination off"]
    if probed:
        script.append('dprintf work,"work %ld %lx %s\\n",$rdi,$rsi,(char*)$rsi')
    script.append("run")
    cmd = [exe, "-nx", "-batch", *(a for line in script for a in ("-ex", line)), "--args", *argv]
    with open(out, "wb") as f:
        ns = _timed(cmd, "gdb", stdout=f)
    return Sample(_count(out, rb"^work -?\d+ [0-9a-f]+ ") if probed else 0, ns)


def _bpftrace(symbol: str, exe: str, argv: list[str], out: Path) -> Sample:
    tool = shutil.which("bpftrace")
    if tool is None:
        raise Unmeasurable("bpftrace is not installed (apt-get install bpftrace)")
    if os.geteuid() != 0:
        raise Unmeasurable("bpftrace needs root (CAP_BPF and CAP_PERFMON)")
    prog = (f'uprobe:{exe}:{symbol} {{ printf("{symbol} %d %lx %s\\n", arg0, arg1, '
            f'str(arg1)); }}')
    ns = _timed([tool, "-o", str(out), "-e", prog, "-c", " ".join(argv)], "bpftrace")
    return Sample(_count(out, rb"^" + symbol.encode() + rb" -?\d+ [0-9a-f]+ "), ns)


def _gdb_bt(probed: bool, argv: list[str], workdir: Path) -> Sample:
    """gdb printing a backtrace at every call of `work` (its own CFI unwinder); the baseline
    sets no breakpoint. Hits are the `#0` lines of its output."""
    exe = shutil.which("gdb")
    if exe is None:
        raise Unmeasurable("gdb is not installed (apt-get install gdb)")
    script = ["set startup-with-shell off", "set pagination off"]
    if probed:
        script += ["set backtrace past-main on", "break work",
                   "commands", "silent", "bt", "continue", "end"]
    script.append("run")
    commands = workdir / "bt.gdb"     # a command list needs a file: -ex takes one line
    commands.write_text("\n".join(script) + "\n")
    out = workdir / "gdb_bt.out"
    with open(out, "wb") as f:
        ns = _timed([exe, "-nx", "-batch", "-x", str(commands), "--args", *argv], "gdb",
                    stdout=f)
    if not probed:
        return Sample(0, ns)
    hits, frames = _count(out, rb"^#0 "), _count(out, rb"^#\d+ ")
    if frames != hits * DEEP_FRAMES:
        raise Unmeasurable(f"gdb printed {frames} frames for {hits} hits")
    return Sample(hits, ns)


def _bpftrace_ustack(symbol: str, exe: str, argv: list[str], out: Path) -> Sample:
    """bpftrace printing the user stack at each call: the kernel walks frame pointers, so on
    this program (built without them) its stacks are short and partly wrong; a peer for the
    cost only. Hits are the stacks printed, each after a `stack` line."""
    tool = shutil.which("bpftrace")
    if tool is None:
        raise Unmeasurable("bpftrace is not installed (apt-get install bpftrace)")
    if os.geteuid() != 0:
        raise Unmeasurable("bpftrace needs root (CAP_BPF and CAP_PERFMON)")
    prog = f'uprobe:{exe}:{symbol} {{ printf("stack\\n"); print(ustack); }}'
    ns = _timed([tool, "-o", str(out), "-e", prog, "-c", " ".join(argv)], "bpftrace")
    return Sample(_count(out, rb"^stack$"), ns)


def _c_floor(mode: str, symbol: str, exe: str, argv: list[str], out: Path) -> Sample:
    """bench_trace_floor.c with the breakpoint on `symbol` (the program is -no-pie: its ELF
    symbol value is the run-time address): on `work` its instruction emulated at every call,
    on `main` (the baseline) one hit that removes the breakpoint. Hits are the count it
    prints; the args row's must also be the lines of its trace."""
    address = symbol_values(Path(exe), symbol)[0]
    cmd = [str(floor()), mode, "work" if symbol == "work" else "once", f"{address:x}",
           str(out) if mode == "args" else "-", *argv]
    start = time.perf_counter_ns()
    text = run_peer(cmd, "the C floor")
    ns = time.perf_counter_ns() - start
    match = re.search(rb"^bench_trace_floor: hits=(\d+)$", text, re.M)
    if match is None:
        raise Unmeasurable(f"the C floor printed no hit count: {text[-200:]!r}")
    hits = int(match[1])
    if mode == "args" and symbol == "work":
        lines = _count(out, rb"^\S+ \d+ bench_trace:work: a=-?\d+ p=0x[0-9a-f]+ s=\"")
        if lines != hits:
            raise Unmeasurable(f"the C floor counted {hits} hits but traced {lines}")
    return Sample(hits, ns)


def _uftrace(symbol: str, argv: list[str], workdir: Path) -> Sample:
    tool = shutil.which("uftrace")
    if tool is None:
        raise Unmeasurable("uftrace is not installed (apt-get install uftrace)")
    data = workdir / "uftrace.data"
    shutil.rmtree(data, ignore_errors=True)
    ns = _timed([tool, "record", "--no-libcall", "-d", str(data), "-P", symbol,
                 "-A", f"{symbol}@arg1,arg2/s", *argv], "uftrace record")
    with open(workdir / "uftrace.out", "wb") as f:  # replay, untimed: counts the calls
        _timed([tool, "replay", "-d", str(data)], "uftrace replay", stdout=f)
    return Sample(_count(workdir / "uftrace.out", symbol.encode() + rb"\("), ns)


def workdir() -> tempfile.TemporaryDirectory:
    """Where the traces go: a private temporary directory, removed after the bench."""
    return tempfile.TemporaryDirectory(prefix="stepper-bench-trace-")
