"""Leaving a program (stepper.detach): when the tracer raises (here: a callback) or Ctrl-C
lands between two ptrace calls of a hit, every INT3 byte is restored, threads mid-step are put
back in the original stream, the XOL area is unmapped, and the program runs on untraced to the
end it would have had; a detach requested outside the loop detaches at once."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.elf import symbol
from tests.support.runs import run_plain, wait_with_deadline
from stepper import maps


class Boom(Exception):
    pass


@pytest.mark.parametrize("mode", ["auto", "xol", "boost"])
def test_exception_in_callback_leaves_program_running_unharmed(build, spawn_captured, mode):
    exe = build("threads")
    plain = run_plain([exe, "3000", "lock"])
    assert plain.stdout == b"total=0 counter=96000\n"
    proc, out = spawn_captured([exe, "3000", "lock"], mode)
    hits = []
    seen_area = []

    def callback(hit):
        hits.append(hit.tid)
        if len(hits) == 2000:
            seen_area.extend(m for m in maps.read(proc.pid) if m.start == _area(proc))
            raise Boom("from the callback")

    # `mov eax, 1` (b8 01 00 00 00): resumed one byte late it would be `add [rax], eax`.
    proc.break_at(proc.load_bias + symbol(exe, "lock_add")[0], callback=callback)
    proc.break_at(proc.load_bias + symbol(exe, "lock_site")[0])  # XOL steps in flight
    with pytest.raises(Boom):
        proc.run()
    if mode == "xol":
        assert seen_area and seen_area[0].perms == "r-xp"  # read+execute only, never writable
    # Detached: an INT3 left behind would kill it with SIGTRAP, a thread left in the XOL
    # slot would crash or compute garbage; it ends exactly as unprobed instead.
    status = wait_with_deadline(proc.pid, 60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == plain.returncode
    assert out.read_bytes() == plain.stdout
    assert len(set(hits)) > 1  # several threads were inside the probe when it happened


def _area(proc) -> int | None:
    area = proc._session.area
    return area.address if area is not None and area.address else -1


def test_ctrl_c_between_two_ptrace_calls_of_an_xol_hit(build, spawn_captured, monkeypatch):
    """SIGINT landing right after XolOps.hit moved RIP into the slot (before the step is
    recorded): it must wait for the loop's next safe point. Raised there, the detach left
    that thread in the unmapped XOL area (SIGSEGV, no output)."""
    import sys

    from stepper import kernel
    from stepper.strategies import xol as xol_ops

    exe = build("threads")
    plain = run_plain([exe, "40000"])
    proc, out = spawn_captured([exe, "40000"], "xol")
    proc.break_at(proc.load_bias + symbol(exe, "work")[0])
    setregs, calls = kernel.setregs, []

    def setregs_then_sigint(tid, regs):
        setregs(tid, regs)
        if sys._getframe(1).f_code is xol_ops.XolOps.hit.__code__:
            calls.append(tid)
            if len(calls) == 500:  # RIP is in the slot now; t.stepping is not set yet
                signal.raise_signal(signal.SIGINT)  # handled at the next bytecode, in here

    monkeypatch.setattr(xol_ops.kernel, "setregs", setregs_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        proc.run()
    monkeypatch.undo()
    status = wait_with_deadline(proc.pid, 60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == plain.returncode
    assert out.read_bytes() == plain.stdout


def test_request_detach_outside_the_loop_lets_the_program_go_at_once(build, spawn_captured):
    exe = build("execer")
    plain = run_plain([exe])
    proc, out = spawn_captured([exe])
    bp = proc.break_at(proc.load_bias + symbol(exe, "f")[0])
    proc.detach()
    assert proc._session.closed and not proc._session.threads and not bp.inserted
    status = wait_with_deadline(proc.pid, 60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == plain.returncode
    assert out.read_bytes() == plain.stdout
