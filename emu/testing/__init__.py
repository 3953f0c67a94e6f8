"""Differential testing of the emulator against Unicorn: the generator, the oracle, the comparison.

This lives in the package (not under tests/) because `stepper fuzz` reuses it. It needs
hypothesis, keystone and unicorn, which are package dependencies; it never touches ptrace.

    >>> from emu.testing import generate, compare
    >>> case = generate.example_case("add eax, ebx")
    >>> compare.divergence(case) is None
    True
"""

from .compare import Divergence, check, divergence, run_emu
from .generate import FAMILIES, Case, RegionSpec, cases, encode
from .unicorn_oracle import Outcome, run

__all__ = [
    "FAMILIES", "Case", "RegionSpec", "cases", "encode",
    "Outcome", "run", "Divergence", "check", "divergence", "run_emu",
]
