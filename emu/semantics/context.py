"""What a family handler gets: the instruction's operands compiled once, and its constants."""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Union

from capstone import x86_const as X

from ..errors import Unsupported
from ..operands import Operand, compile_operand


class Spec(NamedTuple):
    """One row of the semantics table."""

    build: Callable[["Context"], Callable[[object], None]]
    #: rflags bits left undefined: a mask, or a function (capstone insn, regs before) -> mask
    undefined: Union[int, Callable[[object, Mapping[str, int]], int]] = 0


class Context:
    """Everything about one instruction that does not depend on the machine state."""

    __slots__ = ("insn", "keys", "flags_oracle", "next_ip", "addr32", "opsize16", "ops", "RIP",
                 "RSP", "FLAGS", "RAX", "RCX", "RDX")

    def __init__(self, insn, keys: Mapping[str, object], flags_oracle=None) -> None:
        self.insn = insn
        self.keys = keys
        self.flags_oracle = flags_oracle
        self.next_ip = insn.address + insn.size
        self.addr32 = X.X86_PREFIX_ADDRSIZE in insn.prefix
        # 0x66 selects 16 bits unless REX.W asks for 64 (the padded `data16 data16 rex.W call
        # __tls_get_addr` of TLS code is an ordinary 64-bit call on Intel and AMD alike).
        self.opsize16 = X.X86_PREFIX_OPSIZE in insn.prefix and not insn.rex & 0x8
        self.ops: list[Operand] = [
            compile_operand(op, self.next_ip, keys, self.addr32) for op in insn.operands]
        self.RIP, self.RSP, self.FLAGS = keys["rip"], keys["rsp"], keys["rflags"]
        self.RAX, self.RCX, self.RDX = keys["rax"], keys["rcx"], keys["rdx"]

    def native_flags(self, operation: str, bits: int):
        """The flags oracle's function for `operation` (emu.flag_oracle.OPERATIONS) on
        `bits`-wide operands, or None when there is no oracle (emu's own model then computes
        the undefined flags). Raises Unsupported when the oracle cannot compute it."""
        if self.flags_oracle is None:
            return None
        return self.flags_oracle.operation(operation, bits)

    def operands(self, count: int) -> list[Operand]:
        """Exactly `count` operands, or Unsupported (a form the handler does not know)."""
        if len(self.ops) != count:
            raise Unsupported(f"unexpected form with {len(self.ops)} operand(s)")
        return self.ops

    def no_opsize16(self) -> None:
        """Refuse 16-bit stack and branch forms: rare, and Intel and AMD differ on them."""
        if self.opsize16:
            raise Unsupported("16-bit operand size on a stack or branch instruction")

    def mem_operand(self) -> object:
        """The capstone memory operand (for handlers that need its raw fields)."""
        for op in self.insn.operands:
            if op.type == X.X86_OP_MEM:
                return op
        raise Unsupported("expected a memory operand")
