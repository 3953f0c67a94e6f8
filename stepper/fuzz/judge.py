"""Run one case on the emulator and on an oracle, and say whether (and how) they disagree.

The rules are the emulator test suite's (emu/testing/compare.py), extended to the xmm registers
and to the native oracle: every register must agree; every byte of every region; against
Unicorn, rflags except the bits `emu.undefined_flags` says are undefined for that instruction
and those operands (QEMU's undefined flags are its own); against the real CPU, every rflags
bit, the emulator running as on live threads (`run_emu(live=True)`: the undefined flags come
from the host CPU, stepper/host_flags.py). When the oracle faults, the emulator must raise
MemoryFault and leave the state exactly as it was. (A real CPU reports a signal, not the kind
of access, so against the native oracle any MemoryFault is the right answer.)
"""

from __future__ import annotations

import ctypes
import functools
import random
from dataclasses import dataclass

import emu
from emu.state import FlatState
from emu.testing import unicorn_oracle
from emu.testing.compare import ALL_NAMES, state_differences
from emu.testing.generate import ZERO_FILL, Case, RegionSpec
from emu.testing.unicorn_oracle import Outcome

XMM = emu.VECTOR_REGISTERS
#: Outcome.error values meaning "the oracle did not run this case" (see native.py)
SKIPPED = ("collision", "unloadable")
ALL_REGISTERS = ALL_NAMES  # every register compared: general, rip, rflags, bases, xmm


@functools.lru_cache(maxsize=1024)
def _random_bytes(seed: int, size: int) -> bytes:
    return bytes(size) if seed == ZERO_FILL else random.Random(seed).randbytes(size)


@functools.lru_cache(maxsize=1024)
def _contents(spec: RegionSpec) -> bytes:
    """RegionSpec.contents(), with the random part cached by (seed, size): cases that differ
    only in their patches (variants, corpus cases) share it."""
    if not spec.patches:
        return _random_bytes(spec.seed, spec.size)
    data = bytearray(_random_bytes(spec.seed, spec.size))
    for address, blob in spec.patches:
        lo, hi = max(address, spec.start), min(address + len(blob), spec.start + spec.size)
        if lo < hi:
            data[lo - spec.start:hi - spec.start] = blob[lo - address:hi - address]
    return bytes(data)


def state_of_region(spec: RegionSpec) -> bytes:
    """The initial contents of one region of a case."""
    return _contents(spec)


def state_of(case: Case) -> FlatState:
    """A fresh FlatState for `case`: a copy of its memory, built once for the regions (variants
    share them), with the case's registers."""
    state = _memory(case.regions).copy()
    state.regs.update(case.regs)
    if len(state.regs) != len(ALL_REGISTERS):
        unknown = sorted(set(state.regs) - set(ALL_REGISTERS))
        raise KeyError(f"unknown register(s): {', '.join(unknown)}")
    return state


@functools.lru_cache(maxsize=8)
def _memory(regions: tuple[RegionSpec, ...]) -> FlatState:
    """The regions mapped in a FlatState with default registers (copied, never run on)."""
    state = FlatState()
    for spec in regions:
        state.map(spec.start, _contents(spec), spec.writable)
    return state


_decoded: dict[tuple[bytes, int], emu.Instruction] = {}


def instruction(code: bytes, address: int) -> emu.Instruction:
    """emu.decode(code, address), cached. `code` may be the exact encoding or a longer window
    read from memory: both find the same entry (decoding and compiling costs ~100 us)."""
    code = bytes(code[:15])
    insn = _decoded.get((code, address))
    if insn is not None:
        return insn
    for n in range(1, len(code)):
        insn = _decoded.get((code[:n], address))
        if insn is not None:
            break
    else:
        insn = emu.decode(code, address)
    if len(_decoded) > 8192:
        _decoded.clear()
    _decoded[(insn.bytes, address)] = insn
    _decoded[(code, address)] = insn  # the window too: the oracle asks with one each case
    return insn


@functools.lru_cache(maxsize=4096)
def uses_xmm(insn: emu.Instruction) -> bool:
    """Does the instruction name an xmm register? (Only those can change one.)"""
    cs = insn.capstone
    return any(cs.reg_name(r).startswith("xmm") for r in (*cs.regs_access()[0], *cs.regs_access()[1])) \
        or any(op.type == 1 and cs.reg_name(op.reg).startswith("xmm") for op in cs.operands)


@dataclass
class EmuResult:
    outcome: Outcome
    unsupported: str | None = None


_live_plans: dict[emu.Instruction, object] = {}


def live_plan(insn: emu.Instruction):
    """`insn`'s plan as live threads run it: the host CPU computes its undefined flags."""
    plan = _live_plans.get(insn)
    if plan is None:
        from .. import host_flags
        if len(_live_plans) > 8192:
            _live_plans.clear()
        plan = _live_plans[insn] = emu.compile(insn, None, host_flags.get())
    return plan


