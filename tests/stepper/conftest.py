"""Fixtures for the engine tests: tracees compiled once per session with gcc, probed runs
through the library, tracers in a subprocess, and the PIE/non-PIE counter program while it
runs. The plain helpers they use (symbol and instruction lookup, runners of `stepper probe`,
gcc) are in tests/support, which test modules import directly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support.programs import PROGRAMS, TRACEES


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
            compiler = "g++" if any(s.endswith(".cpp") for s in sources) else "gcc"
            subprocess.run([compiler, *flags, "-o", str(exe),
                            *(str(TRACEES / s) for s in sources)], check=True)
            built[name] = str(exe)
        return built[name]

    return _build


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
        if proc._session.threads and not proc._session.closed:
            proc.kill()


@pytest.fixture
def start_tracer(tmp_path):
    """start_tracer(source) -> Popen: `source` (a tracer written with stepper.api) run in a
    Python subprocess, so that a hang, a signal or a detach in it cannot take pytest down;
    stdout and stderr piped. One still running at the end of the test is killed and reaped."""
    started: list[subprocess.Popen] = []

    def _start(source: str) -> subprocess.Popen:
        script = tmp_path / f"tracer-{len(started)}.py"
        script.write_text(source)
        p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        started.append(p)
        return p

    yield _start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def stopped_tracee(build):
    """(pid, exe) of the `layout` tracee under ptrace (python-ptrace's PTRACE_TRACEME child,
    no engine), in a ptrace stop at its own SIGSTOP in main: libc loaded, rw/r/none pages
    mapped. Killed and reaped at the end of the test."""
    import signal

    from ptrace.debugger.child import createChild

    from stepper import kernel

    exe = build("layout")
    pid = createChild([exe], True)
    try:
        _, status = os.waitpid(pid, kernel.WALL)  # the exec stop
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
        kernel.cont(pid)
        _, status = os.waitpid(pid, kernel.WALL)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
        yield pid, exe
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, kernel.WALL)


@pytest.fixture(params=["pie", "nopie"])
def exe(request, build):
    """The PIE and then the non-PIE build, for modules whose own `build` fixture returns
    tests.support.programs.build_pie_and_nopie's dict (it overrides the session `build` above in those modules)."""
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
