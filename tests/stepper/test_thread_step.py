"""Instruction steps of one thread (stepper.thread_step through `t.step()` and
`proc.trace_instructions`): the addresses stepped compared with the function's disassembly,
into a call and out of it."""

from tests.support.elf import instructions, symbol


def _at(proc, exe, name):
    return proc.load_bias + symbol(exe, name)[0]


def test_steps_through_a_straight_line_function_follow_its_disassembly(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_at(proc, exe, "mix"))
    stop = proc.cont()
    t = stop.thread
    ret = int.from_bytes(proc.read(t.regs["rsp"], 8), "little")
    seen = list(proc.trace_instructions(t, until=ret))
    assert seen == [proc.load_bias + i.address for i in instructions(exe, "mix")]
    assert t.regs["rip"] == ret and t.regs["rax"] == ((7 * 3 + 9) ^ (7 >> 2)) - 9
    stats = proc.step_stats
    assert stats.emulated + stats.trapped == len(seen)
    assert stats.emulated == len(seen)  # register arithmetic and a ret: no trap at all
    proc.cont()
    assert "mix=22" in out.read_text()


def test_a_step_goes_into_a_call_and_out_of_it(build, spawn_captured):
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_at(proc, exe, "caller"))
    t = proc.cont().thread
    body = [proc.load_bias + i.address for i in instructions(exe, "caller")]
    add = _at(proc, exe, "add")
    assert t.step().kind == "step" and t.regs["rip"] == body[1]  # mov $1, %esi
    t.step()  # the call
    assert t.regs["rip"] == add
    stop = t.step(2)  # lea, ret
    assert stop.kind == "step" and t.regs["rip"] == body[2] and t.regs["rax"] == 6
    proc.cont()
    assert "caller=12" in out.read_text()


def test_an_emulated_load_after_cont_sees_what_the_program_wrote_meanwhile(build,
                                                                          spawn_captured):
    """Steps cache the pages they read while every thread is stopped; once the program ran
    (cont()), a load must read memory anew: hammer()'s `mov rax, [sink]` after other
    threads changed sink gives sink's value now, not the one of the earlier stop."""
    exe = build("debuggee")
    proc, out = spawn_captured([exe, "threads"])
    sink = _at(proc, exe, "sink")
    proc.break_at(_at(proc, exe, "hammer"))
    changed = 0
    for _ in range(40):
        stop = proc.cont()
        assert stop.kind == "breakpoint"
        t = stop.thread
        now = int.from_bytes(proc.read(sink, 8), "little")
        t.step()  # mov rax, [rip + sink]
        assert t.regs["rax"] == now
        changed += now != 0
    assert changed  # the other threads did write meanwhile
    assert proc.step_stats.emulated == 40
