"""Fixtures for the engine tests: tracees compiled once per session with gcc, symbol and
instruction lookup in them (pyelftools + emu.decode), and runners for unprobed runs, probed
runs through the library, and probed runs through `stepper probe`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import emu

TRACEES = Path(__file__).parent / "tracees"

#: name -> (sources, gcc flags)
PROGRAMS = {
    "probes": (["probes.c"], ["-O2", "-fno-plt", "-fstack-protector-all",
                              "-fno-omit-frame-pointer"]),
    "asmmain": (["asmmain.c", "asmops.S"], ["-O1"]),
    "faults": (["faults.c", "asmops.S"], ["-O1"]),
    "threads": (["threads.c", "asmops.S"], ["-O1", "-pthread"]),
    "threads_nopie": (["threads.c", "asmops.S"], ["-O1", "-pthread", "-no-pie"]),
    "layout": (["layout.c"], ["-O1"]),
    "killself": (["killself.c"], ["-O1"]),
    "signals": (["signals.c"], ["-O1"]),
    "execer": (["execer.c"], ["-O1"]),
    "family": (["family.c"], ["-O1", "-g"]),
    "family_other": (["family.c"], ["-O1", "-DOTHER"]),
    "affinity": (["affinity.c"], ["-O1", "-pthread"]),
}


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """build(name) -> path of the compiled tracee (compiled on first use in the session)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the tracees")
    out = tmp_path_factory.mktemp("tracees")
    built: dict[str, str] = {}

    def _build(name: str) -> str:
        if name not in built:
            sources, flags = PROGRAMS[name]
            exe = out / name
            subprocess.run(["gcc", *flags, "-o", str(exe), *(str(TRACEES / s) for s in sources)],
                           check=True)
            built[name] = str(exe)
        return built[name]

    return _build


