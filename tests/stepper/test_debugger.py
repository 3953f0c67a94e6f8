"""The debugger's all-stop control (stepper.debugger through stepper.api): cont() returning
Stops, registers and memory changed and seen by the program, single steps compared with the
disassembly, caught signals, interrupt(), the exit; real tracees (tracees/debuggee.c)."""

import os
import signal
import struct
import subprocess
import threading

import pytest

from stepper import api, maps
from stepper.errors import StepperError
from tests.support.elf import instructions, symbol
from tests.support.programs import TRACEES, gcc


def _at(proc, exe, name):
    return proc.load_bias + symbol(exe, name)[0]


def test_a_named_libc_function_not_loaded_yet_stops_when_it_is(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    bp = proc.break_at("libc.so.6:getpid")
    assert bp.pending and bp.locations == []  # libc is not mapped at the exec stop
    stop = proc.cont()
    assert stop.kind == "breakpoint" and stop.breakpoint is bp
    assert stop.thread.regs["rip"] in bp.locations and not bp.pending
    assert proc.read(stop.thread.regs["rip"], 1) != b"\xcc"  # the program's own byte
    stop = proc.cont()
    assert stop.kind == "exit" and stop.exit.exit_code == 3
    assert stop.exit == proc.exit
    assert f"pid={proc.pid}" in out.read_text()
    assert bp.hits == 1
    with pytest.raises(StepperError, match="exited"):
        proc.cont()


def test_an_argument_register_changed_at_a_stop_changes_the_output(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_at(proc, exe, "add"))
    stop = proc.cont()
    assert stop.kind == "breakpoint" and stop.thread.regs["rdi"] == 2
    stop.thread.regs["edi"] = 40
    assert stop.thread.regs["rdi"] == 40
    stop = proc.cont()  # caller(5) calls add(5, 1)
    assert stop.kind == "breakpoint" and stop.thread.regs["rdi"] == 5
    proc.cont()
    text = out.read_text()
    assert "add=43" in text and "caller=12" in text


def test_moving_rip_skips_the_displaced_instruction(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_at(proc, exe, "add"))
    stop = proc.cont()
    regs = stop.thread.regs
    ret = int.from_bytes(proc.read(regs["rsp"], 8), "little")
    regs["rip"], regs["rsp"], regs["rax"] = ret, regs["rsp"] + 8, 99  # return 99 at once
    proc.cont()
    proc.cont()
    assert "add=99" in out.read_text()


def test_memory_written_at_a_stop_is_what_the_program_sees(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_at(proc, exe, "show"))
    assert proc.cont().kind == "breakpoint"
    proc.write(_at(proc, exe, "message"), b"patched\0")
    assert proc.cont().kind == "exit"
    assert "message=patched" in out.read_text()


def test_a_write_over_a_breakpoint_keeps_it_and_changes_its_instruction(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    add = _at(proc, exe, "add")
    first = instructions(exe, "add")[0]
    assert first.bytes == bytes.fromhex("8d0437")  # lea (%rdi,%rsi,1),%eax
    bp = proc.break_at(add, temporary=True, ignore=1)  # the first stop is caller's add(5, 1)
    proc.write(add, bytes.fromhex("8d043f"))  # lea (%rdi,%rdi,1),%eax: add(a, b) = 2a
    assert proc.read(add, 3) == bytes.fromhex("8d043f")
    with open(f"/proc/{proc.pid}/mem", "rb") as mem:
        mem.seek(add)
        assert mem.read(1) == b"\xcc"  # the INT3 stayed
    stop = proc.cont()
    assert stop.kind == "breakpoint" and stop.breakpoint is bp and stop.thread.regs["rdi"] == 5
    assert bp.locations == []  # temporary: gone after its stop
    proc.cont()
    text = out.read_text()
    assert "add=4" in text and "caller=20" in text
    assert bp.hits == 2


def test_a_write_to_an_unmapped_address_is_one_line(build, spawn_captured):
    exe = build("debuggee")
    proc, _ = spawn_captured([exe, "args"])
    with pytest.raises(StepperError, match="not mapped") as e:
        proc.write(8, b"x")
    assert "\n" not in str(e.value)
    proc.kill()


def test_a_caught_signal_stops_and_can_be_suppressed(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "signal"])
    proc.catch(signal.SIGUSR1)
    stop = proc.cont()
    assert stop.kind == "signal" and stop.signal == signal.SIGUSR1
    stop = proc.cont(signal=0)
    assert stop.kind == "exit" and stop.exit.exit_code == 3
    assert out.read_text() == "done\n"


def test_a_caught_signal_is_delivered_by_default(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "signal"])
    proc.catch(signal.SIGUSR1)
    assert proc.cont().kind == "signal"
    assert proc.cont().kind == "exit"
    assert out.read_text() == "got usr1\ndone\n"


