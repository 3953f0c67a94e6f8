"""Under fire: signals in the middle of out-of-line steps, fork/vfork/exec,
attach/detach, and the traps GDB 13.1 falls into. Every tracee is compiled here from
tests/stepper/tracees/uf_*; every comparison is against the same program run unprobed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.support.elf import symbol
from tests.support.runs import ended, run_plain
from stepper import api, maps
from stepper.errors import StepperError

TRACEES = Path(__file__).parent / "tracees"


@pytest.fixture(scope="module")
def uf(tmp_path_factory):
    """Paths of the compiled uf_* tracees (built once for the module)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the tracees")
    out = tmp_path_factory.mktemp("uf")

    def gcc(*args):
        subprocess.run(["gcc", *map(str, args)], check=True, cwd=out)

    gcc("-O1", "-pthread", "-o", "uf_storm", TRACEES / "uf_storm.c")
    gcc("-O1", "-o", "uf_fork", TRACEES / "uf_fork.c")
    gcc("-O1", "-o", "uf_traps", TRACEES / "uf_traps.c", TRACEES / "uf_traps.S")
    gcc("-O1", "-pthread", "-o", "uf_busy", TRACEES / "uf_busy.c")
    gcc("-O1", "-pthread", "-o", "uf_exit", TRACEES / "uf_exit.c")
    gcc("-shared", "-fPIC", "-o", "libufscratch.so", TRACEES / "uf_scratch.S")
    gcc("-O1", "-o", "uf_scratch", TRACEES / "uf_scratch_main.c", f"-L{out}", "-lufscratch",
        f"-Wl,-rpath,{out}")
    return {name: str(out / name) for name in
            ("uf_storm", "uf_fork", "uf_traps", "uf_busy", "uf_exit", "uf_scratch",
             "libufscratch.so")}


@pytest.fixture(scope="module")
def busy_expected(uf):
    """What uf_busy prints unprobed (it is deterministic)."""
    return run_plain([uf["uf_busy"]]).stdout


def spawn_to(tmp_path, argv, **kw):
    """api.spawn with the program's stdout going to a file; returns (proc, path)."""
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        proc = api.spawn(argv, **kw)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
    return proc, out


def at(proc, exe, name):
    return proc.load_bias + symbol(exe, name)[0]


# --- 1. signals in the middle of a step -------------------------------------------------

@pytest.mark.parametrize("mode", ["xol", "auto", "boost"])
def test_sigalrm_storm_four_threads_loses_no_signal_and_no_hit(uf, tmp_path, mode):
    exe, iters = uf["uf_storm"], 500
    plain = run_plain([exe, str(iters)])
    first = plain.stdout.splitlines()[0]
    assert first.endswith(b" rt=400 bad_rip=0 handler_sum_ok=1")
    proc, out = spawn_to(tmp_path, [exe, str(iters)], mode=mode)
    bp = proc.break_at(at(proc, exe, "xwork"))
    seen = []
    bp.callback = lambda hit: seen.append(hit.tid)
    status = proc.run()
    assert status.exit_code == 0
    lines = out.read_bytes().splitlines()
    assert lines[0] == first  # every real-time signal arrived, no handler saw an XOL RIP
    # The workers' calls and one per real-time signal (its handler calls xwork): exactly.
    assert bp.stats.hits == 4 * iters + 400
    assert len(seen) == bp.stats.hits  # abandoned steps were not reported twice
    alarms = int(lines[1].split(b"=")[1])
    assert alarms > 0
    if mode == "xol":
        assert bp.stats.xol == bp.stats.hits + bp.stats.abandoned


# --- 4. the traps GDB falls into --------------------------------------------------------

