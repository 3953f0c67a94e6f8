"""stepper.debugregs on a real tracee: a write watch on a global traps after each write
with DR6 naming the slot; a cleared slot no longer traps; bad sizes and alignments are
refused before anything is written. The tracee is started with PTRACE_TRACEME and driven
with raw ptrace (ctypes) here, since the engine has no watchpoint API yet."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal

import pytest

from tests.support.elf import symbol
from tests.support.programs import TRACEES, gcc
from stepper import debugregs

PTRACE_TRACEME, PTRACE_CONT, PTRACE_PEEKDATA, PTRACE_GETREGS = 0, 7, 2, 12
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the tracees")
    exe = gcc(tmp_path_factory.mktemp("watch") / "watched", "-O1", "-no-pie", "-fno-pie",
              TRACEES / "watched.c")
    return exe, symbol(exe, "watched")[0], symbol(exe, "other")[0]


def start(exe: str) -> int:
    """The tracee, stopped at its exec (SIGTRAP), traced by this process."""
    pid = os.fork()
    if pid == 0:
        try:
            _libc.ptrace(PTRACE_TRACEME, 0, None, None)
            os.execv(exe, [exe])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
    return pid


def cont(pid: int) -> int:
    assert _libc.ptrace(PTRACE_CONT, pid, None, None) == 0
    _, status = os.waitpid(pid, 0)
    return status


def watch_or_skip(pid: int, slot: int, address: int, access: str) -> None:
    """Set an 8-byte watch, or kill the tracee and skip with the kernel's refusal (a machine
    whose debug registers cannot be set)."""
    try:
        debugregs.set_slot(pid, slot, address, size=8, access=access)
    except debugregs.DebugRegisterError as e:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.skip(str(e))


def peek(pid: int, address: int) -> int:
    return _libc.ptrace(PTRACE_PEEKDATA, pid, address, None)


def test_write_watch_traps_after_each_write_and_names_its_slot(watched):
    exe, address, other = watched
    pid = start(exe)
    watch_or_skip(pid, 2, address, "w")
    assert debugregs.read(pid, 2) == address
    seen = []
    status = cont(pid)
    while os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP:
        seen.append((debugregs.fired(pid), peek(pid, address)))
        if len(seen) == 2:
            debugregs.clear_slot(pid, 2)   # the third write must not trap
        status = cont(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # Trap-like: the write is done when the thread stops; only slot 2 fired; `other`
    # (written right after, in the same loop) never did.
    assert seen == [([2], 1), ([2], 2)]


def test_read_write_watch_also_traps_on_the_read(watched):
    exe, address, _other = watched
    pid = start(exe)
    watch_or_skip(pid, 0, address, "rw")
    values = []
    status = cont(pid)
    while os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP:
        assert debugregs.fired(pid) == [0]
        values.append(peek(pid, address))
        status = cont(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # Three writes, then the read of the final test (it reads 3, the value stays 3).
    assert values == [1, 2, 3, 3]


def test_control_bits_follow_the_dr7_layout():
    # Slot 1, write, 4 bytes: L1 = bit 2; RW1 = bits 20-21 = 01; LEN1 = bits 22-23 = 11.
    bits, mask = debugregs.control_bits(1, 4, "w")
    assert bits == (1 << 2) | (0b01 << 20) | (0b11 << 22)
    assert mask == (0b11 << 2) | (0b1111 << 20)
    # Slot 3, read/write, 8 bytes (LEN 10); execute forces length 1 (LEN 00).
    assert debugregs.control_bits(3, 8, "rw")[0] == (1 << 6) | (0b11 << 28) | (0b10 << 30)
    assert debugregs.control_bits(0, 8, "x")[0] == 1


@pytest.mark.parametrize("args, message", [
    ((0, 0x1000, 3, "w"), "1, 2, 4 or 8 bytes"),
    ((0, 0x1004, 8, "w"), "aligned to 8"),
    ((4, 0x1000, 8, "w"), "slot 4 does not exist"),
    ((0, 0x1000, 8, "r"), "not one of w, rw, x"),
])
def test_bad_watches_are_refused_before_any_ptrace(args, message):
    # tid 0 is no thread: reaching ptrace would fail with a different message.
    with pytest.raises(debugregs.DebugRegisterError, match=message):
        debugregs.set_slot(0, *args)
