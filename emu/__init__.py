"""emu: decode x86-64 instructions with capstone and emulate the common probe-site ones.

Pure: no ptrace here. The same prepared plan runs on a live thread (stepper) and on the
in-memory `FlatState` used by the tests.

    >>> import emu
    >>> insn = emu.decode(b"\\x55", 0x401000)          # push rbp
    >>> state = emu.FlatState({"rsp": 0x8000, "rbp": 0x1234, "rip": 0x401000})
    >>> state.map(0x7000, bytes(0x1000))
    >>> emu.execute(insn, state)
    >>> hex(state.regs["rsp"]), state.read(0x7ff8, 8).hex(), hex(state.regs["rip"])
    ('0x7ff8', '3412000000000000', '0x401001')
"""

from .decode import Instruction, compile, decode, execute, length, straddling, text
from .errors import DecodeError, EmuError, MemoryFault, Unsupported
from .semantics import undefined_flags
from .state import GENERAL_REGISTERS, REGISTER_NAMES, VECTOR_REGISTERS, FlatState, State

__all__ = [
    "Instruction", "decode", "compile", "execute", "length", "straddling", "text",
    "undefined_flags",
    "DecodeError", "EmuError", "MemoryFault", "Unsupported",
    "FlatState", "State", "REGISTER_NAMES", "GENERAL_REGISTERS", "VECTOR_REGISTERS",
]