TRAP_SITES = ("tf_site_add", "tf_site_lea", "tf_site_load", "tf_site_pushf", "tf_site_popf",
              "own_int3", "own_int3_after", "pushf_site", "pushf_site_pop", "rz_site_xol",
              "rz_site_emu", "redzone")


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_traps_tf_int3_pushf_redzone_entry_match_unprobed(uf, tmp_path, mode):
    exe = uf["uf_traps"]
    plain = run_plain([exe])
    text = plain.stdout.decode()
    assert "pushf: tf 0" in text and "redzone: 0 bytes changed" in text
    assert "fixed maps: 1 1 brk grew 1" in text and "redzone again: 0 bytes" in text
    assert text.count("code 2 ") == 9  # nine single-step traps in the TF window
    proc, out = spawn_to(tmp_path, [exe], mode=mode)
    bps = {name: proc.break_at(at(proc, exe, name)) for name in TRAP_SITES}
    status = proc.run()
    assert (out.read_bytes(), status.exit_code) == (plain.stdout, plain.returncode)
    twice = {"rz_site_xol", "rz_site_emu", "redzone"}  # redzone() runs again after the maps
    assert {n: b.stats.hits for n, b in bps.items()} == {
        n: 2 if n in twice else 1 for n in TRAP_SITES}
    if mode == "xol":
        assert bps["rz_site_xol"].strategy == bps["tf_site_pushf"].strategy == "xol"


def test_probe_at_entry_point_and_area_not_there(uf, tmp_path):
    """The XOL area is its own mapping below the executable, never at the entry point (GDB
    displaces steps to the entry point): the program checksums its entry bytes and sees
    them unchanged. (A probe *at* the entry would show its 0xcc there: docs/under_fire.md.)"""
    exe = uf["uf_traps"]
    plain = run_plain([exe])
    proc, out = spawn_to(tmp_path, [exe], mode="xol")
    bias = proc.load_bias
    with open(exe, "rb") as f:
        entry = bias + ELFFile(f).header["e_entry"]
    proc.break_at(at(proc, exe, "rz_site_xol"))
    areas = []
    proc.break_at(at(proc, exe, "rz_site_emu"), callback=lambda hit: areas.append(
        [(m.start, m.end) for m in maps.read(proc.pid) if not m.path and m.executable]))
    status = proc.run()
    assert (out.read_bytes(), status.exit_code) == (plain.stdout, plain.returncode)
    # Mapped by the first out-of-line step, before this hit; still there, the same, after the
    # program's MAP_FIXED mappings.
    area, again = areas
    assert len(area) == 1 and area[0] in again
    assert not area[0][0] <= entry < area[0][1] and area[0][1] <= bias


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_scratch_register_never_one_the_instruction_uses(uf, tmp_path, mode):
    exe, lib = uf["uf_scratch"], uf["libufscratch.so"]
    plain = run_plain([exe])
    assert plain.returncode == 0
    proc, out = spawn_to(tmp_path, [exe], mode=mode)
    sites = ("sc_shl", "sc_cmpxchg", "sc_mul", "sc_div", "sc_cmpxchg16b", "sc_mulx",
             "sc_pcmpestri", "sc_rep")
    added = []

    def at_main(hit):  # the library is mapped by now: probe its sites
        if added:
            return
        base = min(m.start for m in maps.read(proc.pid) if m.path == os.path.realpath(lib))
        for name in sites:
            added.append(proc.break_at(base + symbol(lib, name)[0]))

    proc.break_at(at(proc, exe, "main"), callback=at_main)
    status = proc.run()
    assert (out.read_bytes(), status.exit_code) == (plain.stdout, plain.returncode)
    assert [bp.stats.hits for bp in added] == [1] * len(sites)
    if mode == "xol":
        assert all(bp.strategy == "xol" for bp in added)


