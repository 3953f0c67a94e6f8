"""Emulated single steps (stepper.instruction_step) against the real CPU.

The tracee is the step benchmark's instruction loop (stepper/data/bench_steploop.S), static
and started with ASLR off, so two runs have the same registers at every step: one run is
advanced by emulate_one, the other by PTRACE_SINGLESTEP, in lockstep, and every general
register, rip and the full rflags are compared after each step, the touched memory at the
end. The refusals (a faulting load, a system call, a locked instruction while other threads
may run or on a MAP_SHARED page, the program's own trap flag) must change nothing, and the
CPU then gets the genuine outcome.
"""

from __future__ import annotations

import ctypes
import os
import signal
from contextlib import contextmanager

import pytest

import emu

from stepper import kernel
from stepper.instruction_step import emulate_one
from stepper.session import Session
from tests.support.elf import symbol

ADDR_NO_RANDOMIZE = 0x0040000
_libc = ctypes.CDLL(None, use_errno=True)
#: What is compared after every step: the general registers, rip, rflags, fs_base, gs_base.
BUF = 0x402000  # buf and counter in .data of the static, non-PIE build (checked below)
COMPARED = sorted(kernel.REG_INDEX.items(), key=lambda item: item[1])


@contextmanager
def _aslr_off():
    """Children started inside inherit ADDR_NO_RANDOMIZE (as under `setarch -R`)."""
    old = _libc.personality(0xFFFFFFFF)
    _libc.personality(old | ADDR_NO_RANDOMIZE)
    try:
        yield
    finally:
        _libc.personality(old)


@pytest.fixture
def loop(build):
    """start() -> (session, its thread with registers read, exe): the loop, stopped at its
    first instruction, ASLR off."""
    exe = build("steploop")
    started = []

    def start():
        with _aslr_off():
            session = Session.spawn([exe])
        started.append(session)
        t = session.threads[session.pid]
        kernel.getregs(t.tid, t.regs)
        assert _site(exe, "buf") == BUF
        return session, t, exe

    yield start
    for session in started:
        session.kill()


def _site(exe: str, name: str) -> int:
    return symbol(exe, name)[0]


def _real_step(t, expect: int = signal.SIGTRAP) -> None:
    """One PTRACE_SINGLESTEP. The trap flag it sets is visible to `pushfq`, which pushes it:
    that one artifact of the reference is undone here, so the reference is the CPU running
    the program untraced (the program's own TF is never set in these runs)."""
    pushf = t.session.mem.read(t.regs[kernel.RIP], 1) == b"\x9c"
    kernel.setregs(t.tid, t.regs)
    kernel.singlestep(t.tid)
    _, status = os.waitpid(t.tid, kernel.WALL)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == expect, hex(status)
    kernel.getregs(t.tid, t.regs)
    if pushf:
        rsp, mem = t.regs[kernel.RSP], t.session.mem
        pushed = int.from_bytes(mem.read(rsp, 8), "little")
        assert pushed & kernel.TF, "PTRACE_SINGLESTEP's TF is no longer seen by pushfq"
        mem.write(rsp, (pushed & ~kernel.TF).to_bytes(8, "little"))


def _observable(t) -> dict[str, int]:
    return {name: t.regs[i] for name, i in COMPARED}


def _touched(p, t) -> bytes:
    """.data (buf, counter), the shared page (r15) and the stack around rsp."""
    rsp, shared = t.regs[kernel.RSP], t.regs[kernel.REG_INDEX["r15"]]
    return (p.mem.read(BUF, 0x48) + (p.mem.read(shared, 4096) if shared else b"")
            + p.mem.read(rsp - 2048, 2048 + 256))


def _go_to(t, address: int, **regs) -> None:
    """Put the thread at `address` (a test starting from a labelled site), registers set."""
    t.regs[kernel.RIP] = address
    for name, value in regs.items():
        t.regs[kernel.REG_INDEX[name]] = value
    kernel.setregs(t.tid, t.regs)


