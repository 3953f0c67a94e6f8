"""Return breakpoints (stepper.returns) and what a callback may change (writable hit.regs,
hit.skip_call), on the `returns` tracee, which prints what each of its calls returned."""

from __future__ import annotations

import re

import pytest

from stepper import returns, unwind_objects
from stepper.errors import StepperError
from tests.support.elf import instructions, symbol
from tests.support.runs import run_plain


def _fn(proc, exe: str, name: str) -> int:
    return proc.load_bias + symbol(exe, name)[0]


def _pairs(text: str, name: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(rf"\b{name}\((-?\d+)\)=(-?\d+)", text)]


@pytest.mark.parametrize("mode", ["auto", "xol"])
def test_four_threads_each_return_paired_with_its_entry(build, spawn_captured, mode):
    exe = build("returns")
    plain = run_plain([exe, "threads"])
    proc, out = spawn_captured([exe, "threads"], mode)
    got = []
    bp = proc.break_at(_fn(proc, exe, "compute"), on_return=got.append)
    status = proc.run()
    assert status.exit_code == 0 and sorted(out.read_bytes().splitlines()) == \
        sorted(plain.stdout.splitlines())
    printed = sorted(_pairs(out.read_text(), "compute"))
    assert len(printed) == 800
    assert sorted((r.entry.regs["rdi"], r.value) for r in got) == printed
    assert all(r.tid == r.entry.tid for r in got)
    assert len({r.tid for r in got}) == 4
    assert all(r.duration_ns > 0 for r in got)
    assert bp.stats.returns == 800 and bp.stats.expired == 0
    # Nothing is pending; the one return address's INT3 lingered from call to call (never
    # removed, so never re-inserted); the user sees only their breakpoint.
    r = proc._session.returns
    assert not r.count and set(r.sites) == set(r.lingering) and not r.spare
    assert proc.breakpoints == [bp]


def test_recursion_every_level_returns_its_own_value(build, spawn_captured):
    exe = build("returns")
    proc, out = spawn_captured([exe, "fib"])
    got = []
    bp = proc.break_at(_fn(proc, exe, "fib"), on_return=got.append)
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"fib(12)=144\n"
    fib = [0, 1]
    while len(fib) < 13:
        fib.append(fib[-1] + fib[-2])
    assert len(got) == bp.stats.hits == 465
    assert all(r.value == fib[r.entry.regs["rdi"]] for r in got)
    assert got[-1].entry.regs["rdi"] == 12 and got[-1].value == 144
    assert bp.stats.expired == 0


def test_tail_call_returns_to_the_caller_for_both_functions(build, spawn_captured):
    exe = build("returns")
    assert [i.text.split()[0] for i in instructions(exe, "tail_outer")][-1] == "jmp"
    proc, out = spawn_captured([exe, "tail"])
    got = []
    outer = proc.break_at(_fn(proc, exe, "tail_outer"), on_return=lambda r: got.append(("o", r)))
    inner = proc.break_at(_fn(proc, exe, "tail_inner"), on_return=lambda r: got.append(("i", r)))
    assert proc.run().exit_code == 0
    assert _pairs(out.read_text(), "tail_outer") == [(0, 2), (1, 4), (2, 6)]
    assert [(who, r.entry.regs["rdi"], r.value) for who, r in got] == [
        ("o", 0, 2), ("i", 1, 2), ("o", 1, 4), ("i", 2, 4), ("o", 2, 6), ("i", 3, 6)]
    # Both are the one return to main, at the same place.
    assert len({r.address for _, r in got}) == 1
    assert outer.stats.returns == inner.stats.returns == 3
    assert outer.stats.expired == inner.stats.expired == 0


def test_longjmp_out_of_nested_calls_expires_the_abandoned_frames(build, spawn_captured):
    exe = build("returns")
    plain = run_plain([exe, "longjmp"])
    proc, out = spawn_captured([exe, "longjmp"])
    got = []
    deep = proc.break_at(_fn(proc, exe, "deep"), on_return=got.append)
    jumper = proc.break_at(_fn(proc, exe, "jumper"), on_return=got.append)
    assert proc.run().exit_code == 0
    assert out.read_bytes() == plain.stdout
    assert [(r.entry.address == jumper.address, r.entry.regs["rdi"], r.value) for r in got] == [
        (False, 0, 0), (True, 0, 1), (False, 2, 6), (True, 2, 7),
        (False, 4, 12), (True, 4, 13), (False, 6, 18), (True, 6, 19)]
    assert deep.stats.expired == jumper.stats.expired == 3   # i = 1, 3, 5 jumped out
    assert deep.stats.returns == jumper.stats.returns == 4
    r = proc._session.returns
    assert not r.count and set(r.sites) == set(r.lingering)   # nothing pending


