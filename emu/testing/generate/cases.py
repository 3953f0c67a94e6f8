"""Cases: a family's spec solved against drawn registers so its memory operand lands where
chosen, encoded, and placed in the layout; `example_case` for hand-made ones.
"""

from __future__ import annotations

from dataclasses import replace

from capstone import x86_const as X
from hypothesis import assume
from hypothesis import strategies as st

from ...state import REGISTER_NAMES

from .encoding import GAS_SSE_TEXTS, GAS_TEXTS, _gas_sse, _md, encode, gas_encodings, matches
from .families import ALIGNED_FAMILIES, Builder, FAMILIES
from .machine import AC, IF, IOPL, Case, HIGH8, LAYOUT, M128, M64, PAGE, R32, R64, REGION, REGS, REX_ONLY, RegionSpec, USER_FLAGS, XMM, ZERO_FILL, case_from
from .operand_specs import Mem, Reg, Spec
from .values import _BOOLS, _either, _ints, _pick, aim, layout, value


# ---------------------------------------------------------------- solving and encoding


def _needs_rex(spec: Spec) -> bool:
    names = set()
    for op in spec.operands:
        if isinstance(op, Reg):
            names.add(op.name)
        elif isinstance(op, Mem):
            names.update(n for n in (op.base, op.index) if n)
    data64 = any(isinstance(op, Reg) and op.name in R64 for op in spec.operands)
    return bool(names & REX_ONLY) or (data64 and spec.mnemonic not in ("push", "pop", "jmp", "call"))


def _fix_high_bytes(spec: Spec) -> Spec:
    """ah/bh/ch/dh cannot appear with REX (keystone would abort the process): use al.. instead."""
    if not any(isinstance(op, Reg) and op.name in HIGH8 for op in spec.operands) or not _needs_rex(spec):
        return spec
    low = {h: h[0] + "l" for h in HIGH8}
    return replace(spec, operands=tuple(Reg(low.get(op.name, op.name)) if isinstance(op, Reg) else op
                                        for op in spec.operands))


def _full(name: str) -> str:
    """The 64-bit register holding `name`."""
    for size in (8, 4, 2, 1):
        if name in REGS[size]:
            i = REGS[size].index(name)
            return R64[i % 16] if name not in HIGH8 else R64[HIGH8.index(name)]
    raise KeyError(name)


def _solve(mem: Mem, regs: dict[str, int], next_ip: int, draw) -> Mem:
    """Pick register values (or the displacement, or a segment base) so the operand's effective
    address is `mem.aim`. Mutates `regs`; returns the operand with its final displacement."""
    seg_key = {"fs": "fs_base", "gs": "gs_base", None: None}[mem.seg]
    aim = mem.aim
    if mem.absolute:
        if seg_key:
            disp = draw(_ints(0, 0xFFFF))
            regs[seg_key] = (aim - disp) & M64
        else:
            disp = aim
        return replace(mem, disp=disp)
    if mem.rip:
        if seg_key:
            disp = draw(_ints(-0x1000, 0x1000))
            regs[seg_key] = (aim - next_ip - disp) & M64
        else:
            disp = aim - next_ip
        return replace(mem, disp=disp)
    addr32 = mem.base in R32 or mem.index in R32
    wrap = 0xFFFFFFFF if addr32 else M64
    seg = regs[seg_key] if seg_key else 0
    if addr32:
        if seg_key:  # any 32-bit address works: move the segment base to reach the aim
            seg = regs[seg_key] = (aim - draw(_ints(0, 0xFFFFFFFF))) & M64
        elif aim > wrap:
            return replace(mem, aim=0)
    want = (aim - seg) & wrap  # what base + index*scale + disp must equal, modulo the width
    disp = mem.disp
    base = _full(mem.base) if mem.base else None
    index = _full(mem.index) if mem.index else None
    if base and index and base != index:
        regs[base] = (regs[base] & ~wrap | (want - regs[index] * mem.scale - disp) & wrap) & M64
        return mem
    coeff = (1 if base else 0) + (mem.scale if index else 0)
    reg = base or index
    if reg is None:
        return replace(mem, aim=0)  # [disp32] without a segment: only reachable below 2 GiB
    rest = (want - disp) & wrap
    value, remainder = divmod(rest, coeff)
    disp += remainder
    if disp > 0x7FFFFFFF:
        disp -= coeff
        value += 1
    regs[reg] = (regs[reg] & ~wrap | value) & M64
    return replace(mem, disp=disp)


