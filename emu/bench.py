"""Microbenchmark: one prepared instruction on a FlatState against Unicorn doing the same
single instruction from Python. A benchmark, not a test: it reports, it asserts nothing.

    python -m emu.bench [--number N] [--repeat R] [--json FILE]

Each figure is the best of R timing runs of N executions (the minimum is the figure least
disturbed by the rest of the machine). Nothing is reset between executions (the stack is
mapped deep enough for every push), so nothing is subtracted. Unicorn's step is
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
CASES = {  # name -> assembly text, encoded by keystone at CODE
    "push rbp": "push rbp",
    "mov rax, [rsp-8]": "mov rax, qword ptr [rsp-8]",
    "add rax, rbx": "add rax, rbx",
    "jne rel8": "jne 0x401020",
    "call rel32": "call 0x401100",
}
REGS = {"rax": 5, "rbx": 7, "rbp": 0x1234, "rip": CODE, "rflags": 0x202}


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
    plan = insn.plan

    def step():
        plan(state)

    # No reset inside the timed loop: the stack is deep enough for every push of every run.
    depth = 8 * number * repeat
    state.regs["rsp"] = STACK + depth
    state.map(STACK, bytes(depth + 0x1000))
    return _best(step, number, repeat)


def bench_unicorn(code: bytes, number: int, repeat: int, with_state: bool = False) -> float:
    """Unicorn running the instruction. `with_state`: also load the 20 registers a stopped
    thread has before, and read them back after, each in one direct uc_reg_*_batch C call (the
    cheapest form found; emu.testing.unicorn_batch says why): what emulating a hit
    with Unicorn would really cost, since its CPU is not the thread's."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn import x86_const as U
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE & ~0xFFF, 0x2000)
    uc.mem_write(CODE, code)
    depth = (8 * number * repeat + 0xFFF) & ~0xFFF
    uc.mem_map(STACK, depth + 0x1000)
    for name, value in REGS.items():
        uc.reg_write(getattr(U, f"UC_X86_REG_{name.upper()}"), value)
    uc.reg_write(U.UC_X86_REG_RSP, STACK + depth)
    emu_start = uc.emu_start
    if not with_state:
        def step():
            emu_start(CODE, 0, count=1)
        return _best(step, number, repeat)

    from .state import REGISTER_NAMES
    from .testing.unicorn_batch import RegisterBatch
    names = [n for n in REGISTER_NAMES if n not in ("fs_base", "gs_base")] + ["fs_base", "gs_base"]
    ids = [getattr(U, f"UC_X86_REG_{n.upper()}") for n in names]
    batch = RegisterBatch(uc, ids)
    batch.values[:] = [uc.reg_read(i) for i in ids]
    store, load = batch.store, batch.load

    def step_with_state():
        store()
        emu_start(CODE, 0, count=1)
        load()
    return _best(step_with_state, number, repeat)


def run(number: int = 20000, repeat: int = 7) -> dict:
    results = {}
    for name, text in CASES.items():
        code = _assemble(text)
        emu_us = bench_emu(code, number, repeat)
        uc_us = bench_unicorn(code, number, repeat)
        uc_state_us = bench_unicorn(code, number, repeat, with_state=True)
        results[name] = {"emu_us": round(emu_us, 3), "unicorn_us": round(uc_us, 3),
                         "unicorn_with_state_us": round(uc_state_us, 3),
                         "speedup": round(uc_us / emu_us, 1),
                         "speedup_with_state": round(uc_state_us / emu_us, 1)}
    return {"python": platform.python_version(), "number": number, "repeat": repeat,
            "instructions": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emu.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20000, help="executions per timing run")
    parser.add_argument("--repeat", type=int, default=7, help="timing runs; the best is kept")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    report = run(args.number, args.repeat)
    print(f"{'instruction':<18} {'emu µs':>7} {'unicorn µs':>11} {'ratio':>6}"
          f" {'unicorn+state µs':>17} {'ratio':>6}")
    for name, row in report["instructions"].items():
        print(f"{name:<18} {row['emu_us']:>7.3f} {row['unicorn_us']:>11.3f} {row['speedup']:>5}×"
              f" {row['unicorn_with_state_us']:>17.3f} {row['speedup_with_state']:>5}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
