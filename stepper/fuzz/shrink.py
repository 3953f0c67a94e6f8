"""Shrink a divergent case to a small reproducer before it is written to corpus/regressions/.

Why our own minimiser rather than hypothesis's: half the cases (variants, corpus cases) are not
hypothesis draws, and what makes a reproducer readable is the *state*: registers that do not
matter become 0, region contents become zeros, extra regions and patches go away. Each step is
kept only if the case still diverges the same way (same kinds of problem), so the bug found is
the bug written.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from emu.testing.generate import ZERO_FILL, Case

USER_FLAG_BITS = (0x1, 0x4, 0x10, 0x40, 0x80, 0x400, 0x800, 0x4000, 0x40000, 0x200000)


def signature(problems: list[str]) -> tuple[str, ...]:
    """What kind of divergence: the register, 'memory', or the fault story of each problem."""
    return tuple(sorted({p.split(":")[0].split(" (")[0] for p in problems}))


def shrink(case: Case, still_fails: Callable[[Case], bool], budget: int = 400) -> Case:
    """The smallest case found by greedy simplification that still fails (at most `budget`
    oracle runs)."""
    calls = 0

    def attempt(candidate: Case) -> bool:
        nonlocal calls
        if calls >= budget:
            return False
        calls += 1
        return still_fails(candidate)

    changed = True
    while changed and calls < budget:
        changed = False
        for candidate_of in (_zero_regions, _drop_patches, _drop_regions, _simplify_regs, _clear_flags):
            for candidate in candidate_of(case):
                if attempt(candidate):
                    case, changed = candidate, True
                    break
    return case


def _set_reg(case: Case, name: str, value: int) -> Case:
    return replace(case, regs=tuple((n, value if n == name else v) for n, v in case.regs))


def _simplify_regs(case: Case):
    for name, value in case.regs:
        if name == "rip":
            continue
        for smaller in (0, 1, value & 0xFFFFFFFF, value & 0xFF):
            if smaller < value:
                yield _set_reg(case, name, smaller)


def _clear_flags(case: Case):
    flags = dict(case.regs)["rflags"]
    if flags != 0x202:
        yield _set_reg(case, "rflags", 0x202)
    for bit in USER_FLAG_BITS:
        if flags & bit:
            yield _set_reg(case, "rflags", flags & ~bit)


def _zero_regions(case: Case):
    for i, region in enumerate(case.regions):
        if region.seed != ZERO_FILL:
            yield replace(case, regions=case.regions[:i] + (replace(region, seed=ZERO_FILL),)
                          + case.regions[i + 1:])


def _drop_patches(case: Case):
    rip = case.address
    for i, region in enumerate(case.regions):
        for j, (address, _) in enumerate(region.patches):
            if address != rip:
                patches = region.patches[:j] + region.patches[j + 1:]
                yield replace(case, regions=case.regions[:i] + (replace(region, patches=patches),)
                              + case.regions[i + 1:])


def _drop_regions(case: Case):
    rip = case.address
    for i, region in enumerate(case.regions):
        if not region.start <= rip < region.start + region.size:
            yield replace(case, regions=case.regions[:i] + case.regions[i + 1:])