def run_emu(case: Case, state: FlatState | None = None, live: bool = False) -> EmuResult:
    """Execute `case` with the emulator (on `state`, a fresh state_of(case) if not given);
    a crash is an outcome with `error` set. `live`: as on a live thread (`live_plan`)."""
    state = state if state is not None else state_of(case)
    before = dict(state.regs)
    try:
        insn = instruction(case.code, before["rip"])
        if live and insn.emulatable:
            live_plan(insn)(state)
        else:
            emu.execute(insn, state)
    except emu.MemoryFault as e:
        changed = [n for n in before if state.regs[n] != before[n]]
        changed += [f"memory at {s:#x}" for (s, d, _), spec in zip(state.regions(), case.regions)
                    if d != _contents(spec)]
        return EmuResult(Outcome(fault=e.access, fault_address=e.address,
                                 error=f"state changed before the fault: {', '.join(changed)}"
                                 if changed else None))
    except emu.Unsupported as e:
        return EmuResult(Outcome(error=f"Unsupported: {e.reason}"), unsupported=e.reason)
    except Exception as e:  # noqa: BLE001 - a crash is a finding, reported as a divergence
        return EmuResult(Outcome(error=f"emu crashed: {type(e).__name__}: {e}"))
    return EmuResult(Outcome(regs=dict(state.regs),
                             memory={start: data for start, data, _ in state.regions()}))


class UnicornOracle:
    """emu.testing's Unicorn oracle made fast enough to fuzz with, and given the xmm registers.

    Same rules as `emu.testing.unicorn_oracle.Oracle.run` (whose fault interpretation it calls):
    regions are whole pages, the one holding rip is executable, a fetch fault after the
    instruction means it completed, a branch to a non-canonical address is #GP. What differs
    is speed: mappings stay in place while consecutive cases have the same regions (a
    template's variants do), their memory is this object's (`Uc.mem_map_ptr`: bytes go in
    and out by one copy, not through `mem_write`/`mem_read`), and registers go in and out in
    one batch call each.
    """

    name = "unicorn"

    def __init__(self) -> None:
        from unicorn import x86_const as UX
        self.inner = unicorn_oracle.Oracle()
        self.uc = self.inner.uc
        self.names = ALL_REGISTERS
        ids = dict(unicorn_oracle.UC_REGISTERS)
        ids.update({f"xmm{n}": getattr(UX, f"UC_X86_REG_XMM{n}") for n in range(16)})
        self.ids = [ids[name] for name in self.names]
        self.gpr_names = emu.REGISTER_NAMES
        self.gpr_ids = self.ids[:len(self.gpr_names)]
        self._fast_registers()
        self.layout: tuple = ()
        self.loaded: dict[int, bytes] = {}  # what each mapped region holds now
        self.host: dict[int, ctypes.Array] = {}  # the memory behind each mapped region
        self.translated: int | None = None  # rip whose translation QEMU may have cached

    def _fast_registers(self) -> None:
        """The 64-bit registers go in and out in one C call each (emu.testing.unicorn_batch
        says why the binding's public batch calls are not used)."""
        from emu.testing.unicorn_batch import RegisterBatch
        self._gprs = RegisterBatch(self.uc, self.gpr_ids)
        self._xmms = RegisterBatch(self.uc, self.ids[len(self.gpr_ids):], width=16)

    def _write_gprs(self, values: list[int]) -> None:
        self._gprs.write(values)

    def _read_gprs(self) -> list[int]:
        return self._gprs.read()

    def _map(self, regions, rip: int) -> None:
        from unicorn import UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE
        layout = tuple((start, len(data), writable, start <= rip < start + len(data))
                       for start, data, writable in regions)
        if layout == self.layout:
            return
        for start, size, _, _ in self.layout:
            self.uc.mem_unmap(start, size)
            del self.host[start]
        self.layout = ()
        self.loaded = {}
        self.translated = None
        for start, size, writable, code in layout:
            if start % unicorn_oracle.PAGE or size % unicorn_oracle.PAGE:
                raise ValueError(f"region {start:#x}+{size:#x} is not whole pages; the oracle "
                                 "maps pages and would not fault where FlatState does")
            host = (ctypes.c_char * size)()
            self.uc.mem_map_ptr(start, size, UC_PROT_READ | (UC_PROT_WRITE if writable else 0)
                                | (UC_PROT_EXEC if code else 0), ctypes.addressof(host))
            self.host[start] = host  # kept while mapped
            self.layout += ((start, size, writable, code),)

    def run(self, state: FlatState) -> Outcome:
        from unicorn import UcError
        regions = state.regions()
        regs = state.regs
        rip = regs["rip"]
        if not any(start <= rip < start + len(data) for start, data, _ in regions):
            raise ValueError(f"rip {rip:#x} is not inside a mapped region holding the code")
        uc = self.uc
        try:
            self._map(regions, rip)
        except Exception:
            self.layout = ()
            raise
        loaded, host = self.loaded, self.host
        fresh_code = False
        for start, data, _ in regions:
            if loaded.get(start) != data:  # pages keep the last case's bytes: often the same
                ctypes.memmove(host[start], data, len(data))
                loaded[start] = data
                fresh_code = fresh_code or start <= rip < start + len(data)
        if fresh_code or rip != self.translated:  # QEMU caches translations: drop stale ones
            uc.ctl_remove_cache(rip, rip + 16)
            self.translated = rip
        room = next(start + len(data) - rip for start, data, _ in regions
                    if start <= rip < start + len(data))
        insn = instruction(state.read(rip, min(15, room)), rip)
        vector = uses_xmm(insn)
        self._write_gprs([regs[n] for n in self.gpr_names])
        if vector:
            self._xmms.write([regs.get(n, 0) for n in XMM])
        self.inner.invalid.clear()
        # Stop the translation block after the instruction (as the inner oracle does): else
        # QEMU translates on and an instruction before an unmapped page aborts the block.
        until = rip + insn.length
        try:
            uc.emu_start(rip, until, count=1)
        except UcError as e:
            outcome = self.inner._fault(e, rip)
            if outcome is not None:
                self._forget_writable(regions)
                return outcome
        after = dict(zip(self.gpr_names, self._read_gprs()))
        if vector:
            after.update(zip(XMM, self._xmms.read()))
        else:  # an instruction that names no xmm register cannot change one
            for n in XMM:
                after[n] = regs.get(n, 0)
        if not unicorn_oracle.canonical(after["rip"]):
            self._forget_writable(regions)
            return Outcome(fault="exception", fault_address=after["rip"],
                           error="branch to a non-canonical address (#GP)")
        memory = {}
        for start, data, writable in regions:  # Unicorn enforces the protections
            memory[start] = loaded[start] = host[start].raw if writable else data
        return Outcome(regs=after, memory=memory)

    def _forget_writable(self, regions) -> None:
        """After a fault the writable pages' bytes are not known: rewrite them next time."""
        for start, _, writable in regions:
            if writable:
                self.loaded.pop(start, None)

    def close(self) -> None:
        for start, size, _, _ in self.layout:
            self.uc.mem_unmap(start, size)
            del self.host[start]
        self.layout = ()