# --- 2. fork, vfork, exec ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
@pytest.mark.parametrize("children", ["follow", "detach"])
def test_fork_child_calls_the_probed_function(uf, tmp_path, mode, children):
    exe = uf["uf_fork"]
    plain = run_plain([exe, "fork"])
    assert b"child 3280" in plain.stdout
    proc, out = spawn_to(tmp_path, [exe, "fork"], mode=mode, children=children)
    bp = proc.break_at(at(proc, exe, "fwork"))
    status = proc.run()
    assert (out.read_bytes(), status.exit_code) == (plain.stdout, plain.returncode)
    assert bp.stats.hits == 5  # the parent's own: 3 before, 2 after
    (child,) = proc.children
    (child_bp,) = child.breakpoints
    if children == "follow":
        assert child_bp.stats.hits == 5 and child.exit.exit_code == 7
    else:
        assert child_bp.stats.hits == 0 and child.exit is None  # let go untraced


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
@pytest.mark.parametrize("children", ["follow", "detach"])
def test_vfork_then_exec_of_another_program(uf, tmp_path, mode, children):
    """The vfork child hits the probe in the memory it shares with its parent, then execs
    another program (uf_traps, which the probe address means nothing to): the parent's
    memory is intact and the new image runs unprobed, exactly as unprobed."""
    exe, other = uf["uf_fork"], uf["uf_traps"]
    plain = run_plain([exe, "vfork", other])
    assert b"vfork child wrote 1093" in plain.stdout and b"entry bytes" in plain.stdout
    proc, out = spawn_to(tmp_path, [exe, "vfork", other], mode=mode, children=children)
    bp = proc.break_at(at(proc, exe, "fwork"))
    status = proc.run()
    assert (out.read_bytes(), status.exit_code) == (plain.stdout, plain.returncode)
    assert bp.stats.hits == 5
    (child,) = proc.children
    assert child.breakpoints == []  # dropped at exec
    assert sum(b.stats.hits for b in child.retired_breakpoints) == 4


def test_children_still_running_when_the_program_exits_are_let_go(uf, tmp_path):
    """The parent exits first: run() returns its status and the followed child is detached
    with its INT3 bytes restored, so it runs on (it would die of SIGTRAP otherwise)."""
    exe = uf["uf_fork"]
    plain = run_plain([exe, "orphan"])  # waits for the pipe: the orphan's line included
    assert plain.stdout.endswith(b"orphan 3280\n") and plain.returncode == 3
    proc, out = spawn_to(tmp_path, [exe, "orphan"], mode="xol")
    bp = proc.break_at(at(proc, exe, "fwork"))
    status = proc.run()
    assert status.exit_code == 3 and bp.stats.hits == 3
    for _ in range(200):  # the orphan prints 300 ms after its parent's exit
        if out.read_bytes().endswith(b"orphan 3280\n"):
            break
        time.sleep(0.05)
    assert out.read_bytes() == plain.stdout


def test_exec_self_drops_breakpoints(uf, tmp_path):
    exe = uf["uf_fork"]
    plain = run_plain([exe, "vfork", exe])
    assert b"plain image 31" in plain.stdout
    proc, out = spawn_to(tmp_path, [exe, "vfork", exe], mode="xol")
    bp = proc.break_at(at(proc, exe, "fwork"))
    status = proc.run()
    assert (out.read_bytes(), status.exit_code) == (plain.stdout, plain.returncode)
    assert bp.stats.hits == 5  # the exec'd image's call to fwork is not counted


# --- 3. attach and detach ---------------------------------------------------------------