def _snapshot(p, t) -> tuple:
    return list(t.regs), _touched(p, t)


def test_lockstep_with_the_cpu_over_the_whole_loop(loop):
    """Thousands of steps, emulated in one run and single-stepped in the other: after every
    step, every general register, rip and all of rflags (the undefined flags of imul, shl,
    ror included) equal the CPU's; at the end, the touched memory too."""
    pa, ta, exe = loop()
    pb, tb, _ = loop()
    assert _observable(ta) == _observable(tb), "ASLR off: both runs must start alike"
    done = _site(exe, "done")
    emulated, trapped = set(), set()
    steps = emulated_steps = 0
    while tb.regs[kernel.RIP] != done:
        rip = ta.regs[kernel.RIP]
        if emulate_one(pa, ta, True):
            emulated.add(rip)
            emulated_steps += 1
        else:
            trapped.add(rip)
            _real_step(ta)
        _real_step(tb)
        steps += 1
        assert _observable(ta) == _observable(tb), f"step {steps} at {rip:#x}"
        assert steps < 20000, "the loop did not end"
    kernel.setregs(ta.tid, ta.regs)
    assert _touched(pa, ta) == _touched(pb, tb)
    assert steps > 9000 and emulated_steps > 0.9 * steps
    assert _site(exe, "lock_site") in emulated  # every thread stopped: a lock may be emulated
    assert {_site(exe, "syscall_site"), _site(exe, "lock_shared_site")} <= trapped
    assert int.from_bytes(pa.mem.read(_site(exe, "counter"), 8), "little") == 1


def test_a_faulting_load_changes_nothing_and_the_cpu_faults(loop):
    p, t, exe = loop()
    _go_to(t, _site(exe, "fault_site"), rax=0x1234)
    before = _snapshot(p, t)
    assert emulate_one(p, t, True) is False
    assert _snapshot(p, t) == before
    _real_step(t, expect=signal.SIGSEGV)  # the genuine fault, from the CPU
    assert t.regs[kernel.RIP] == _site(exe, "fault_site")


def test_a_push_onto_an_unmapped_stack_changes_nothing(loop):
    p, t, exe = loop()
    _go_to(t, _site(exe, "loop_top"), rsp=0x10000)  # push rbx, with no stack there
    before = list(t.regs)
    assert emulate_one(p, t, True) is False
    assert list(t.regs) == before


def test_a_system_call_is_left_to_the_kernel(loop):
    p, t, exe = loop()
    _go_to(t, _site(exe, "syscall_site"), rax=39)  # getpid
    before = _snapshot(p, t)
    assert emulate_one(p, t, True) is False
    assert _snapshot(p, t) == before
    _real_step(t)
    assert t.regs[kernel.RAX] == p.pid  # the kernel ran it


def test_a_locked_add_only_when_every_thread_is_stopped(loop):
    p, t, exe = loop()
    lock_site, counter = _site(exe, "lock_site"), _site(exe, "counter")
    _go_to(t, lock_site)
    before = _snapshot(p, t)
    assert emulate_one(p, t, False) is False
    assert _snapshot(p, t) == before
    assert emulate_one(p, t, True) is True
    assert t.regs[kernel.RIP] == _site(exe, "lock_shared_site")
    assert int.from_bytes(p.mem.read(counter, 8), "little") == 1


def test_a_locked_add_on_a_shared_mapping_is_never_emulated(loop):
    p, t, exe = loop()
    while t.regs[kernel.RIP] != _site(exe, "after_setup"):  # the mmap of the shared page
        _real_step(t)
    shared = t.regs[kernel.REG_INDEX["r15"]]
    _go_to(t, _site(exe, "lock_shared_site"))
    before = _snapshot(p, t)
    assert emulate_one(p, t, True) is False
    assert _snapshot(p, t) == before
    _real_step(t)
    assert int.from_bytes(p.mem.read(shared, 8), "little") == 1