def test_bad_catches_are_refused():
    proc = api.spawn(["true"])
    try:
        for bad in ("vfork-done", 0, signal.SIGKILL):
            with pytest.raises(StepperError):
                proc.catch(bad)
    finally:
        proc.kill()


def test_interrupt_stops_a_running_program(build, spawn_captured):
    exe = build("debuggee")
    proc, _ = spawn_captured([exe, "spin"])
    timer = threading.Timer(0.3, proc.interrupt)
    timer.start()
    stop = proc.cont()
    timer.join()
    assert stop.kind == "interrupt" and stop.thread.tid == proc.pid
    assert maps.find(maps.read(proc.pid), stop.thread.regs["rip"]).path.endswith("debuggee")
    proc.interrupt()  # outside cont(): the next one returns at once
    assert proc.cont().kind == "interrupt"
    proc.kill()


def test_a_pending_spec_in_a_dlopened_library_stops_there(tmp_path, spawn_captured):
    plugin = gcc(tmp_path / "names_plugin.so", "-shared", "-fPIC", TRACEES / "names_plugin.c")
    dl = gcc(tmp_path / "dl", TRACEES / "names_dl.c", "-ldl")
    proc, out = spawn_captured([dl, plugin, "3"])
    bp = proc.break_at("names_plugin.so:plug_fn")
    assert bp.pending
    args = []
    while (stop := proc.cont()).kind == "breakpoint":
        assert stop.breakpoint is bp
        args.append(stop.thread.regs["rdi"])
    assert args == [0, 1, 2] and stop.exit.exit_code == 0
    assert "sum=" in out.read_text()


def test_exec_is_caught_and_a_spec_is_resolved_again_in_the_new_image(build, spawn_captured):
    exe = build("execer")
    proc, out = spawn_captured([exe, "again"])
    bp = proc.break_at("execer:f")
    proc.catch("exec")
    kinds = []
    while (stop := proc.cont()).kind != "exit":
        kinds.append(stop.kind)
    assert kinds == ["breakpoint"] * 3 + ["exec"] + ["breakpoint"] * 3
    assert stop.exit.exit_code == 5 and out.read_text() == "n=3\nn=3\n"
    assert bp.hits == 6


def test_fork_is_caught_only_when_asked(build, spawn_captured, tmp_path):
    exe = build("family")
    other = build("family_other")
    proc, out = spawn_captured([exe, other])
    proc.catch("fork")
    kinds = []
    while (stop := proc.cont()).kind != "exit":
        kinds.append((stop.kind, stop.thread.tid))
    assert kinds == [("fork", proc.pid), ("fork", proc.pid)]
    assert stop.exit.exit_code == 3
    assert out.read_text().count("pid=") == 4


def test_an_xmm_register_changed_at_a_stop_changes_the_output(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_at(proc, exe, "half"))
    t = proc.cont().thread
    assert struct.unpack("<d", (t.regs["xmm0"] & (2**64 - 1)).to_bytes(8, "little")) == (9.0,)
    t.regs["xmm0"] = int.from_bytes(struct.pack("<d", 50.0), "little")
    assert proc.cont().kind == "exit"
    assert "half=25\n" in out.read_text()


def test_an_attached_process_stops_at_a_spec_and_is_let_go_unharmed(build):
    exe = build("debuggee")
    program = subprocess.Popen([exe, "busy"], stdout=subprocess.PIPE)
    try:
        proc = api.attach(program.pid)
        bp = proc.break_at("debuggee:marker")
        assert len(bp.locations) == 1
        args = [proc.cont().thread.regs["rdi"] for _ in range(3)]
        assert args == [args[0], args[0] + 1, args[0] + 2]
        proc.detach()
        out, _ = program.communicate(timeout=60)
        assert out == b"busy done\n" and program.returncode == 3
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()