def _start_busy(exe):
    p = subprocess.Popen([exe], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    return p


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_attach_busy_process_probe_a_second_detach(uf, busy_expected, mode):
    exe, expected = uf["uf_busy"], busy_expected
    p = _start_busy(exe)
    with ended(p):
        proc = api.attach(p.pid, mode=mode)
        assert proc.attached and proc.threads_seen >= 1
        bp = proc.break_at(at(proc, exe, "bwork"))
        timer = threading.Timer(1.0, proc.detach)  # from another thread
        timer.start()
        status = proc.run()
        timer.join()
        assert status.detached and status.exit_code is None and status.signal is None
        assert bp.stats.hits > 0
        assert proc.threads_seen > 1  # threads created while traced were followed
        rest, _ = p.communicate(timeout=60)
    assert b"ready\n" + rest == expected and p.returncode == 0


def test_sigterm_to_tracer_detaches(uf, busy_expected, start_tracer):
    """SIGTERM to a tracer that attached: the program is detached and finishes normally."""
    exe, expected = uf["uf_busy"], busy_expected
    p = _start_busy(exe)
    tracer = start_tracer(
        "from stepper import api\n"
        f"proc = api.attach({p.pid})\n"
        "seen = []\n"
        "def first(hit):\n"
        "    if not seen:\n"
        "        seen.append(1)\n"
        "        print('hit', flush=True)\n"
        f"proc.break_at(proc.load_bias + {symbol(exe, 'bwork')[0]}, callback=first)\n"
        "status = proc.run()\n"
        "print('detached' if status.detached else status, flush=True)\n")
    with ended(p, tracer):
        assert tracer.stdout.readline() == b"hit\n"
        tracer.send_signal(signal.SIGTERM)
        out, err = tracer.communicate(timeout=60)
        assert out == b"detached\n", err
        rest, _ = p.communicate(timeout=60)
    assert b"ready\n" + rest == expected and p.returncode == 0


def test_detach_while_the_program_exits(uf, start_tracer):
    """A detach requested from a probe just before the program's exit_group. Usually the
    leader is in exit_group before stepper's SIGSTOP reaches it: it is reported only once
    every other thread was reaped, so waiting for the leader alone waited forever, and
    restoring the INT3 bytes of a process whose memory is gone raised. run() then returns
    how the program ended. If the SIGSTOP wins, the program is let go and exits by itself.
    Either way: no hang, no traceback, and the program's own exit status."""
    exe = uf["uf_exit"]
    tracer = start_tracer(
        "import os\n"
        "from stepper import api\n"
        f"proc = api.spawn([{exe!r}])\n"
        f"proc.break_at(proc.load_bias + {symbol(exe, 'leave_now')[0]},\n"
        "              callback=lambda hit: proc.detach())\n"
        "status = proc.run()\n"
        "if status.detached:  # let go first: it is still our child\n"
        "    code = os.waitstatus_to_exitcode(os.waitpid(proc.pid, 0)[1])\n"
        "else:\n"
        "    code = status.exit_code\n"
        "print(code, flush=True)\n")
    with ended(tracer):
        out, err = tracer.communicate(timeout=60)
    assert (tracer.returncode, out) == (0, b"7\n"), err


def test_attach_to_a_process_whose_main_thread_exited(uf):
    """pthread_exit in main leaves a zombie leader, which PTRACE_ATTACH refuses: a one-line
    error that says so, and the running threads are left untraced."""
    p = subprocess.Popen([uf["uf_exit"], "main-exits"])
    with ended(p):
        deadline = time.monotonic() + 30
        while _state(p.pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(StepperError, match="its main thread has exited"):
            api.attach(p.pid)
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            with open(f"/proc/{p.pid}/task/{tid}/status") as f:
                assert "TracerPid:\t0\n" in f.read()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_attach_refusals_are_one_line(uf):
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(StepperError, match=f"no process {dead.pid}"):
        api.attach(dead.pid)
    with pytest.raises(StepperError, match="stepper itself"):
        api.attach(os.getpid())
    with pytest.raises(StepperError, match="not a process id"):
        api.attach(-5)
    p = _start_busy(uf["uf_busy"])
    with ended(p):
        first = api.attach(p.pid)
        with pytest.raises(StepperError, match="not permitted"):
            api.attach(p.pid)  # already traced
        tid = max(first._session.threads)  # attached and stopped: it cannot go away
        if tid != p.pid:
            with pytest.raises(StepperError, match="is a thread of process"):
                api.attach(tid)
        first.detach()
        rest, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and rest.startswith(b"total=")


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_tracer_exception_detaches_attached_process(uf, busy_expected, mode):
    """A callback that raises: the exception propagates out of run() after the program was
    detached unharmed; it finishes with the output it would have had."""
    exe, expected = uf["uf_busy"], busy_expected
    p = _start_busy(exe)
    with ended(p):
        proc = api.attach(p.pid, mode=mode)
        calls = []

        def boom(hit):
            calls.append(hit.tid)
            if len(calls) == 300:
                raise RuntimeError("tracer bug")

        bp = proc.break_at(at(proc, exe, "bwork"), callback=boom)
        with pytest.raises(RuntimeError, match="tracer bug"):
            proc.run()
        assert bp.stats.hits >= 300
        rest, _ = p.communicate(timeout=60)
    assert b"ready\n" + rest == expected and p.returncode == 0