def test_the_programs_own_trap_flag_leaves_the_step_to_the_cpu(loop):
    p, t, exe = loop()
    t.regs[kernel.EFLAGS] |= kernel.TF
    before = _snapshot(p, t)
    assert emulate_one(p, t, True) is False
    assert _snapshot(p, t) == before


def test_a_breakpoint_byte_is_hidden_from_the_decoder(loop):
    p, t, exe = loop()
    site = _site(exe, "after_setup")  # mov r12, 300
    _go_to(t, site)
    p.add_breakpoint(site)
    assert p.mem.read(site, 1) == b"\xcc"
    assert emulate_one(p, t, True) is True
    assert t.regs[kernel.REG_INDEX["r12"]] == 300


def test_an_sse_move_updates_the_xmm_register(loop):
    """A plan over xmm registers runs on the thread's FXSAVE image, written back."""
    p, t, exe = loop()
    site = _site(exe, "after_setup")
    p.mem.write(site, bytes.fromhex("66480f6ec0"))  # movq xmm0, rax
    _go_to(t, site, rax=0x1122334455667788)
    assert emulate_one(p, t, True) is True
    fp = kernel.FpregsBuffer()
    kernel.getfpregs(t.tid, fp)
    assert bytes(fp[kernel.XMM_OFFSET:kernel.XMM_OFFSET + 16]) == (
        (0x1122334455667788).to_bytes(8, "little") + bytes(8))
    assert t.regs[kernel.RIP] == site + 5


MOV_R12_7 = bytes.fromhex("49c7c407000000")  # mov r12, 7: as long as `mov r12, 300`


def _rerun(p, t, site: int, all_stopped: bool) -> int:
    _go_to(t, site, r12=0)
    assert emulate_one(p, t, all_stopped) is True
    return t.regs[kernel.REG_INDEX["r12"]]


def test_changed_code_is_recompiled(loop):
    """A cached plan is not reused once its bytes changed: written by the tracer (epoch),
    written behind the engine's back while another thread may run (bytes read every step),
    and written behind its back before the program ran again."""
    p, t, exe = loop()
    site = _site(exe, "after_setup")
    assert _rerun(p, t, site, True) == 300
    p.mem.write(site, MOV_R12_7)  # the tracer's own write (e.g. a debugger's proc.write)
    assert _rerun(p, t, site, True) == 7

    other = os.open(f"/proc/{p.pid}/mem", os.O_RDWR)  # a writer the engine does not see
    try:
        os.pwrite(other, bytes.fromhex("49c7c409000000"), site)  # mov r12, 9
        assert _rerun(p, t, site, False) == 9
        os.pwrite(other, bytes.fromhex("49c7c40b000000"), site)  # mov r12, 11
        _go_to(t, _site(exe, "loop_top"))
        _real_step(t)  # the program ran: every plan is checked again
        assert _rerun(p, t, site, True) == 11
    finally:
        os.close(other)


def test_a_store_on_checked_code_unchecks_it(loop):
    """Self-modifying code: a store by an emulated instruction onto a page holding a checked
    plan makes the next step read the bytes again."""
    p, t, exe = loop()
    site = _site(exe, "after_setup")
    assert _rerun(p, t, site, True) == 300
    text = site & ~0xFFF
    # The text is read-only to the program: the program makes it writable (an mprotect
    # single-stepped at syscall_site).
    _go_to(t, _site(exe, "syscall_site"), rax=10, rdi=text, rsi=0x1000, rdx=7)
    _real_step(t)
    assert t.regs[kernel.RAX] == 0
    assert _rerun(p, t, site, True) == 300  # checked again after the real step
    # `mov [rbx + 16], r9` of the loop, aimed at the immediate of `mov r12, imm32`.
    store = _find(p, _site(exe, "loop_top"), "mov qword ptr [rbx + 0x10], r9")
    _go_to(t, store, rbx=site + 3 - 16, r9=int.from_bytes(MOV_R12_7[3:], "little")
           | (int.from_bytes(p.mem.read(site + 7, 4), "little") << 32))
    assert emulate_one(p, t, True) is True
    assert p.mem.read(site, 7) == MOV_R12_7
    assert _rerun(p, t, site, True) == 7


