"""Who computes the rflags bits the SDM leaves undefined: the optional *flags oracle*.

The manual leaves some status flags undefined (mul/imul: SF ZF AF PF; shifts and rotates: AF,
OF past a count of 1, CF past the width; bt*: OF SF AF PF; and/or/xor/test: AF), but a real
CPU computes them deterministically, and differently per vendor and model. A program can read
them (`pushf`), so on a live thread only the host CPU's answer is transparent.

emu stays pure: by default it computes those bits with its own model (QEMU's, so Unicorn
agrees on them), and the tests that compare it with Unicorn mask them (`emu.undefined_flags`).
A caller that runs plans on behalf of a real thread passes a `FlagsOracle` to `emu.compile`
(stepper passes one that runs the operation on the CPU itself, stepper/host_flags.py); every
handler whose instruction has undefined flags then asks it for all six status flags, from the
operand values, and keeps computing the result itself.

An oracle function gets the two operand values (unsigned, `bits` wide, as the table below
says) and the rflags before the instruction, and returns the rflags after it: the status
bits (CF PF AF ZF SF OF) are the CPU's, every other bit is the input's. Its `operation`
raises `emu.Unsupported` when it cannot compute that operation: the instruction is then not
emulated (a live engine runs it on the CPU instead).
"""

from __future__ import annotations

from typing import Callable, Protocol

FlagsFunction = Callable[[int, int, int], int]

#: operation -> (operand widths it exists for, what `a` and `b` are). The operation is run
#: in its register form; the flags do not depend on where the operands came from.
OPERATIONS: dict[str, tuple[tuple[int, ...], str]] = {
    "mul": ((8, 16, 32, 64), "a: the accumulator (al/ax/eax/rax), b: the source"),
    "imul1": ((8, 16, 32, 64), "one-operand imul: a the accumulator, b the source"),
    "imul2": ((16, 32, 64), "truncating imul (two and three operands): a * b"),
    **{name: ((8, 16, 32, 64), "a: the value, b: the count (already masked, never 0)")
       for name in ("shl", "shr", "sar", "rol", "ror")},
    **{name: ((16, 32, 64), "a: the bit base, b: the bit offset (register base: mod width)")
       for name in ("bt", "bts", "btr", "btc")},
    **{name: ((8, 16, 32, 64), "a: the destination, b: the source")
       for name in ("and", "or", "xor", "test")},
}


class FlagsOracle(Protocol):
    """Computes the status flags of an operation with undefined flags (see module doc)."""

    def operation(self, name: str, bits: int) -> FlagsFunction:
        """fn(a, b, rflags_before) -> rflags_after, for `name` (a key of OPERATIONS) on
        `bits`-wide operands; raises emu.Unsupported if this oracle cannot compute it."""
        ...
