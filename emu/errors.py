"""Every exception the emulator raises, in one place, so callers can catch by kind."""

from __future__ import annotations


class EmuError(Exception):
    """Base class of the emulator's exceptions."""


class DecodeError(EmuError):
    """The bytes are not one complete, valid x86-64 instruction."""


class Unsupported(EmuError):
    """The instruction is valid but this emulator does not run it; `.reason` says why.

    A caller stepping a breakpoint falls back to executing the instruction out of line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MemoryFault(EmuError):
    """An access the CPU would fault on. The state was left exactly as it was before the
    instruction started, so the caller can let the real CPU raise the genuine fault."""

    def __init__(self, address: int, size: int, access: str) -> None:
        super().__init__(f"{access} of {size} byte(s) at {address:#x} faults")
        self.address = address
        self.size = size
        self.access = access  # "read" or "write"
