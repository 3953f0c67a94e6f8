"""Hypothesis strategies for values: registers, memory bases and aimed addresses.
"""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from .machine import GAPS, INTERESTING, M64, PAGE, REGION, SPAN


# ---------------------------------------------------------------- strategies: values

# Strategies are built once and cached: hypothesis validates every new strategy object, which
# would otherwise dominate the cost of a case.


@functools.lru_cache(maxsize=None)
def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


@functools.lru_cache(maxsize=None)
def _pick(options: tuple) -> st.SearchStrategy:
    return st.sampled_from(options)


@functools.lru_cache(maxsize=None)
def _either(*strategies: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(*strategies)


_BOOLS = st.booleans()



_VALUE = st.one_of(
    st.sampled_from(INTERESTING).map(lambda v: (False, v)),
    st.integers(-64, 64).map(lambda v: (False, v & M64)),
    st.integers(0, M64).map(lambda v: (False, v)),
    st.integers(0, SPAN - 1).map(lambda v: (True, v)),
)


def value(draw, base: int = 0) -> int:
    """A 64-bit register/memory value: edge cases, small signed numbers, anything, and
    pointers into the case's layout (so a popped return address or `jmp rax` sometimes lands
    on mapped memory)."""
    pointer, v = draw(_VALUE)
    return (base + v) & M64 if pointer else v


def layout(draw) -> tuple[int, int]:
    """(layout base, code address). Low bases allow 32-bit addressing without a segment."""
    low = draw(_BOOLS)
    if low:
        base = draw(_ints(0x10, (0xFFFF0000 - SPAN) // PAGE)) * PAGE
    else:
        base = draw(_ints(0x100000, (0x7FFFFFFF0000 - SPAN) // PAGE)) * PAGE
    return base, base + draw(_ints(0, PAGE - 16))


def aim(draw, base: int, size: int) -> int:
    """An effective address: mostly inside a region, sometimes across an edge or in a gap."""
    kind = draw(_pick(("in",) * 6 + ("edge", "gap")))
    if kind == "gap":
        return base + draw(_pick(GAPS)) + draw(_ints(0, PAGE - 1))
    name = draw(_pick(("data", "data", "rodata", "stack", "fs", "gs", "code")))
    offset, length, _ = REGION[name]
    if kind == "in":
        return base + offset + draw(_ints(0, length - size))
    return base + offset + draw(_either(_ints(-8, -1), _ints(length - size + 1, length + 8)))
