"""What an instruction is asked to be before it is encoded: its operands as specs.
"""

from __future__ import annotations

from dataclasses import dataclass


from .machine import M64, PTR


# ---------------------------------------------------------------- operand specs


@dataclass(frozen=True)
class Reg:
    name: str


@dataclass(frozen=True)
class Imm:
    value: int
    size: int


@dataclass(frozen=True)
class Target:
    """A branch target, as an absolute address (the assembler computes the displacement)."""

    address: int


@dataclass(frozen=True)
class Mem:
    """A memory operand before and after solving. `aim` is the wanted effective address;
    solving fills `disp` and the register values."""

    size: int
    base: str | None = None
    index: str | None = None
    scale: int = 1
    disp: int = 0
    seg: str | None = None
    rip: bool = False
    absolute: bool = False  # moffs form: [seg:]abs64, only with an accumulator
    ptr: bool = True  # print "dword ptr" (lea takes none)
    aim: int = 0

    def text(self) -> str:
        if self.absolute:
            inner = f"{self.disp & M64:#x}"
        else:
            parts = ["rip"] if self.rip else []
            if self.base:
                parts.append(self.base)
            if self.index:
                parts.append(f"{self.index}*{self.scale}")
            inner = " + ".join(parts)
            if self.disp or not parts:
                inner += (" - " if self.disp < 0 else (" + " if parts else "")) + f"{abs(self.disp):#x}"
        seg = f"{self.seg}:" if self.seg else ""
        return (f"{PTR[self.size]} ptr " if self.ptr else "") + f"{seg}[{inner}]"


@dataclass(frozen=True)
class Spec:
    mnemonic: str
    operands: tuple = ()
    lock: bool = False

    def text(self) -> str:
        ops = []
        for op in self.operands:
            if isinstance(op, Reg):
                ops.append(op.name)
            elif isinstance(op, Imm):
                ops.append(str(op.value))
            elif isinstance(op, Target):
                ops.append(f"{op.address:#x}")
            else:
                ops.append(op.text())
        return ("lock " if self.lock else "") + f"{self.mnemonic} {', '.join(ops)}".strip()
