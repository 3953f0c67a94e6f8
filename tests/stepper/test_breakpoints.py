"""Breakpoints inserted in a batch (stepper.breakpoints: Breakpoints.add_many, api's
`break_at_many`) against the same addresses inserted one by one in a second run of the same
non-PIE program: the same bytes in memory, the same refusals with the same messages, the
same instruction, strategy and hits; and a batch whose write meets a page /proc/PID/mem
cannot write leaves nothing written."""

from __future__ import annotations

from stepper import maps, policy
from stepper.errors import StepperError
from stepper.records import Breakpoint, PendingBreakpoint
from stepper.symbols import ElfSymbols
from tests.support.elf import symbol


def _addresses(exe: str, pid: int) -> list[int]:
    """Every function start of `exe`, the byte after each (inside an instruction, or the next
    one), the same starts again, and addresses outside executable code."""
    starts = sorted({s.value for s in ElfSymbols.load(exe).functions()})
    data = min(m.start for m in maps.read(pid) if m.path == exe and not m.executable)
    return starts + [a + 1 for a in starts] + starts[:3] + [0x1000, data]


def _answer(result, pid: int) -> tuple:
    if isinstance(result, StepperError):   # the same words, but for the process's id
        return ("refused", str(result).replace(f"process {pid}", "process PID"))
    return ("inserted", result.address, result.original, result.text, result.strategy,
            policy.why(result))


def _text_of(proc, exe: str) -> bytes:
    """The raw bytes (INT3 included) of `exe`'s executable mappings in `proc`."""
    s = proc._session
    return b"".join(s.mem.read(m.start, m.end - m.start) for m in maps.read(s.pid)
                    if m.path == exe and m.executable)


def test_a_batch_gives_what_one_by_one_insertion_gives(build, spawn_captured):
    exe = build("probes_nopie")
    one, out_one = spawn_captured([exe, "20"])
    addresses = _addresses(exe, one.pid)
    singles = []
    for address in addresses:
        try:
            singles.append(one.break_at(address))
        except StepperError as e:
            singles.append(e)
    many, out_many = spawn_captured([exe, "20"])
    batch = many.break_at_many(addresses)

    assert [_answer(r, many.pid) for r in batch] == [_answer(r, one.pid) for r in singles]
    assert sum(isinstance(r, Breakpoint) for r in batch) > 10
    assert sum(isinstance(r, StepperError) for r in batch) > 10
    assert any("already set" in str(r) for r in batch)
    assert any("not an instruction boundary" in str(r) for r in batch)
    assert any("not in an executable mapping" in str(r) for r in batch)
    # The bytes decided by the first run are decoded at first use in the second.
    assert any(isinstance(r, PendingBreakpoint) for r in batch)
    assert _text_of(many, exe) == _text_of(one, exe)
    assert one.run() == many.run()
    assert out_one.read_text() == out_many.read_text()
    for a, b in zip(singles, batch):
        if isinstance(a, Breakpoint):
            assert (b.insn.bytes, b.insn.text, b.strategy, b.stats.hits) == \
                (a.insn.bytes, a.insn.text, a.strategy, a.stats.hits)


def test_a_batch_meeting_an_unwritable_page_writes_nothing(build, spawn_captured):
    exe = build("shared_text")
    proc, out = spawn_captured([exe])
    s = proc._session
    bias = proc.load_bias
    ready, after = (bias + symbol(exe, name)[0] for name in ("ready", "after"))
    main = bias + symbol(exe, "main")[0]
    seen: dict = {}

    def at_ready(hit) -> None:   # the program is stopped here; checked after the run
        page = seen["page"] = hit.regs["rdi"]
        try:
            proc.break_at(page)
        except StepperError as e:
            seen["one"] = str(e)
        good = [after, main]
        seen["before"] = {a: s.mem.read(a, 1) for a in [*good, page]}
        prepared = s.breakpoints.prepare_many([(a, "auto", None) for a in [*good, page]])
        seen["prepared"] = prepared
        try:
            s.breakpoints.insert_many(prepared)
        except StepperError as e:
            seen["batch"] = str(e)
        seen["after_batch"] = {a: s.mem.read(a, 1) for a in [*good, page]}
        seen["by_address"] = set(s.breakpoints.by_address)
        seen["answers"] = proc.break_at_many([after, page, main])   # through the API
        seen["after_api"] = {a: s.mem.read(a, 1) for a in [*good, page]}

    proc.break_at(ready, callback=at_ready)
    status = proc.run()
    assert status.exit_code == 0 and out.read_text() == "40\n"
    page = seen["page"]
    assert seen["one"].startswith(f"cannot write a breakpoint at {page:#x}")
    assert all(isinstance(bp, Breakpoint) for bp in seen["prepared"])
    assert seen["batch"].startswith(f"cannot write a breakpoint at {page:#x}")
    assert seen["after_batch"] == seen["before"]          # nothing of the batch written
    assert not any(bp.inserted for bp in seen["prepared"])
    assert seen["by_address"] == {ready}
    first, refused, last = seen["answers"]                 # each as one by one answers it
    assert isinstance(first, Breakpoint) and isinstance(last, Breakpoint)
    assert isinstance(refused, StepperError) and str(refused) == seen["one"]
    assert seen["after_api"] == {after: b"\xcc", main: b"\xcc", page: seen["before"][page]}
    assert first.stats.hits == 1