def test_a_signal_given_at_a_breakpoint_runs_its_handler_first(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "signal"])
    bp = proc.break_at("debuggee:on_usr1")
    stop = proc.cont()  # in the handler
    assert stop.kind == "breakpoint" and stop.thread.regs["rdi"] == signal.SIGUSR1
    # SIGUSR1 is blocked in its handler: pending until the first run returns, then a second
    # run; the first one's way back to the breakpoint is the same hit, not a new stop
    stop = proc.cont(signal=signal.SIGUSR1)
    assert stop.kind == "breakpoint" and stop.breakpoint is bp
    assert proc.cont().kind == "exit"
    assert out.read_text() == "got usr1\ngot usr1\ndone\n"
    assert bp.hits == 2


def test_interrupt_from_a_signal_handler(build, spawn_captured):
    exe = build("debuggee")
    proc, _ = spawn_captured([exe, "spin"])
    previous = signal.signal(signal.SIGALRM, lambda *_: proc.interrupt())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        stop = proc.cont()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stop.kind == "interrupt"
    before = stop.thread.regs["rip"]
    assert stop.thread.step().kind == "step" and stop.thread.regs["rip"] != before
    proc.kill()


def test_detach_after_a_stop_applies_registers_and_keeps_a_caught_signal(build,
                                                                       spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_at(proc, exe, "add"))
    proc.cont().thread.regs["rdi"] = 40
    proc.detach()
    _, status = os.waitpid(proc.pid, 0)
    assert os.WEXITSTATUS(status) == 3 and "add=43" in out.read_text()

    proc, out = spawn_captured([exe, "signal"])
    proc.catch(signal.SIGUSR1)
    assert proc.cont().kind == "signal"
    proc.detach()
    _, status = os.waitpid(proc.pid, 0)
    assert os.WEXITSTATUS(status) == 3 and out.read_text() == "got usr1\ndone\n"


# --- finish(): a return breakpoint matched by thread and stack pointer ---------------------

def test_finish_in_a_recursive_function_returns_that_level_s_value(build, spawn_captured):
    """fib(12) recurses through one return address; finish() from the fib(5) frame must
    come back with fib(5), not with an inner level's value at the same address."""
    exe = build("returns")
    proc, out = spawn_captured([exe, "fib"])
    bp = proc.break_at(_at(proc, exe, "fib"), condition=lambda hit: hit.regs["rdi"] == 5)
    stop = proc.cont()
    assert stop.kind == "breakpoint" and stop.thread.regs["rdi"] == 5
    rsp = stop.thread.regs["rsp"]
    back = int.from_bytes(proc.read(rsp, 8), "little")
    proc.remove(bp)
    stop = stop.thread.finish()
    assert stop.kind == "return" and stop.return_value == 5
    assert stop.thread.regs["rip"] == back and stop.thread.regs["rsp"] == rsp + 8
    assert proc.cont().kind == "exit"
    assert "fib(12)=144" in out.read_text()


def test_finish_across_a_tail_call_comes_back_to_the_caller(build, spawn_captured):
    """tail_outer jmp's to tail_inner: the return comes from tail_inner, to main."""
    exe = build("returns")
    proc, out = spawn_captured([exe, "tail"])
    bp = proc.break_at(_at(proc, exe, "tail_outer"))
    stop = proc.cont()
    back = int.from_bytes(proc.read(stop.thread.regs["rsp"], 8), "little")
    proc.remove(bp)
    stop = stop.thread.finish()
    assert stop.kind == "return" and stop.thread.regs["rip"] == back
    value = stop.return_value
    assert proc.cont().kind == "exit"
    assert f"tail_outer(0)={value}" in out.read_text()


