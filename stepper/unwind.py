"""Unwind a thread's stack with the call-frame information (CFI) of the loaded objects.

    from stepper import unwind, unwind_objects
    objects = unwind_objects.process_objects(pid, hit.read)
    for frame in unwind.frames(hit.regs, hit.read, objects):
        print(hex(frame.pc), frame.function, frame.how)
    back = unwind.caller(hit.regs, hit.read, objects)   # {"rip": return address, "rsp": ...}

Why a module: `finish()` needs the return address and the stack pointer after the return
from anywhere in a function, and stack traces need every caller, in programs built without
frame pointers (Debian's are). The rules come from `.eh_frame`/`.debug_frame` (stepper.cfi)
and are applied here, one frame at a time (DWARF 5, section 6.4): the CFA is a register plus
an offset or an expression; each saved register is at CFA+N, is CFA+N, is another register,
or is given by an expression; the return address is column 16 (rip).

A pc that no FDE covers is unwound through rbp (the frame-pointer chain) and its frame is
marked `how="fp"`, except at a function's first instruction (`how="entry"`: the return
address is at [rsp], rbp is still the caller's); a frame the CFI describes is `how="cfi"`. A signal trampoline
(`__restore_rt`: its CIE has the 'S' augmentation, its rules read the ucontext_t the kernel
pushed) is unwound like any other frame and marked `signal=True`; the frame it returns to is
looked up at its exact pc, since that pc was interrupted, not called from.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .cfi import Row
from .cfi_expr import DWARF_REGS, UnwindError, evaluate, read_exact, read_word, reg_name
from .unwind_objects import CodeObject, find

__all__ = ["Frame", "frames", "caller", "step", "UnwindError"]

MASK = (1 << 64) - 1
_U64 = struct.Struct("<Q").unpack_from
RA = 16  # the return-address column of x86-64 CFI
#: Preserved across calls by the System V x86-64 ABI: unchanged in the caller unless the
#: CFI says where the callee saved them. Every other register is unknown in a caller.
CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")

Read = Callable[[int, int], bytes]


@dataclass
class Frame:
    """One physical frame: `pc` is where it stopped (the innermost) or where it resumes (a
    caller: the return address); `regs` are the registers known in it; `cfa` its canonical
    frame address (the rsp before the call that made it), None when unwound by rbp."""

    pc: int
    regs: dict[str, int]
    cfa: int | None = None
    object: str | None = None
    function: str | None = None
    offset: int | None = None
    how: str = "cfi"                 # "cfi", "fp" or "entry": how its caller was found
    signal: bool = False             # a signal trampoline (the handler returns into it)
    error: str | None = field(default=None)   # why unwinding stopped at this frame, if it did

    def describe(self) -> str:
        name = self.function or "??"
        if self.function is not None and self.offset:
            name += f"+{self.offset:#x}"
        return f"{self.pc:#x} {name}" + (f" ({self.object})" if self.object else "")


@dataclass
class _Step:
    regs: dict[str, int]            # the caller's registers
    cfa: int | None
    how: str
    signal: bool                    # the frame just unwound is a signal trampoline
    object: CodeObject | None


def step(regs: Mapping[str, int], read: Read, objects: list[CodeObject],
         exact: bool = True) -> _Step | None:
    """Unwind one frame: the caller's registers, or None at the outermost frame (the CFI
    leaves rip undefined there, as `_start` and `clone` do).

    `exact`: the pc was interrupted (innermost frame, or the frame a signal trampoline
    returns to) rather than returned to; a return address is looked up at pc - 1, since the
    call may be the last instruction of its function (a noreturn callee). Raises UnwindError
    with the reason when the frame cannot be unwound.
    """
    pc = regs["rip"]
    lookup = pc if exact else pc - 1
    return _step(regs, read, find(objects, lookup), lookup)


def _step(regs: Mapping[str, int], read: Read, obj: CodeObject | None,
          lookup: int) -> _Step | None:
    row = None
    if obj is not None:
        row = obj.cfi.row(lookup - obj.bias)
    if row is None:
        if obj is not None and lookup == regs["rip"] and (obj.symbol(lookup) or ("", 1))[1] == 0:
            return _at_entry(regs, read, obj)
        return _by_frame_pointer(regs, read, obj)
    return _by_cfi(regs, read, obj, row)


def _by_cfi(regs: Mapping[str, int], read: Read, obj: CodeObject, row: Row) -> _Step | None:
    rule = row.cfa
    base = row.base
    if base is not None:
        value = regs.get(base)
        if value is None:
            raise UnwindError(f"the CFA at {regs['rip']:#x} is {base}+{rule.offset}, "
                              f"and {base} is not known in this frame")
        cfa = (value + rule.offset) & MASK
    elif rule.expr is not None:
        cfa = evaluate(obj.cfi.expression(rule.expr), regs, read)
    else:
        raise UnwindError(f"no CFA rule at {regs['rip']:#x} in {obj.path}")
    caller = {name: regs[name] for name in CALLEE_SAVED if name in regs}
    caller["rsp"] = cfa
    # The registers saved at CFA+N sit side by side: one read for all of them.
    saved = row.saved
    if saved:
        data = read_exact(read, (cfa + row.low) & MASK, row.span)
        for name, at in saved:
            caller[name] = _U64(data, at)[0]
    for number, reg_rule in row.others:                 # xmm and other columns: not tracked
        name = reg_name(number) if number != RA else "rip"
        value = _apply(reg_rule, number, cfa, regs, read, obj)
        if value is None:
            caller.pop(name, None)
        else:
            caller[name] = value
    if RA not in row.rules:
        raise UnwindError(f"no return-address rule at {regs['rip']:#x} in {obj.path}")
    if "rip" not in caller:
        return None                                     # rip undefined: outermost frame
    return _Step(caller, cfa, "cfi", row.signal, obj)


def _apply(rule, number: int, cfa: int, regs: Mapping[str, int], read: Read,
           obj: CodeObject, window: tuple[int, bytes] | None = None) -> int | None:
    kind = rule.type
    if kind == "UNDEFINED":
        return None
    if kind == "SAME_VALUE":
        return regs.get(reg_name(number))
    if kind == "OFFSET":
        address = (cfa + rule.arg) & MASK
        if window is not None:
            at = address - window[0]
            return int.from_bytes(window[1][at:at + 8], "little")
        return read_word(read, address)
    if kind == "VAL_OFFSET":
        return (cfa + rule.arg) & MASK
    if kind == "REGISTER":
        return regs.get(reg_name(rule.arg))
    if kind == "EXPRESSION":
        return read_word(read, evaluate(obj.cfi.expression(rule.arg), regs, read, push=cfa))
    if kind == "VAL_EXPRESSION":
        return evaluate(obj.cfi.expression(rule.arg), regs, read, push=cfa)
    raise UnwindError(f"register rule {kind} for {reg_name(number)} is not supported")


def _by_frame_pointer(regs: Mapping[str, int], read: Read,
                      obj: CodeObject | None) -> _Step | None:
    """No CFI covers the pc: follow the rbp chain ([rbp] = caller's rbp, [rbp+8] = return
    address), which is right only if the function keeps a frame pointer."""
    rbp = regs.get("rbp")
    if not rbp or rbp & 7 or rbp < regs.get("rsp", 0):
        where = obj.path if obj is not None else "no mapped object"
        raise UnwindError(f"no call-frame information covers {regs['rip']:#x} ({where}) "
                          "and rbp does not hold a frame pointer")
    caller = {name: regs[name] for name in CALLEE_SAVED if name in regs}
    caller["rbp"] = read_word(read, rbp)
    caller["rip"] = read_word(read, rbp + 8)
    caller["rsp"] = (rbp + 16) & MASK
    return _Step(caller, None, "fp", False, obj)


def _at_entry(regs: Mapping[str, int], read: Read, obj: CodeObject) -> _Step:
    """No CFI, stopped at a function's first instruction (a probe at its entry): nothing of
    it has run, so the return address is at [rsp] and rbp is still the caller's; the frame
    pointer chain would skip the caller here."""
    caller = {name: regs[name] for name in CALLEE_SAVED if name in regs}
    caller["rip"] = read_word(read, regs["rsp"])
    caller["rsp"] = (regs["rsp"] + 8) & MASK
    return _Step(caller, caller["rsp"], "entry", False, obj)


def caller(regs: Mapping[str, int], read: Read, objects: list[CodeObject]) -> dict | None:
    """The registers the caller of the innermost frame will have right after the return:
    `rip` (the return address), `rsp` (the CFA) and the callee-saved registers the CFI
    restores. None at the outermost frame. What `finish()` needs from any pc."""
    result = step(regs, read, objects, exact=True)
    return None if result is None else dict(result.regs)


def _name(frame: Frame, obj: CodeObject, at: int) -> None:
    """Name `frame` after the function holding `at` (its pc, or pc - 1 for a return
    address, whose call may end its function); the offset is from the pc itself."""
    named = obj.symbol(at)
    frame.function, frame.offset = (None, None) if named is None else \
        (named[0], named[1] + frame.pc - at)


def frames(regs: Mapping[str, int], read: Read, objects: list[CodeObject],
           limit: int = 64) -> list[Frame]:
    """The physical frames of a stopped thread, innermost first, at most `limit`.

    `regs` holds at least rip and rsp (rbp and the other callee-saved registers as the
    kernel gave them); `read(address, size)` reads the process memory; `objects` is
    unwind_objects.process_objects(pid, read). Unwinding stops at the outermost frame, at
    `limit`, or at a frame it cannot unwind: then that frame's `error` says why. It also
    stops where the stack would not grow toward higher addresses (a corrupt or looping
    chain), except across a signal frame (sigaltstack).
    """
    current = {name: regs[name] for name in DWARF_REGS if name in regs}
    result: list[Frame] = []
    exact = True
    previous_cfa: int | None = None
    while len(result) < limit:
        pc = current["rip"]
        lookup = pc if exact else pc - 1
        obj = find(objects, lookup)
        # `current` is a new dict at every frame and never changed after: no copy
        frame = Frame(pc=pc, regs=current, object=obj.path if obj else None)
        if obj is not None:
            _name(frame, obj, lookup)
        result.append(frame)
        try:
            unwound = _step(current, read, obj, lookup)
        except UnwindError as e:
            frame.error = str(e)
            break
        if unwound is None:
            break
        frame.cfa, frame.how, frame.signal = unwound.cfa, unwound.how, unwound.signal
        if unwound.signal and not exact and obj is not None:
            _name(frame, obj, pc)               # a trampoline is named at its own pc, as gdb does
        next_sp = unwound.regs.get("rsp", 0)
        if not unwound.regs.get("rip"):
            break                                       # a zero return address ends stacks
        if not unwound.signal and next_sp <= current.get("rsp", 0):
            frame.error = f"the stack does not grow past {next_sp:#x}: stopped"
            break
        if previous_cfa is not None and unwound.cfa == previous_cfa and not unwound.signal:
            frame.error = "the same frame twice: stopped"
            break
        previous_cfa = unwound.cfa
        exact = unwound.signal
        current = unwound.regs
    return result