def test_signal_handler_reenters_the_function_on_the_same_stack(build, spawn_captured):
    exe = build("returns")
    plain = run_plain([exe, "signal"])
    proc, out = spawn_captured([exe, "signal"])
    got, user_hits = [], {}

    def entry(hit):  # a user breakpoint at each return address, next to the return INT3
        back = int.from_bytes(hit.read(hit.regs["rsp"], 8), "little")
        if back not in user_hits:
            user_hits[back] = 0
            proc.break_at(back, callback=lambda h: user_hits.__setitem__(
                h.address, user_hits[h.address] + 1))

    bp = proc.break_at(_fn(proc, exe, "compute"), callback=entry, on_return=got.append)
    assert proc.run().exit_code == 0
    assert out.read_bytes() == plain.stdout
    # The handler's call (1000) returns first, inside compute(7), which returns after it.
    assert [(r.entry.regs["rdi"], r.value) for r in got] == [
        (5, 251), (6, 301), (1000, 50001), (7, 351), (8, 401)]
    assert bp.stats.expired == 0 and bp.stats.returns == 5
    assert sorted(user_hits.values()) == [1, 4]  # the user's callbacks ran at both places


def test_skip_call_makes_malloc_return_null(build, spawn_captured):
    exe = build("returns")
    assert run_plain([exe, "alloc"]).stdout == b"allocated\n"
    proc, out = spawn_captured([exe, "alloc"])
    returned = []

    def at_main(hit):
        objects = unwind_objects.process_objects(proc.pid, hit.read)
        libc = next(o for o in objects if "libc.so" in o.path)
        proc.break_at(libc.address_of("malloc"), on_return=returned.append,
                      callback=lambda h: h.skip_call(0) if h.regs["rdi"] == 4099 else None)

    proc.break_at(_fn(proc, exe, "main"), callback=at_main)
    status = proc.run()
    assert status.exit_code == 3 and out.read_bytes() == b"out of memory\n"
    skipped = [r for r in returned if r.entry.regs["rdi"] == 4099]
    assert len(skipped) == 1 and skipped[0].value == 0


def test_writing_rdi_in_a_callback_changes_the_argument(build, spawn_captured):
    exe = build("returns")
    assert run_plain([exe, "args"]).stdout == b"compute(3)=151 skippable(5)=105\n"
    proc, out = spawn_captured([exe, "args"])
    proc.break_at(_fn(proc, exe, "compute"), callback=lambda h: h.regs.__setitem__("rdi", 4))
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"compute(3)=201 skippable(5)=105\n"  # 4 * 50 + 1


def test_writing_rip_skips_the_displaced_instruction(build, spawn_captured):
    exe = build("returns")
    proc, out = spawn_captured([exe, "args"])
    bp = proc.break_at(_fn(proc, exe, "skip_site"),
                       callback=lambda h: h.regs.__setitem__("rip", _fn(proc, exe, "skip_next")))
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"compute(3)=151 skippable(5)=5\n"
    assert bp.stats.hits == 1 and sum(bp.stats.steps.values()) == 0


def test_arm_away_from_an_entry_uses_the_unwinder(build, spawn_captured):
    exe = build("returns")
    proc, out = spawn_captured([exe, "args"])
    got, errors = [], []
    inside = instructions(exe, "compute")[2].address + proc.load_bias

    def mid(hit):
        p = proc._session
        returns.arm(p, p.family[hit.tid], None, got.append)

    def no_frame(hit):
        p = proc._session
        with pytest.raises(StepperError) as e:
            returns.arm(p, p.family[hit.tid], None, got.append)
        errors.append(str(e.value))

    proc.break_at(inside, callback=mid)
    proc.break_at(_fn(proc, exe, "_start"), callback=no_frame)  # the outermost frame
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"compute(3)=151 skippable(5)=105\n"
    assert [(r.value, r.entry) for r in got] == [(151, None)]
    assert len(errors) == 1 and "\n" not in errors[0] and "no frame to return to" in errors[0]


