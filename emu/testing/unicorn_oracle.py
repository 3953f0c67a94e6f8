"""Unicorn as the reference CPU: run ONE instruction from a FlatState and report what happened.

Why Unicorn: it is QEMU's x86 translator, an implementation independent of ours, and it runs
in-process thousands of times a second. Its known differences from a user-mode Linux CPU are
handled where they arise: it runs at CPL 0 (see the POPF note in emu.testing.generate.cases), it does not
check canonical addresses, and after a taken branch to unmapped memory it reports a *fetch*
fault for the next instruction, which here counts as the instruction having completed.

Mappings are the FlatState's regions, which must be whole pages: Unicorn maps pages, and a
partial page would let an access succeed in the oracle that FlatState faults on. The region
holding rip is mapped executable; nothing else is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import capstone
from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_64, UC_HOOK_MEM_INVALID
from unicorn import UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE
from unicorn import unicorn_const as U
from unicorn import x86_const as UX

from ..state import REGISTER_NAMES, VECTOR_REGISTERS

PAGE = 0x1000

UC_REGISTERS = {
    **{name: getattr(UX, f"UC_X86_REG_{name.upper()}") for name in REGISTER_NAMES[:17]},
    "rflags": UX.UC_X86_REG_RFLAGS,
    "fs_base": UX.UC_X86_REG_FS_BASE,
    "gs_base": UX.UC_X86_REG_GS_BASE,
}

#: xmm0..xmm15: Unicorn takes and returns them as 128-bit ints (SSE is enabled in its CR4)
UC_VECTOR_REGISTERS = {name: getattr(UX, f"UC_X86_REG_{name.upper()}") for name in VECTOR_REGISTERS}

#: every register the oracle sets and reads back, in this order
ALL_NAMES = REGISTER_NAMES + VECTOR_REGISTERS
_IDS = [{**UC_REGISTERS, **UC_VECTOR_REGISTERS}[name] for name in ALL_NAMES]

_ACCESS = {
    U.UC_MEM_READ_UNMAPPED: "read", U.UC_MEM_READ_PROT: "read",
    U.UC_MEM_WRITE_UNMAPPED: "write", U.UC_MEM_WRITE_PROT: "write",
    U.UC_MEM_FETCH_UNMAPPED: "fetch", U.UC_MEM_FETCH_PROT: "fetch",
}


@dataclass
class Outcome:
    """What one instruction did: the registers and every region's bytes afterwards, or a fault.

    `fault` is None (completed), "read" or "write" (a data access faulted), or "exception"
    (the CPU raised something else, e.g. #GP for a non-canonical address). `error` is set when
    the run itself went wrong (for the emulator side: Unsupported or a crash).
    """

    regs: dict[str, int] | None = None
    memory: dict[int, bytes] = field(default_factory=dict)
    fault: str | None = None
    fault_address: int | None = None
    error: str | None = None


class Oracle:
    """One Uc instance, reused: mappings are removed after every run."""

    def __init__(self) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.invalid: list[tuple[str, int, int]] = []
        self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_invalid)

    def _on_invalid(self, uc, access, address, size, value, user_data) -> bool:
        self.invalid.append((_ACCESS.get(access, "exception"), address, size))
        return False  # do not fix it up: let the access fault

    def run(self, state) -> Outcome:
        """Run the instruction at state.regs['rip'] (its bytes are in a state region)."""
        regions = state.regions()
        rip = state.regs["rip"]
        for start, data, _ in regions:
            if start % PAGE or len(data) % PAGE:
                raise ValueError(f"region {start:#x}+{len(data):#x} is not whole pages; "
                                 "the oracle maps pages and would not fault where FlatState does")
        if not any(start <= rip < start + len(data) for start, data, _ in regions):
            raise ValueError(f"rip {rip:#x} is not inside a mapped region holding the code")
        uc = self.uc
        mapped: list[tuple[int, int]] = []
        try:
            for start, data, writable in regions:
                perms = UC_PROT_READ | (UC_PROT_WRITE if writable else 0)
                if start <= rip < start + len(data):
                    perms |= UC_PROT_EXEC
                uc.mem_map(start, len(data), perms)
                mapped.append((start, len(data)))
                uc.mem_write(start, data)
            uc.ctl_remove_cache(rip, rip + 16)
            uc.reg_write_batch([(_IDS[i], state.regs.get(name, 0)) for i, name in enumerate(ALL_NAMES)])
            self.invalid.clear()
            # `until` = the next instruction ends QEMU's translation block there: otherwise it
            # translates on to the end of the page and an instruction straddling into an
            # unmapped page aborts the whole block before ours runs.
            until = rip + _length(state.read(rip, min(15, _room(regions, rip))), rip)
            try:
                uc.emu_start(rip, until, count=1)
            except UcError as e:
                outcome = self._fault(e, rip)
                if outcome is not None:
                    return outcome
            after = uc.reg_read(UX.UC_X86_REG_RIP)
            if not canonical(after):
                # QEMU does not check branch targets; the CPU raises #GP at the branch itself
                # (SDM Vol. 2A, JMP/CALL/RET, 64-bit mode exceptions).
                return Outcome(fault="exception", fault_address=after,
                               error="branch to a non-canonical address (#GP)")
            return Outcome(
                regs=dict(zip(ALL_NAMES, uc.reg_read_batch(_IDS))),
                memory={start: bytes(uc.mem_read(start, size)) for start, size in mapped},
            )
        finally:
            for start, size in mapped:
                uc.mem_unmap(start, size)

    def _fault(self, error: UcError, rip: int) -> Outcome | None:
        """None when the instruction completed and only the *next* fetch failed.

        The instruction's own page is mapped executable and holds all of it, so any fetch
        fault is for the next instruction. (QEMU reports the address cut to 52 bits, so it is
        not compared with rip.)"""
        if self.invalid and self.invalid[-1][0] == "fetch":
            if self.uc.reg_read(UX.UC_X86_REG_RIP) != rip:
                return None
            return Outcome(error=f"unicorn could not fetch the instruction itself: {error}")
        if self.invalid:
            kind, address, _ = self.invalid[0]
            return Outcome(fault=kind, fault_address=address)
        if error.errno == U.UC_ERR_EXCEPTION or error.errno in (
                U.UC_ERR_READ_UNMAPPED, U.UC_ERR_WRITE_UNMAPPED, U.UC_ERR_FETCH_UNMAPPED):
            return Outcome(fault="exception", error=str(error))
        return Outcome(error=f"unicorn: {error}")


_md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def _length(code: bytes, address: int) -> int:
    insn = next(_md.disasm(code, address, 1), None)
    if insn is None:
        raise ValueError(f"no valid instruction at {address:#x}: {code.hex()}")
    return insn.size


def _room(regions, address: int) -> int:
    """Bytes from `address` to the end of its region."""
    return next(start + len(data) - address for start, data, _ in regions
                if start <= address < start + len(data))


def canonical(address: int) -> bool:
    """Is `address` canonical for 48-bit virtual addresses (bits 63..47 all equal)?"""
    return (address >> 47) in (0, (1 << 17) - 1)


_oracle: Oracle | None = None


def run(state) -> Outcome:
    """Run one instruction of `state` (a FlatState, not modified) on the shared Unicorn."""
    global _oracle
    if _oracle is None:
        _oracle = Oracle()
    return _oracle.run(state)
