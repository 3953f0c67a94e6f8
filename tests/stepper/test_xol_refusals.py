"""What never runs out of line (stepper.xol_refusals), each class with its reason, and the
planner refusing it (stepper.xol.prepare raises XolRefused with that reason, nothing planned).
Encodings come from keystone, or GNU as where keystone lacks a form."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile

import capstone
import keystone
import pytest

import emu
from stepper import xol, xol_refusals
from stepper.errors import StepperError

ORIG = 0x401234                    # where the probed instruction lives
NEAR_SLOT = 0x10000040             # within 2 GiB of ORIG
FAR_SLOT = 0x7F1234560080          # 127 TiB away

_ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


@functools.lru_cache(maxsize=None)
def ks(text: str, address: int = ORIG) -> bytes:
    return bytes(_ks.asm(text, address)[0])


@functools.lru_cache(maxsize=None)
def gas(text: str) -> bytes:
    """First instruction of `text` assembled by GNU as (for forms keystone lacks)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, out = (os.path.join(tmp, n) for n in ("a.s", "a.o", "a.bin"))
        with open(src, "w") as f:
            f.write(".intel_syntax noprefix\n.text\n" + text + "\n")
        subprocess.run(["as", "--64", "-o", obj, src], check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", obj, out], check=True)
        code = open(out, "rb").read()
    first = next(_cs.disasm(code, 0, 1))
    return code[:first.size]


def decode(code: bytes, address: int = ORIG) -> emu.Instruction:
    return emu.decode(code, address)


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