def unicorn_quirk(case: Case, emu_out: Outcome, oracle: Outcome) -> str | None:
    """A known Unicorn shortfall, not a divergence: QEMU does not raise #GP for a misaligned
    16-byte operand of an aligned SSE instruction (movaps, movdqa, pxor xmm, m128...); the
    CPU does (SDM Vol. 1, 4.1.1), the emulator reports a MemoryFault, and the native oracle
    confirms it. Returns why, or None."""
    if (emu_out.fault is not None and oracle.fault is None and not oracle.error
            and emu_out.fault_address is not None and emu_out.fault_address % 16
            and uses_xmm(instruction(case.code, case.address))):
        return "misaligned aligned-SSE access: unicorn does not raise #GP"
    if (emu_out.fault is not None and oracle.fault is None and not oracle.error
            and dict(case.regs).get("rflags", 0) & 0x40000):
        return "alignment check (rflags.AC): unicorn runs at CPL 0 and never raises #AC"
    return None


def compare(case: Case, emu_out: Outcome, oracle: Outcome, name: str,
            exact_flags: bool | None = None) -> list[str]:
    """What differs between the emulator's outcome and the oracle's (empty: they agree).
    `exact_flags` (default: for the native oracle) compares every rflags bit."""
    if exact_flags is None:
        exact_flags = name == "native"
    if oracle.fault is None and oracle.error:
        return [f"{name} failed: {oracle.error}"]
    if emu_out.fault is None and emu_out.error:
        return [emu_out.error]
    if oracle.fault is not None:
        where = f" at {oracle.fault_address:#x}" if oracle.fault_address is not None else ""
        what = oracle.error or oracle.fault
        if emu_out.fault is None:
            return [f"{name} faults ({what}{where}), emu completes"]
        problems = [f"emu {emu_out.error}"] if emu_out.error else []
        # Only two data accesses have an order to compare: a branch to a non-canonical target
        # whose push also faults is #GP first by the SDM (emu) but the push's fault on this
        # AMD CPU and on Unicorn; either way nothing changed, and stepper hands it to the CPU.
        # With rflags.AC, emu's first fault may be the alignment check Unicorn never raises.
        if (name == "unicorn" and oracle.fault in ("read", "write")
                and emu_out.fault in ("read", "write") and emu_out.fault != oracle.fault
                and not dict(case.regs).get("rflags", 0) & 0x40000):
            problems.append(f"fault kind: emu {emu_out.fault} at {emu_out.fault_address:#x}, "
                            f"unicorn {oracle.fault}{where}")
        return problems
    if emu_out.fault is not None:
        return [f"emu faults ({emu_out.fault} at {emu_out.fault_address:#x}), {name} completes"]
    if emu_out.regs == oracle.regs and emu_out.memory == oracle.memory:
        return []  # the same everywhere: nothing to mask or explain (the usual case)
    return state_differences(instruction(case.code, case.address), dict(case.regs), emu_out,
                             oracle, name, mask_undefined=not exact_flags)