def _encode_spec(spec: Spec, regs: dict[str, int], address: int, draw) -> tuple[Spec, bytes] | None:
    """Solve the memory operand (two passes for RIP-relative: the length must be known) and
    encode; None when keystone refuses or capstone disagrees."""
    mem_i = next((i for i, op in enumerate(spec.operands) if isinstance(op, Mem)), None)
    if mem_i is None:
        code = encode(spec.text(), address)
        return (spec, code) if code and matches(spec, code, address) else None
    mem = spec.operands[mem_i]
    probe = encode(replace(spec, operands=_with(spec.operands, mem_i, replace(mem, disp=0x100))).text(), address)
    if not probe:
        return None
    solved = _solve(mem, regs, address + len(probe), draw)
    spec = replace(spec, operands=_with(spec.operands, mem_i, solved))
    code = encode(spec.text(), address)
    if not code or (solved.rip and len(code) != len(probe)) or not matches(spec, code, address):
        return None
    return spec, code


def _with(ops: tuple, i: int, op) -> tuple:
    return ops[:i] + (op,) + ops[i + 1:]


# ---------------------------------------------------------------- strategies: cases


_XMM_VALUE = st.one_of(st.integers(0, M128), st.sampled_from((0, M128, 1 << 127, M64, M64 << 64)))