def test_fork_child_reports_the_return_too(build, spawn_captured):
    exe = build("returns")
    plain = run_plain([exe, "fork"])
    proc, out = spawn_captured([exe, "fork"])
    got = []
    bp = proc.break_at(_fn(proc, exe, "forker"), on_return=got.append)
    assert proc.run().exit_code == 0
    assert sorted(out.read_bytes().splitlines()) == sorted(plain.stdout.splitlines())
    (child,) = proc.children
    assert sorted((r.tid, r.value) for r in got) == sorted([(proc.pid, 22), (child.pid, 11)])
    (copy,) = child.breakpoints
    assert bp.stats.returns == copy.stats.returns == 1  # each process counts its own


def test_exec_drops_pending_returns(build, spawn_captured):
    exe = build("returns")
    proc, out = spawn_captured([exe, "exec"])
    got = []
    proc.break_at(_fn(proc, exe, "exec_self"), on_return=got.append)
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"compute(3)=151 skippable(5)=105\n"
    assert got == [] and proc._session.returns is None


def test_an_entry_whose_return_cannot_be_armed_is_counted(build, spawn_captured):
    exe = build("returns")
    proc, out = spawn_captured([exe, "args"])
    got = []
    start = proc.break_at(_fn(proc, exe, "_start"), on_return=got.append)  # [rsp] is argc
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"compute(3)=151 skippable(5)=105\n"
    assert got == [] and start.stats.unarmed == 1 and start.stats.hits == 1


def test_a_user_breakpoint_removed_at_a_return_address_leaves_the_returns_armed(
        build, spawn_captured):
    exe = build("returns")
    proc, out = spawn_captured([exe, "fib"])
    got, user = [], []

    def once(hit):
        proc.remove(user[0])  # from its own callback, while returns are pending there

    def entry(hit):
        if not user and hit.regs["rdi"] == 11:  # called by fib(12): returns inside fib
            back = int.from_bytes(hit.read(hit.regs["rsp"], 8), "little")
            user.append(proc.break_at(back, callback=once))

    bp = proc.break_at(_fn(proc, exe, "fib"), callback=entry, on_return=got.append)
    assert proc.run().exit_code == 0
    assert out.read_bytes() == b"fib(12)=144\n"
    assert user[0].stats.hits == 1 and proc.breakpoints == [bp]
    assert len(got) == bp.stats.returns == 465 and got[-1].value == 144


def test_a_return_int3_lingers_and_goes_when_reached_with_nothing_to_report(build,
                                                                          spawn_captured):
    """tail_inner's return address in rejoin is also a jump target: the INT3 that lingers
    there after the return traps once on the next jump (a plain step over it, the program
    unchanged) and goes; the next call puts it back."""
    exe = build("returns")
    plain = run_plain([exe, "rejoin"])
    assert plain.stdout == b"rejoin(6)=2\nrejoin(3)=2\n"
    proc, out = spawn_captured([exe, "rejoin"])
    got = []
    proc.break_at(_fn(proc, exe, "tail_inner"), on_return=got.append)
    site = _fn(proc, exe, "rejoin_site")
    assert proc.run().exit_code == 0
    assert out.read_bytes() == plain.stdout
    assert [(r.entry.regs["rdi"], r.value) for r in got] == [(1, 2), (1, 2)]
    assert {r.address for r in got} == {site}
    r = proc._session.returns
    assert not r.count and not r.lingering and site in r.spare
    # per rejoin call: its return, then one jump there with nothing to report (not the
    # four (rejoin(6)) and one (rejoin(3)) later jumps an INT3 left in would catch)
    assert r.spare[site].stats.hits == 4


def test_at_most_linger_return_int3s_stay(build, spawn_captured, monkeypatch):
    """Past LINGER addresses with nothing pending, the oldest INT3 goes (deep and jumper
    return to two places)."""
    monkeypatch.setattr(returns, "LINGER", 1)
    exe = build("returns")
    proc, out = spawn_captured([exe, "longjmp"])
    deep = proc.break_at(_fn(proc, exe, "deep"), on_return=lambda r: None)
    jumper = proc.break_at(_fn(proc, exe, "jumper"), on_return=lambda r: None)
    assert proc.run().exit_code == 0
    assert deep.stats.returns == jumper.stats.returns == 4
    r = proc._session.returns
    assert not r.count and len(r.lingering) == 1 and r.spare
