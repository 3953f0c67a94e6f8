"""Instructions assembled with keystone at a fixed address, and a FlatState with a stack page
around them: the starting point of the emulator's own tests (no processes)."""

from __future__ import annotations

import keystone

import emu

KS = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
CODE = 0x401000


def asm(text: str, address: int = CODE) -> bytes:
    return bytes(KS.asm(text, address)[0])


def stack_state(**regs) -> emu.FlatState:
    """rip at CODE, rsp at 0x8000 inside a zeroed page at 0x7000, and `regs`."""
    state = emu.FlatState({"rsp": 0x8000, "rip": CODE, **regs})
    state.map(0x7000, bytes(0x1000))
    return state
