"""stepper.live_vector on a real tracee in a ptrace stop: an SSE plan runs over the thread's
general-register buffer and its FXSAVE image, and the image is written back only when an xmm
register changed."""

from __future__ import annotations

import pytest

import emu
from stepper import live_vector, kernel
from tests.support.flat import asm

XMM = {name: kernel.XMM_OFFSET + 16 * n for n, name in enumerate(emu.VECTOR_REGISTERS)}


def xmm(pid: int, name: str) -> int:
    fp = kernel.FpregsBuffer()
    kernel.getfpregs(pid, fp)
    return int.from_bytes(bytes(fp[XMM[name]:XMM[name] + 16]), "little")


def gpr(pid: int):
    buf = kernel.new_regs()
    kernel.getregs(pid, buf)
    return buf


def plan_at(pid: int, text: str):
    rip = gpr(pid)[kernel.RIP]
    return live_vector.compile_vector_plan(emu.decode(asm(text, rip), rip))


def test_vector_regs_tell_general_from_xmm_keys():
    g, fp = kernel.new_regs(), kernel.FpregsBuffer()
    regs = live_vector.VectorRegs(g, fp)
    regs[kernel.RAX] = 7
    assert g[kernel.RAX] == 7 and not regs.dirty
    regs["xmm3"] = (1 << 127) | 5
    assert regs.dirty and regs["xmm3"] == (1 << 127) | 5
    assert bytes(fp[XMM["xmm3"]:XMM["xmm3"] + 16]) == ((1 << 127) | 5).to_bytes(16, "little")
    assert regs["xmm2"] == 0


def test_a_plan_writing_xmm_reaches_the_thread(stopped_tracee):
    pid, _ = stopped_tracee
    regs = gpr(pid)
    regs[kernel.REG_INDEX["rbx"]] = 0x1122334455667788
    live_vector.run_vector_plan(plan_at(pid, "movq xmm5, rbx"), pid, regs,
                                kernel.VmAccess(pid))
    assert xmm(pid, "xmm5") == 0x1122334455667788  # movq zeroes the upper half


def test_a_plan_reading_xmm_leaves_the_image_alone(stopped_tracee):
    pid, _ = stopped_tracee
    regs = gpr(pid)
    regs[kernel.REG_INDEX["rbx"]] = 0xABCD
    live_vector.run_vector_plan(plan_at(pid, "movq xmm6, rbx"), pid, regs,
                                kernel.VmAccess(pid))
    image = kernel.FpregsBuffer()
    kernel.getfpregs(pid, image)
    live_vector.run_vector_plan(plan_at(pid, "movq rcx, xmm6"), pid, regs,
                                kernel.VmAccess(pid))
    assert regs[kernel.REG_INDEX["rcx"]] == 0xABCD  # the caller writes gpr back
    assert regs[kernel.RIP] == gpr(pid)[kernel.RIP] + len(asm("movq rcx, xmm6"))
    after = kernel.FpregsBuffer()
    kernel.getfpregs(pid, after)
    assert bytes(after) == bytes(image)


def test_what_the_live_keys_cannot_run_is_unsupported():
    with pytest.raises(emu.Unsupported):
        live_vector.compile_vector_plan(emu.decode(asm("vaddps ymm0, ymm1, ymm2"), 0x401000))
