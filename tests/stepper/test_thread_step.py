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
