"""Hypothesis strategies for differential cases: one instruction plus a machine state.

A case is assembler text (encoded by keystone, or by GNU `as` for the few forms keystone cannot
encode), placed at a random-ish code address, with random registers and a fixed memory layout
whose base moves around. Memory operands are *aimed*: the register values (or the displacement)
are solved so that the effective address lands where the generator chose, most of the time
inside a mapped region, sometimes across its edge, in a read-only region or in a gap (the
faulting cases). Every region is whole pages with unmapped gaps between regions, so the Unicorn
oracle's page mappings fault exactly where `FlatState` does.

Why assemble instead of encoding by hand: the encodings are what is under test, so they must come
from an independent encoder. Keystone has bugs (it silently turns `[rax+rsp]` into `[rax+riz]`,
truncates displacements, encodes `fs:[abs]` as RIP-relative, and aborts the whole process on a
high-byte register in a REX instruction), so every encoding is decoded back with capstone and
compared operand by operand; a mismatch rejects the example, and REX/high-byte mixes are never
generated.

The package, by concern: `machine` (registers, the layout, Case), `operand_specs` (what an
instruction is asked to be), `encoding` (assemblers, and the capstone check of what they
produced), `values` (strategies for values and aimed addresses), `families` (one operand
builder per probe-site family), `cases` (solving, encoding and placing a case).
"""

from .cases import _effective_address, cases, example_case, register_state
from .encoding import GAS_SSE_TEXTS, GAS_TEXTS, encode, gas_encodings, matches
from .families import ALIGNED_FAMILIES, FAMILIES, Builder
from .machine import (GAPS, INTERESTING, LAYOUT, PAGE, REGION, REGISTER_NAMES, SPAN, USER_FLAGS,
                      ZERO_FILL, Case, RegionSpec, case_from)
from .operand_specs import Imm, Mem, Reg, Spec, Target

__all__ = [
    "ALIGNED_FAMILIES", "FAMILIES", "Builder", "Case", "GAPS", "GAS_SSE_TEXTS", "GAS_TEXTS", "Imm",
    "INTERESTING", "LAYOUT", "REGISTER_NAMES", "SPAN", "USER_FLAGS", "Mem", "PAGE", "REGION", "Reg", "RegionSpec", "Spec", "Target", "ZERO_FILL",
    "_effective_address", "case_from", "cases", "encode", "example_case", "gas_encodings",
    "matches", "register_state",
]
