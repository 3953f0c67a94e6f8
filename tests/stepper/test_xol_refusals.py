"""What never runs out of line (stepper.xol_refusals), each class with its reason, and the
planner refusing it (stepper.xol.prepare raises XolRefused with that reason, nothing planned).
Encodings come from keystone, or GNU as where keystone lacks a form."""

from __future__ import annotations

import pytest

from stepper import xol, xol_refusals
from stepper.errors import StepperError
from tests.support.machine import FAR_SLOT, NEAR_SLOT, ORIG, decode, gas, ks


REFUSALS = [
    (lambda: ks("hlt"), "system instruction"),
    (lambda: ks("cli"), "system instruction"),
    (lambda: ks("sti"), "system instruction"),
    (lambda: ks("lgdt [rax]"), "system instruction"),
    (lambda: ks("wrmsr"), "system instruction"),
    (lambda: ks("swapgs"), "system instruction"),
    (lambda: ks("sgdt [rax]"), "descriptor-table"),
    (lambda: ks("in al, dx"), "port I/O"),
    (lambda: ks("out 0x80, al"), "port I/O"),
    (lambda: ks("insb"), "port I/O"),
    (lambda: ks("int3"), "SIGTRAP"),
    (lambda: ks("int1"), "SIGTRAP"),
    (lambda: ks("int 0x80"), "software interrupt"),
    (lambda: ks("iretq"), "far transfer"),
    (lambda: ks("retf"), "far transfer"),
    (lambda: ks("retfq"), "far transfer"),
    (lambda: gas("ljmp [rip+0x100]"), "far transfer"),
    (lambda: gas("lcall [rip+0x100]"), "far transfer"),
    (lambda: ks("sysenter"), "sysenter"),
    (lambda: gas("xbegin 1f\n1: nop"), "xbegin"),
    (lambda: gas("mov ss, ax"), "SS"),
    (lambda: gas("data16 jmp 1f\n1: nop"), "operand-size prefix"),
    (lambda: ks("enclu"), "enclave"),
]


@pytest.mark.parametrize("assemble,reason", REFUSALS)
def test_refused_classes_have_a_reason(assemble, reason):
    insn = decode(assemble())
    assert reason in (xol_refusals.refusal_reason(insn) or "")
    with pytest.raises(xol.XolRefused) as info:
        xol.prepare(insn, FAR_SLOT)
    assert isinstance(info.value, StepperError)
    assert info.value.reason == xol_refusals.refusal_reason(insn)
    message = str(info.value)
    assert "\n" not in message and f"{ORIG:#x}" in message and insn.text in message


@pytest.mark.parametrize("text", ["ud2", "syscall", "cpuid", "rdtsc", "xend", "popfq",
                                  "mov fs, ax", "rep stosq qword ptr [rdi], rax",
                                  "nop dword ptr [rax]", "lfence"])
def test_steppable_out_of_line(text):
    """ud2 is allowed: out of line it raises the same SIGILL; the engine's abort maps RIP back
    and `original_address` maps the si_addr (the kernel puts the faulting RIP there)."""
    insn = decode(ks(text))
    assert xol_refusals.refusal_reason(insn) is None
    assert len(xol.prepare(insn, NEAR_SLOT).code) == xol.SLOT_SIZE


def test_endbr64_steppable():
    insn = decode(gas("endbr64"))
    assert xol_refusals.refusal_reason(insn) is None
