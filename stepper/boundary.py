"""Instruction boundaries inside functions: a breakpoint must replace an instruction's first
byte, and only decoding forward from a known boundary (the function's start) tells where the
boundaries are.

One implementation for the two places that check it: a probe spec against the file before
the program runs (stepper.specs) and a breakpoint against the process's memory at insertion
(stepper.breakpoints). Why a cache: decoding from the function's start for each probe made
N probes in one function cost N times the function (a thousand probes in one function took
25 s); here each function is decoded once, lazily and only as far as the farthest probe, and
a probe then costs a binary search. `Boundaries` holds the functions of one object (a file,
or one process's memory).
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterator

import capstone

import emu

__all__ = ["Boundaries", "FunctionStarts", "Read"]

#: read(address, size) -> the bytes there, possibly fewer (cut at the end of the code).
Read = Callable[[int, int], bytes]

_MAX_LENGTH = 15
_lengths = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)   # no detail: lengths only


def _instructions(code: bytes, address: int) -> Iterator[tuple[int, int]]:
    """(address, length) of each instruction decoded from `code`, stopping at bytes that do
    not decode (or are cut short)."""
    for insn_address, size, _mnemonic, _operands in _lengths.disasm_lite(code, address):
        yield insn_address, size


class FunctionStarts:
    """The instruction starts of one function, decoded from `start` as far as asked so far."""

    def __init__(self, start: int, read: Read) -> None:
        self.start = start
        self._read = read
        self._starts = [start]
        self._frontier = start      # the next address to decode; always in _starts
        self._stuck = False         # bytes at _frontier do not decode: nothing known past it

    def _extend(self, target: int) -> None:
        if self._stuck or self._frontier >= target:
            return
        code = self._read(self._frontier, target - self._frontier + _MAX_LENGTH)
        pc = self._frontier
        for address, size in _instructions(code, pc):
            pc = address + size
            if pc > target:
                break
            self._starts.append(pc)
            self._frontier = pc
            if pc == target:
                break
        if self._frontier < target and pc <= target:
            self._stuck = True      # stopped before reaching target: undecodable bytes

    def straddling(self, target: int) -> emu.Instruction | None:
        """The instruction that starts before `target` and covers it, or None when `target`
        starts an instruction (same contract as `emu.straddling`). DecodeError when bytes on
        the way do not decode (data in the function: the boundary cannot be known)."""
        if target <= self.start:
            return None
        self._extend(target)
        index = bisect.bisect_right(self._starts, target) - 1
        before = self._starts[index]
        if before == target:
            return None
        # The instruction at `before` covers target; at the frontier of a function stuck on
        # undecodable bytes, decoding it raises the DecodeError that says so.
        return emu.decode(self._read(before, _MAX_LENGTH), before)


class Boundaries:
    """The functions of one object whose instruction starts are known, by key (usually the
    function's address; the caller decides what identifies a function of its object)."""

    def __init__(self) -> None:
        self._functions: dict[object, FunctionStarts] = {}

    def straddling(self, start: int, target: int, read: Read,
                   key: object = None) -> emu.Instruction | None:
        """`FunctionStarts.straddling` for the function at `start`, decoded once per key."""
        key = start if key is None else key
        starts = self._functions.get(key)
        if starts is None:
            starts = self._functions[key] = FunctionStarts(start, read)
        return starts.straddling(target)