def register_state(draw, base: int, vector: bool = False) -> dict[str, int]:
    """Random registers, user rflags, fs/gs bases inside their regions, rsp in the stack;
    with `vector`, full 128-bit values in xmm0..xmm15 (else they stay zero, and are still
    compared)."""
    regs = {name: value(draw, base) for name in REGISTER_NAMES[:16]}
    if vector:
        regs.update({name: draw(_XMM_VALUE) for name in XMM})
    stack_off, stack_len, _ = REGION["stack"]
    rsp_off = draw(_either(
        _ints(1, stack_len // 8 - 1).map(lambda q: q * 8),
        _ints(-16, stack_len + 16),
    ))
    regs["rsp"] = base + stack_off + rsp_off
    if draw(_BOOLS):  # a frame pointer into mapped memory (leave)
        regs["rbp"] = base + stack_off + draw(_ints(-8, stack_len + 8))
    flags = 0x202
    for bit in USER_FLAGS:
        if draw(_BOOLS):
            flags |= bit
    regs["rflags"] = flags
    regs["fs_base"] = base + REGION["fs"][0] + draw(_ints(0, PAGE - 1))
    regs["gs_base"] = base + REGION["gs"][0] + draw(_ints(0, PAGE - 1))
    return regs


@st.composite
def cases(draw, family: str) -> Case:
    """A Case of one family (a key of FAMILIES)."""
    base, address = layout(draw)
    regs = register_state(draw, base, vector=family.startswith("sse"))
    if family == "nop":
        text = draw(_pick(GAS_TEXTS[1:]))
        code = gas_encodings()[text]
        assume(len(code) == next(_md.disasm(code, address, 1)).size)
    elif family == "sse_movd" and draw(_ints(0, 5)) == 0:
        text = draw(_pick(GAS_SSE_TEXTS))
        code = _gas_sse()[text]
        regs["rax"] = aim(draw, base, 8)
    else:
        spec = _fix_high_bytes(FAMILIES[family](Builder(draw, base, address)))
        encoded = _encode_spec(spec, regs, address, draw)
        assume(encoded is not None)
        spec, code = encoded
        text = spec.text()
        if family in ALIGNED_FAMILIES:  # the solver cannot always reach the aim exactly
            insn = next(_md.disasm(code, address, 1))
            assume(not any(op.type == X.X86_OP_MEM and _effective_address(op.mem, insn, regs) % 16
                           for op in insn.operands))
    if family == "nop" and draw(_ints(0, 4)) == 0:
        text, code = "endbr64", gas_encodings()["endbr64"]
    regs["rip"] = address
    return _finish(draw, family, text, code, regs, base)


def _finish(draw, family: str, text: str, code: bytes, regs: dict[str, int], base: int) -> Case:
    """Lay out the regions: random contents, interesting values where the operand and the
    stack point, and the instruction in the read-only code page."""
    seed = draw(_ints(0, 2**32 - 1))
    patches: list[tuple[int, bytes]] = []
    for key in ("rsp", "rbp"):
        patches.append((regs[key], value(draw, base).to_bytes(8, "little")))
    insn = next(_md.disasm(code, regs["rip"], 1))
    for op in insn.operands:
        if op.type == X.X86_OP_MEM:
            aim = _effective_address(op.mem, insn, regs)
            blob = b"".join(value(draw, base).to_bytes(8, "little") for _ in range(max(1, op.size // 8)))
            patches.append((aim, blob))
    if insn.id == X.X86_INS_POPFQ:
        # Unicorn runs at CPL 0, where POPF may change IF and IOPL; at CPL 3 (the only
        # privilege the emulator models, SDM Vol. 2B POPF) they are left alone. Keep IF=1,
        # IOPL=0 in the popped image so both agree; tests/emu/test_regressions.py checks the
        # user-mode rule on its own.
        # Later patches win, and rbp's may cover [rsp]: fix the image as finally laid out.
        image = bytearray(patches[0][1])
        for address, blob in patches[1:]:
            for i, byte in enumerate(blob):
                if 0 <= address + i - regs["rsp"] < 8:
                    image[address + i - regs["rsp"]] = byte
        popped = int.from_bytes(image, "little")
        patches.append((regs["rsp"], ((popped | IF) & ~IOPL & M64).to_bytes(8, "little")))
    if regs["rflags"] & AC and _misaligned(insn, regs):
        # With AC set a misaligned access raises #AC (SIGBUS on Linux, where CR0.AM is on),
        # but only at CPL 3 (SDM Vol. 3A 6.15, Interrupt 17); Unicorn runs at CPL 0 and never
        # raises it. Keep AC only where every access is aligned; test_regressions.py checks
        # the emulator's #AC rule itself.
        regs["rflags"] &= ~AC
    regions = []
    for i, (name, offset, pages, writable) in enumerate(LAYOUT):
        start, end = base + offset, base + offset + pages * PAGE
        own = tuple((a, blob) for a, blob in patches if a < end and a + len(blob) > start)
        own += ((regs["rip"], code),) if name == "code" else ()
        regions.append(RegionSpec(base + offset, pages * PAGE, writable, (seed + i) & 0xFFFFFFFF,
                                  own, name))
    return case_from(family, text, code, regs, regions)


_STACK = {X.X86_INS_PUSH, X.X86_INS_POP, X.X86_INS_CALL, X.X86_INS_RET, X.X86_INS_LEAVE,
          X.X86_INS_PUSHFQ, X.X86_INS_POPFQ}


def _misaligned(insn, regs: dict[str, int]) -> bool:
    """Could one of the instruction's 2-, 4-, 8- or 16-byte data accesses be misaligned?"""
    if insn.id in _STACK and (regs["rsp"] % 8 or (insn.id == X.X86_INS_LEAVE and regs["rbp"] % 8)):
        return True
    if insn.id in (X.X86_INS_LEA, X.X86_INS_NOP):
        return False
    return any(op.type == X.X86_OP_MEM and op.size in (2, 4, 8, 16)
               and _effective_address(op.mem, insn, regs) % op.size for op in insn.operands)


def _effective_address(mem, insn, regs: dict[str, int]) -> int:
    """The address a capstone memory operand points at (for placing interesting values)."""
    from ...registers import GPR
    a = mem.disp
    if mem.base == X.X86_REG_RIP:
        a += insn.address + insn.size
    elif mem.base:
        name, size, _ = GPR[mem.base]
        a += regs[name] & ((1 << (8 * size)) - 1)
    if mem.index:
        name, size, _ = GPR[mem.index]
        a += (regs[name] & ((1 << (8 * size)) - 1)) * mem.scale
    if insn.addr_size == 4:
        a &= 0xFFFFFFFF
    if mem.segment == X.X86_REG_FS:
        a += regs["fs_base"]
    elif mem.segment == X.X86_REG_GS:
        a += regs["gs_base"]
    return a & M64


def example_case(text: str, address: int = 0x401000, memory: dict[int, bytes] | None = None,
                 **regs: int) -> Case:
    """A hand-made case in the standard layout around `address` (code page = its page; data
    at +0x2000, read-only data +0x5000, stack +0x7000 with rsp at +0x8000, fs +0xA000, gs
    +0xC000), region contents zero except `memory` ({address: bytes}); for regression tests,
    docs and quick checks. The encoding comes from keystone, or GNU as for GAS_TEXTS."""
    base = address & ~(PAGE - 1)
    code = encode(text, address) or gas_encodings().get(text)
    if not code:
        raise ValueError(f"cannot assemble {text!r}")
    full = {"rsp": base + REGION["stack"][0] + 0x1000, "fs_base": base + REGION["fs"][0],
            "gs_base": base + REGION["gs"][0], "rip": address}
    full.update(regs)
    patches = tuple((memory or {}).items())
    regions = []
    for name, offset, pages, writable in LAYOUT:
        start, end = base + offset, base + offset + pages * PAGE
        own = tuple((a, blob) for a, blob in patches if a < end and a + len(blob) > start)
        own += ((address, code),) if name == "code" else ()
        regions.append(RegionSpec(start, pages * PAGE, writable, ZERO_FILL, own, name))
    return case_from("example", text, code, full, regions)