def _find(p, start: int, text: str) -> int:
    """The address of the first instruction `text` from `start` on."""
    code, pc = p.mem.read(start, 256), start
    while True:
        insn = emu.decode(code[pc - start:], pc)
        if insn.text == text:
            return pc
        pc = insn.next_address


def test_a_new_image_never_reuses_the_old_plans(loop):
    """An exec gives the process a new /proc/PID/mem handle (stepper.process's exec): plans
    and page snapshots made for the old handle are dropped, even with no epoch change."""
    p, t, exe = loop()
    site = _site(exe, "after_setup")
    assert _rerun(p, t, site, True) == 300
    other = os.open(f"/proc/{p.pid}/mem", os.O_RDWR)  # unseen: no epoch change
    try:
        os.pwrite(other, bytes.fromhex("49c7c409000000"), site)  # mov r12, 9
    finally:
        os.close(other)
    old = p.mem
    p.mem = p.breakpoints.mem = kernel.ProcMem(p.pid)  # as exec does
    old.close()
    assert _rerun(p, t, site, True) == 9


def _load_r15_at(p, exe) -> int:
    """`mov rax, qword ptr [r15]` written over fault_site (never reached by the loop)."""
    site = _site(exe, "fault_site")
    p.mem.write(site, b"\x49\x8b\x07")
    return site


def _outside_write(pid: int, address: int, value: int) -> None:
    """A write that the tracer's epoch does not see, as another process's would be."""
    fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
    try:
        os.pwrite(fd, value.to_bytes(8, "little"), address)
    finally:
        os.close(fd)


def test_loads_from_a_shared_page_are_read_at_every_step(loop):
    """Data pages are snapshotted while every thread is stopped, but never a MAP_SHARED
    one: another process may write it between two steps."""
    p, t, exe = loop()
    while t.regs[kernel.RIP] != _site(exe, "after_setup"):  # the mmap of the shared page
        _real_step(t)
    shared = t.regs[kernel.REG_INDEX["r15"]]
    site = _load_r15_at(p, exe)
    _go_to(t, site)
    assert emulate_one(p, t, True) is True and t.regs[kernel.RAX] == 0
    _outside_write(p.pid, shared, 42)
    t.regs[kernel.RIP] = site
    assert emulate_one(p, t, True) is True and t.regs[kernel.RAX] == 42


def test_loads_see_the_emulated_stores_and_the_tracers_writes(loop):
    """A private page's snapshot follows the emulated stores, and the tracer's own writes
    (which move the epoch) drop it."""
    p, t, exe = loop()
    site = _load_r15_at(p, exe)
    _go_to(t, site, r15=BUF)
    assert emulate_one(p, t, True) is True and t.regs[kernel.RAX] == 0
    p.mem.write(BUF, (7).to_bytes(8, "little"))
    t.regs[kernel.RIP] = site
    assert emulate_one(p, t, True) is True and t.regs[kernel.RAX] == 7
    store = _site(exe, "fault_site") + 3  # mov qword ptr [r15], rax, then the load again
    p.mem.write(store, b"\x49\x89\x07\x49\x8b\x07")
    t.regs[kernel.RIP] = site
    t.regs[kernel.RAX] = 0
    assert emulate_one(p, t, True) is True and t.regs[kernel.RAX] == 7  # snapshot taken
    t.regs[kernel.RAX] = 99
    assert emulate_one(p, t, True) is True  # the store, emulated
    t.regs[kernel.RAX] = 0
    assert emulate_one(p, t, True) is True and t.regs[kernel.RAX] == 99
    assert int.from_bytes(p.mem.read(BUF, 8), "little") == 99