def symbol(exe: str, name: str) -> tuple[int, int]:
    """(address as nm prints it, size) of symbol `name` in `exe`."""
    with open(exe, "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym.name == name:
                return sym["st_value"], sym["st_size"]
    raise KeyError(name)


def instructions(exe: str, function: str) -> list[emu.Instruction]:
    """Every instruction of `function`, decoded from the file (link-time addresses)."""
    address, size = symbol(exe, function)
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= address < seg["p_vaddr"] + seg["p_filesz"]:
                f.seek(seg["p_offset"] + address - seg["p_vaddr"])
                code = f.read(size)
                break
        else:
            raise KeyError(function)
    result, pc = [], address
    while pc < address + size:
        insn = emu.decode(code[pc - address:], pc)
        result.append(insn)
        pc = insn.next_address
    return result


@dataclass
class Run:
    stdout: bytes
    stderr: bytes
    returncode: int
    report: dict | None = None


def run_plain(argv: list[str], timeout: float = 60) -> Run:
    p = subprocess.run(argv, capture_output=True, timeout=timeout)
    return Run(p.stdout, p.stderr, p.returncode)


def run_cli(argv: list[str], addresses: list[int], mode: str = "auto", tmp_path=None,
            timeout: float = 120) -> Run:
    """`stepper probe` in a subprocess; the JSON report is read back when tmp_path is given."""
    cmd = [sys.executable, "-m", "stepper.cli", "probe", "--mode", mode, "--quiet"]
    report_path = None
    if tmp_path is not None:
        report_path = tmp_path / f"report-{len(os.listdir(tmp_path))}.json"
        cmd += ["--json", str(report_path)]
    for a in addresses:
        cmd += ["-p", hex(a)]
    p = subprocess.run(cmd + ["--", *argv], capture_output=True, timeout=timeout)
    report = None
    if report_path is not None and report_path.exists():
        report = json.loads(report_path.read_text())
    return Run(p.stdout, p.stderr, p.returncode, report)


def probe_specs(tmp_path, specs: list[str], argv: list[str], *options: str,
                timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict | None]:
    """`stepper probe --json ... -p SPEC... -- ARGV` in a subprocess, text mode, with the table
    on stderr; the JSON report read back (None if none was written)."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*.json')))}.json"
    cmd = [sys.executable, "-m", "stepper.cli", "probe", "--json", str(report), *options]
    for spec in specs:
        cmd += ["-p", spec]
    run = subprocess.run(cmd + ["--", *argv], capture_output=True, timeout=timeout, text=True)
    return run, (json.loads(report.read_text()) if report.exists() else None)


@pytest.fixture
def spawn_captured(tmp_path):
    """spawn_captured(argv, mode) -> (Process, path its stdout goes to), via the library."""
    from stepper import api

    made = []

    def _spawn(argv: list[str], mode: str = "auto"):
        out = tmp_path / f"stdout-{len(made)}"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        saved = os.dup(1)
        try:
            os.dup2(fd, 1)
            proc = api.spawn(argv, mode)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(fd)
        made.append(proc)
        return proc, out

    yield _spawn
    for proc in made:  # a test that failed half-way must not leave a stopped tracee behind
        if proc._session.threads and not proc._session._closed:
            proc.kill()


@contextmanager
def ended(*procs: subprocess.Popen):
    """Kill and reap whichever of `procs` still runs when the block is left (a failed
    assertion or a timeout must not leave a traced or tracing process behind)."""
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def start_tracer(tmp_path, source: str) -> subprocess.Popen:
    """Run `source` (a tracer written with stepper.api) in a Python subprocess, so that a
    hang, a signal or a detach in it cannot take pytest down; stdout and stderr piped."""
    script = tmp_path / f"tracer-{len(list(tmp_path.glob('tracer-*.py')))}.py"
    script.write_text(source)
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


# -- the counter program of test_specs and test_symbols ---------------------------------------

#: The C program those tests build as PIE and non-PIE: it prints `&t_one` and
#: dlsym(getpid) (the runtime ground truth), then, given an argument, waits for a byte on
#: stdin so that its maps can be read while it runs. @THIRD@ is a third function,
#: @BEFORE_MAIN@ text just before main, @RESULT@ main's return expression.
COUNTER_PROGRAM = textwrap.dedent("""\
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <stdio.h>
    #include <unistd.h>
    int counter;
    __attribute__((noinline)) int t_one(int x) {
        counter += x;
        return counter * 2;
    }
    __attribute__((noinline)) int t_two(int x) { return t_one(x) + 1; }
    @THIRD@
    int t_one_alias(int x) __attribute__((alias("t_one")));

    @BEFORE_MAIN@int main(int argc, char **argv) {
        printf("%p %p\\n", (void *)&t_one, dlsym(RTLD_DEFAULT, "getpid"));
        fflush(stdout);
        char c;
        if (argc > 1 && read(0, &c, 1) < 0) return 1;
        return @RESULT@;
    }
    """)
LINE_OF_COUNTER = COUNTER_PROGRAM.splitlines().index("    counter += x;") + 1


def counter_program(third: str, result: str, before_main: str = "") -> str:
    """COUNTER_PROGRAM with its third function, the text before main and main's result."""
    return (COUNTER_PROGRAM.replace("@THIRD@", third).replace("@BEFORE_MAIN@", before_main)
            .replace("@RESULT@", result))


def gcc(out, *args) -> str:
    """`gcc -O1 -o out args...` (later flags win); the path of what it built."""
    subprocess.run(["gcc", "-O1", "-o", str(out), *map(str, args)], check=True)
    return str(out)


def build_pie_and_nopie(d: Path, program: str) -> dict:
    """`program` written to d/prog.c and built as d/pie (with -g) and d/nopie (without):
    {"dir": d, "pie": path, "nopie": path}."""
    (d / "prog.c").write_text(program)
    return {
        "dir": d,
        "pie": gcc(d / "pie", "-g", "-fPIE", "-pie", d / "prog.c"),
        "nopie": gcc(d / "nopie", "-fno-pie", "-no-pie", d / "prog.c"),
    }


@pytest.fixture(params=["pie", "nopie"])
def exe(request, build):
    """The PIE and then the non-PIE build, for modules whose own `build` fixture returns
    build_pie_and_nopie's dict (it overrides the session `build` above in those modules)."""
    return build[request.param]


@pytest.fixture
def running(exe):
    """The program, paused on a read from its stdin after printing &t_one and getpid."""
    proc = subprocess.Popen([exe, "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        t_one, getpid = (int(x, 16) for x in proc.stdout.readline().split())
        yield proc, exe, t_one, getpid
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
