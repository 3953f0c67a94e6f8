"""SSE registers for emulation on a live thread.

The general registers of a hit live in the thread's ptrace buffer (stepper.live). The few
probe-site instructions that touch xmm registers (movq, movdqu, pxor...) also need the FXSAVE
image, which costs a PTRACE_GETFPREGS (and a SETFPREGS when an xmm register changed): paid only
by breakpoints whose plan needs it, decided once at insertion by compiling the plan with
`VECTOR_KEYS`.
"""

from __future__ import annotations

import emu

from . import host_flags, kernel, watchpoints
from .live import LiveState

#: Register keys of a vector-capable plan: general registers index the ptrace buffer (ints),
#: xmm registers are named (strs), so one `VectorRegs.__getitem__` tells them apart by type.
VECTOR_KEYS: dict[str, object] = {
    **kernel.REG_INDEX, **{name: name for name in emu.VECTOR_REGISTERS}}
_XMM_OFFSET = {name: kernel.XMM_OFFSET + 16 * n for n, name in enumerate(emu.VECTOR_REGISTERS)}


class VectorRegs:
    """`regs` of a State over both buffers: ints index the general registers, names the xmm
    registers (read from and written into the FXSAVE image; `dirty` says it must go back)."""

    __slots__ = ("gpr", "fp", "dirty")

    def __init__(self, gpr, fp) -> None:
        self.gpr, self.fp, self.dirty = gpr, fp, False

    def __getitem__(self, key):
        if key.__class__ is int:
            return self.gpr[key]
        at = _XMM_OFFSET[key]
        return int.from_bytes(bytes(self.fp[at:at + 16]), "little")

    def __setitem__(self, key, value) -> None:
        if key.__class__ is int:
            self.gpr[key] = value
            return
        at = _XMM_OFFSET[key]
        self.fp[at:at + 16] = value.to_bytes(16, "little")
        self.dirty = True


def compile_vector_plan(insn: emu.Instruction):
    """The plan of an SSE instruction for a live thread; raises emu.Unsupported."""
    return emu.compile(insn, VECTOR_KEYS, host_flags.get())


def run_vector_plan(plan, tid: int, gpr, vm, watches: list | None = None) -> None:
    """Run `plan` on a stopped thread whose general registers are already in `gpr`.

    Reads the FXSAVE image, runs the plan (which raises, with nothing changed, like any emu
    plan; `watches`: the process's watchpoints, whose ranges it may not touch), and writes
    the image back only if an xmm register changed; the caller writes the general registers
    back as for any emulated hit.
    """
    fp = kernel.FpregsBuffer()
    kernel.getfpregs(tid, fp)
    regs = VectorRegs(gpr, fp)
    state = LiveState(tid, regs, vm)
    plan(watchpoints.GuardedState(state, watches) if watches else state)
    if regs.dirty:
        kernel.setfpregs(tid, fp)
