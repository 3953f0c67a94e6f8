"""Microbenchmark: one prepared instruction on a FlatState against Unicorn doing the same
single instruction from Python. A benchmark, not a test: it reports, it asserts nothing.

    python -m emu.bench [--number N] [--repeat R] [--json FILE]

Each figure is the best of R timing runs of N executions (the minimum is the figure least
disturbed by the rest of the machine), minus the cost of the loop's own state reset, measured
the same way in the same run. Both loops reset only rsp between executions; Unicorn's step is
`emu_start(rip, 0, count=1)`, the cheapest way to run one instruction on it from Python.
"""

from __future__ import annotations

import argparse
import json
import platform
import timeit

from .decode import decode

CODE = 0x401000
STACK = 0x7FF000
CASES = {  # name -> (assembly text, encoding from keystone at CODE)
    "push rbp": "push rbp",
    "mov rax, [rsp+8]": "mov rax, qword ptr [rsp+8]",
    "add rax, rbx": "add rax, rbx",
    "jne rel8": "jne 0x401020",
    "call rel32": "call 0x401100",
}
REGS = {"rax": 5, "rbx": 7, "rbp": 0x1234, "rsp": STACK + 0x800, "rip": CODE, "rflags": 0x202}


def _assemble(text: str) -> bytes:
    import keystone
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    return bytes(ks.asm(text, CODE)[0])


def _best(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def bench_emu(code: bytes, number: int, repeat: int) -> float:
    from .state import FlatState
    insn = decode(code, CODE)
    state = FlatState(dict(REGS))
    state.map(STACK, bytes(0x1000))
    plan, regs = insn.plan, state.regs
    rsp = REGS["rsp"]

    def reset():
        regs["rsp"] = rsp

    def step():
        regs["rsp"] = rsp
        plan(state)
    return _best(step, number, repeat) - _best(reset, number, repeat)


def bench_unicorn(code: bytes, number: int, repeat: int) -> float:
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn import x86_const as U
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE & ~0xFFF, 0x2000)
    uc.mem_write(CODE, code)
    uc.mem_map(STACK, 0x1000)
    for name, value in REGS.items():
        uc.reg_write(getattr(U, f"UC_X86_REG_{name.upper()}"), value)
    reg_write, emu_start, RSP, rsp = uc.reg_write, uc.emu_start, U.UC_X86_REG_RSP, REGS["rsp"]

    def reset():  # the same reset as the emulator's loop: only rsp moves between runs
        reg_write(RSP, rsp)

    def step():
        reg_write(RSP, rsp)
        emu_start(CODE, 0, count=1)
    return _best(step, number, repeat) - _best(reset, number, repeat)


def run(number: int = 20000, repeat: int = 7) -> dict:
    results = {}
    for name, text in CASES.items():
        code = _assemble(text)
        emu_us = bench_emu(code, number, repeat)
        uc_us = bench_unicorn(code, max(number // 10, 100), repeat)
        results[name] = {"emu_us": round(emu_us, 3), "unicorn_us": round(uc_us, 3),
                         "speedup": round(uc_us / emu_us, 1) if emu_us > 0 else None}
    return {"python": platform.python_version(), "number": number, "repeat": repeat,
            "instructions": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emu.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20000, help="executions per timing run")
    parser.add_argument("--repeat", type=int, default=7, help="timing runs; the best is kept")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    report = run(args.number, args.repeat)
    print(f"{'instruction':<20} {'emu µs':>8} {'unicorn µs':>11} {'speed-up':>9}")
    for name, row in report["instructions"].items():
        print(f"{name:<20} {row['emu_us']:>8.3f} {row['unicorn_us']:>11.3f} {row['speedup']:>8}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