def test_finish_across_a_longjmp_inside_the_function(build, spawn_captured):
    """catcher() calls thrower(), which longjmps back into catcher: the abandoned inner
    frame does not matter; catcher's own return is found."""
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "longjmp"])
    bp = proc.break_at(_at(proc, exe, "catcher"))
    stop = proc.cont()
    proc.remove(bp)
    stop = stop.thread.finish()
    assert stop.kind == "return" and stop.return_value == 50
    assert proc.cont().kind == "exit"
    assert "catcher=50" in out.read_text()


def test_finish_from_inside_a_function_uses_the_unwinder(build, spawn_captured):
    """Stopped in the middle of mix (after a step), not at its entry: the CFI gives the
    return address."""
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    bp = proc.break_at(_at(proc, exe, "mix"))
    stop = proc.cont()
    t = stop.thread
    back = int.from_bytes(proc.read(t.regs["rsp"], 8), "little")
    proc.remove(bp)
    t.step(2)
    stop = t.finish()
    assert stop.kind == "return" and stop.thread.regs["rip"] == back
    assert stop.return_value == ((7 * 3 + 9) ^ (7 >> 2)) - 9
    proc.cont()
    assert "mix=22" in out.read_text()


def test_finish_without_a_frame_to_return_to_is_one_line(build, spawn_captured):
    exe = build("debuggee")
    proc, _ = spawn_captured([exe, "args"])
    (t,) = proc.threads  # at the exec stop: the loader's entry, the outermost frame
    with pytest.raises(StepperError) as e:
        t.finish()
    assert "\n" not in str(e.value)
    assert proc.cont().kind == "exit"  # nothing was left behind


# --- watchpoints under cont() ---------------------------------------------------------------

def test_a_watchpoint_without_callback_stops_cont_after_the_write(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "longjmp"])
    sink = _at(proc, exe, "sink")
    thrower = symbol(exe, "thrower")
    wp = proc.watch(sink, size=8, access="w")
    stop = proc.cont()
    assert stop.kind == "watchpoint" and stop.watchpoint is wp and stop.watch.watchpoint is wp
    rip = stop.thread.regs["rip"]  # the instruction after the store, not run yet
    assert proc.load_bias + thrower[0] < rip < proc.load_bias + thrower[0] + thrower[1]
    assert stop.watch.rip == rip and (stop.watch.old_value, stop.watch.new_value) == (0, 4)
    assert proc.read(sink, 8) == (4).to_bytes(8, "little")
    assert proc.cont().kind == "exit" and wp.hits == 1
    assert "catcher=50" in out.read_text()


def test_watchpoint_stops_of_four_threads_writing_at_once(build, spawn_captured):
    """Writes by other threads while the threads are being stopped are Stops too (queued),
    none lost: every stop is a write in hammer()."""
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "threads"])
    sink = _at(proc, exe, "sink")
    hammer = symbol(exe, "hammer")
    wp = proc.watch(sink, size=8, access="w")
    for _ in range(20):
        stop = proc.cont()
        assert stop.kind == "watchpoint" and stop.watchpoint is wp
        rip = stop.watch.rip
        assert proc.load_bias + hammer[0] <= rip < proc.load_bias + hammer[0] + hammer[1]
    assert wp.hits >= 20
    proc.unwatch(wp)
    assert proc.cont().kind == "exit"
    assert sorted(out.read_text().split("\n")[:-1]) == [f"hammer {i}: 100" for i in range(4)]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one")
@pytest.mark.parametrize("ending", ["exit", "kill", "detach"])
def test_the_callers_cpu_affinity_is_given_back_when_the_program_is_left(ending, build,
                                                                           spawn_captured):
    """The placement policy pins the thread calling cont() to the program's CPU and keeps it
    pinned between cont() calls; the exit, kill() and detach() give its affinity back."""
    exe = build("debuggee")
    before = os.sched_getaffinity(0)
    proc, out = spawn_captured([exe, "args"])
    proc.placement = "follow"
    bp = proc.break_at("libc.so.6:getpid")
    assert proc.cont().kind == "breakpoint"
    assert len(os.sched_getaffinity(0)) == 1  # pinned, and still between two cont() calls
    if ending == "exit":
        proc.remove(bp)
        assert proc.cont().kind == "exit"
    elif ending == "kill":
        proc.kill()
    else:
        proc.detach()
    assert os.sched_getaffinity(0) == before
