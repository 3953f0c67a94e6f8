"""Where fuzz cases come from: a pure function of (seed, case index), so a seeded run makes the
same cases whatever the number of workers or machines.

Generated cases: the emulator test suite's hypothesis strategies (`emu.testing.generate.cases`,
every family) are drawn by seeded Hypothesis runs (public API: `@given` + `@seed`), one run
per block of TEMPLATES drawn cases (family included), its seed derived from (seed, block). A
hypothesis draw costs milliseconds, so each drawn case (a *template*) is followed by
`VARIANTS - 1` cheap variants: the same instruction and memory, with every register that does
not form an address (and the flags) drawn afresh, all from one Random seeded by (seed,
template number). Address registers stay, so the template's aimed memory operand still lands
where the generator aimed it. Case i thus depends on (seed, i) only, through its block.

Corpus cases: every emulatable encoding of a corpus file (corpus/README.md) in turn, placed in
the generator's page layout at a random address, with random registers, rsp in the stack pages,
and each memory operand aimed (base or index register solved) into a region, across an edge or
into a gap.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from pathlib import Path

import capstone
from capstone import x86_const as X

import emu
from emu.registers import GPR
from emu.testing import generate as G
from emu.testing.generate import Case, RegionSpec

from ..errors import StepperError

M64 = (1 << 64) - 1
VARIANTS = 64
TEMPLATES = 8  # templates drawn per Hypothesis run (a chunk's worth: see runner.CHUNK)
FAMILY_NAMES = tuple(sorted(G.FAMILIES))
CONTENT_SEEDS = 64  # corpus cases draw region contents from this many seeds (cached)

_md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_md.detail = True
_FIXED = ("rip", "rsp", "rbp", "fs_base", "gs_base")


class CaseError(StepperError):
    """A corpus cannot be used for fuzzing."""


# ---------------------------------------------------------------- generated cases


@functools.lru_cache(maxsize=None)
def _strategy(family: str):
    return G.cases(family)


def template(seed: int, number: int) -> Case:
    """The `number`th hypothesis-drawn case of a run."""
    block, at = divmod(number, TEMPLATES)
    return _templates(seed, block)[at]


@functools.lru_cache(maxsize=2)
def _templates(seed: int, block: int) -> tuple[Case, ...]:
    """Templates [block * TEMPLATES, (block + 1) * TEMPLATES) of a run, drawn by one seeded
    Hypothesis run through its public API (`@given` + `@seed`, generate phase only, no
    database): the same seed gives the same examples, so a template depends on (seed, its
    number) only. One run per block, not per template: the run's set-up is shared, and its
    first example, always the simplest one, is drawn once and dropped."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as seeded
    from hypothesis import strategies as st

    drawn: list[Case] = []

    # What is drawn depends on the data only (Hypothesis checks that its examples replay).
    @seeded(int.from_bytes(hashlib.sha256(f"stepper-fuzz/{seed}/block/{block}".encode())
                           .digest()[:8], "little"))
    @settings(settings.get_profile("default"), database=None, derandomize=False,
              deadline=None, phases=[Phase.generate], max_examples=TEMPLATES + 1,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(st.data())
    def draw(data) -> None:
        family = data.draw(st.sampled_from(FAMILY_NAMES))
        drawn.append(data.draw(_strategy(family)))

    draw()
    if len(drawn) < TEMPLATES + 1:
        raise StepperError(f"the generator gave {len(drawn) - 1} of {TEMPLATES} cases for "
                           f"block {block} of seed {seed}")
    return tuple(drawn[1:TEMPLATES + 1])


def clear_caches() -> None:
    """Forget the drawn templates and variants (they are drawn again, identically)."""
    _templates.cache_clear()
    _variants.cache_clear()


def generated(seed: int, index: int) -> Case:
    """Case `index` of a generated run: a template, or a variant of the last template."""
    number, variant = divmod(index, VARIANTS)
    return _variants(seed, number)[variant]


@functools.lru_cache(maxsize=2)
def _variants(seed: int, number: int) -> tuple[Case, ...]:
    """Template `number` and its VARIANTS - 1 variants, drawn in one go from one Random seeded
    by (seed, number): the per-register draws come from one block of random bytes."""
    base = template(seed, number)
    keep = set(_FIXED) | _address_registers(base.code, base.address)
    layout = base.regions[0].start
    names = [name for name, _ in base.regs]
    redraw = [i for i, name in enumerate(names) if name not in keep and name != "rflags"]
    flags_at = names.index("rflags")
    rnd = random.Random(f"stepper-fuzz/{seed}/{number}/variants")
    unpack = struct.Struct(f"<{2 * len(redraw)}Q").unpack
    size = 16 * len(redraw)
    interesting, span = G.INTERESTING, G.SPAN
    start = [value for _, value in base.regs]
    out = [base]
    for _ in range(VARIANTS - 1):
        values = start[:]
        words = unpack(rnd.randbytes(size))
        for j, i in enumerate(redraw):
            # what _value draws, from two words: edge case, small, anything, or a pointer
            how, word = words[2 * j], words[2 * j + 1]
            kind = how & 3
            values[i] = (interesting[(how >> 2) % len(interesting)] if kind == 0
                         else ((how >> 2) % 129 - 64) & M64 if kind == 1
                         else word if kind == 2 else (layout + word % span) & M64)
        values[flags_at] = _flags(rnd)
        out.append(Case(base.family, base.text, base.code, tuple(zip(names, values)), base.regions))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _address_registers(code: bytes, address: int) -> frozenset[str]:
    """The 64-bit registers that form a memory operand's address in `code`."""
    insn = emu.decode(code, address).capstone
    names = set()
    for op in insn.operands:
        if op.type == X.X86_OP_MEM:
            for reg in (op.mem.base, op.mem.index):
                if reg in GPR:
                    names.add(GPR[reg][0])
    return frozenset(names)


def _value(rnd: random.Random, layout: int) -> int:
    """A register value drawn like the generator's: edge cases, small, anything, or a pointer."""
    kind = rnd.randrange(4)
    if kind == 0:
        return rnd.choice(G.INTERESTING)
    if kind == 1:
        return rnd.randint(-64, 64) & M64
    if kind == 2:
        return rnd.getrandbits(64)
    return (layout + rnd.randrange(G.SPAN)) & M64


def _flags(rnd: random.Random) -> int:
    flags, bits = 0x202, rnd.getrandbits(len(G.USER_FLAGS))
    for n, bit in enumerate(G.USER_FLAGS):
        if bits >> n & 1:
            flags |= bit
    return flags


# ---------------------------------------------------------------- corpus cases


def corpus_encodings(path: str | Path) -> list[bytes]:
    """Every emulatable encoding of a corpus (sorted, deduplicated), decoded at a probe address."""
    from .. import corpus as corpus_module
    rows = corpus_module.read(path)
    encodings = set()
    for row in rows:
        code = bytes.fromhex(row["bytes"])
        try:
            insn = emu.decode(code, 0x401000)
        except emu.DecodeError:
            continue
        if insn.emulatable:
            encodings.add(code[:insn.length])
    if not encodings:
        raise CaseError(f"{path}: no emulatable encoding to fuzz")
    return sorted(encodings)


def from_corpus(encodings: list[bytes], seed: int, index: int) -> Case:
    """Case `index` of a corpus run: encoding `index % len(encodings)` with a random state."""
    code = encodings[index % len(encodings)]
    # The page layout moves every VARIANTS cases (an oracle then keeps its mappings in
    # between); everything else is drawn per case.
    block = random.Random(f"stepper-fuzz-corpus/{seed}/block/{index // VARIANTS}")
    if block.getrandbits(1):
        base = block.randrange(0x10, (0xFFFF0000 - G.SPAN) // G.PAGE) * G.PAGE
    else:
        base = block.randrange(0x100000, (0x7FFFFFFF0000 - G.SPAN) // G.PAGE) * G.PAGE
    rnd = random.Random(f"stepper-fuzz-corpus/{seed}/{index}")
    address = base + rnd.randrange(0, G.PAGE - 16)
    regs = {name: _value(rnd, base) for name in G.REGISTER_NAMES[:16]}
    stack, length, _ = G.REGION["stack"]
    regs["rsp"] = base + stack + rnd.randrange(1, length // 8) * 8
    regs["rflags"] = _flags(rnd)
    regs["fs_base"] = base + G.REGION["fs"][0] + rnd.randrange(G.PAGE)
    regs["gs_base"] = base + G.REGION["gs"][0] + rnd.randrange(G.PAGE)
    regs["rip"] = address
    for n in range(16):
        regs[f"xmm{n}"] = rnd.getrandbits(128) if rnd.getrandbits(1) else _value(rnd, base)
    insn = next(_md.disasm(code, address, 1))
    extra: list[RegionSpec] = []
    aims = [regs["rsp"]]
    for op in insn.operands:
        if op.type == X.X86_OP_MEM:
            aims.append(_aim(rnd, op.mem, insn, regs, base, extra))
    # Contents from a small pool of seeds (cached, cheap), with drawn values where the
    # operands and the stack point.
    seed = rnd.randrange(CONTENT_SEEDS)
    patches = [(a, _value(rnd, base).to_bytes(8, "little")) for a in aims if a is not None]
    regions = []
    for i, (name, offset, pages, writable) in enumerate(G.LAYOUT):
        start, end = base + offset, base + offset + pages * G.PAGE
        own = tuple((a, blob) for a, blob in patches if a < end and a + len(blob) > start)
        own += ((address, code),) if name == "code" else ()
        regions.append(RegionSpec(start, end - start, writable, seed * 8 + i, own, name))
    regions += extra
    regions.sort(key=lambda r: r.start)
    ordered = G.REGISTER_NAMES + emu.VECTOR_REGISTERS
    return Case("corpus", f"{insn.mnemonic} {insn.op_str}".strip(), code,
                tuple((name, regs[name] & ((1 << 128) - 1 if name.startswith("xmm") else M64))
                      for name in ordered), tuple(regions))


def _aim(rnd: random.Random, mem, insn, regs: dict, base: int, extra: list) -> int | None:
    """Solve one register of a memory operand so it points where a random draw wants; for
    RIP-relative or absolute operands map the page(s) they point at instead."""
    kind = rnd.choice(("in",) * 6 + ("edge", "gap"))
    if kind == "gap":
        aim = base + rnd.choice(G.GAPS) + rnd.randrange(G.PAGE)
    else:
        name = rnd.choice(("data", "data", "rodata", "stack", "fs", "gs"))
        offset, length, _ = G.REGION[name]
        aim = base + offset + (rnd.randrange(length - 8) if kind == "in"
                               else rnd.choice((rnd.randint(-8, -1), length + rnd.randint(-7, 8))))
    seg = {X.X86_REG_FS: "fs_base", X.X86_REG_GS: "gs_base"}.get(mem.segment)
    wrap = 0xFFFFFFFF if insn.addr_size == 4 else M64
    segment = regs[seg] if seg else 0
    if mem.base in (X.X86_REG_RIP, X.X86_REG_EIP) or (not mem.base and not mem.index):
        fixed = (mem.disp + (insn.address + insn.size if mem.base else 0)) & wrap
        if seg:
            regs[seg] = (aim - fixed) & M64
            return aim
        page = fixed & ~(G.PAGE - 1)
        if (0x10000 <= page < 0x7FFFFFFF0000 and not base <= page < base + G.SPAN
                and not any(r.start == page for r in extra)):
            extra.append(RegionSpec(page, G.PAGE, bool(rnd.getrandbits(1)),
                                    rnd.randrange(CONTENT_SEEDS * 8), (), "target"))
        return None
    reg = mem.base or mem.index
    full = GPR[reg][0]
    if full == "rsp":
        return None  # rsp already points into the stack pages
    scale = 1 if mem.base else mem.scale
    rest = 0
    if mem.base and mem.index:
        other = GPR[mem.index][0]
        if other == full:
            scale += mem.scale
        else:
            rest = regs[other] * mem.scale
    want = (aim - segment - mem.disp - rest) & wrap
    if want % scale:
        return None
    regs[full] = (regs[full] & ~wrap | (want // scale)) & M64
    return aim
