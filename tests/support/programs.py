"""The tracees the suite builds with gcc: the registry of tracees/ programs behind the `build`
fixture, gcc itself, and the counter program of the symbol and spec tests."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from tests.support.elf import instructions

TRACEES = Path(__file__).resolve().parents[1] / "stepper" / "tracees"
#: The package's bundled sources (the benchmark programs), which some tests build as tracees.
BUNDLED = Path(__file__).resolve().parents[2] / "stepper" / "data"

#: name -> (sources, gcc flags)
PROGRAMS = {
    "probes": (["probes.c"], ["-O2", "-fno-plt", "-fstack-protector-all",
                              "-fno-omit-frame-pointer"]),
    "asmmain": (["asmmain.c", "asmops.S"], ["-O1"]),
    "faults": (["faults.c", "asmops.S"], ["-O1"]),
    "threads": (["threads.c", "asmops.S"], ["-O1", "-pthread"]),
    "threads_nopie": (["threads.c", "asmops.S"], ["-O1", "-pthread", "-no-pie"]),
    "layout": (["layout.c"], ["-O1"]),
    "killself": (["killself.c"], ["-O1"]),
    "signals": (["signals.c"], ["-O1"]),
    "execer": (["execer.c"], ["-O1"]),
    "family": (["family.c"], ["-O1", "-g"]),
    "family_other": (["family.c"], ["-O1", "-DOTHER"]),
    "affinity": (["affinity.c"], ["-O1", "-pthread"]),
    "rare_hits": (["rare_hits.c"], ["-O1"]),
    "watchpoints": (["watchpoints.c"], ["-O1", "-pthread"]),
    # the instruction loop of the step benchmark (an absolute path: TRACEES / it is itself)
    "steploop": ([str(BUNDLED / "bench_steploop.S")], ["-static", "-nostdlib", "-no-pie"]),
    "returns": (["returns.c", "returns_asm.S"], ["-O1", "-pthread"]),
    "debuggee": (["debuggee.c"], ["-O1", "-pthread", "-fno-inline"]),
    "tracework": (["tracework.c"], ["-O1"]),
    "probes_nopie": (["probes.c"], ["-O2", "-fno-plt", "-fstack-protector-all",
                                    "-fno-omit-frame-pointer", "-no-pie"]),
    "shared_text": (["shared_text.c"], ["-O1"]),
    # USDT probes (<sys/sdt.h>), without and with semaphores
    "usdt_plain": (["usdt_prog.c"], ["-O2"]),
    "usdt_sem": (["usdt_prog.c"], ["-O2", "-DWITH_SEMAPHORES"]),
    "usdt_O0": (["usdt_prog.c"], ["-O0"]),   # arguments in stack slots: 8@-24(%rbp)
    # C++ names (built with g++: a .cpp source)
    "cxx_names": (["cxx_names.cpp"], ["-O0", "-g", "-fno-inline"]),
    "cxx_throw": (["cxx_throw.cpp"], ["-O1"]),
    # DWARF parameters in registers and on the stack
    "params_O0": (["params.c"], ["-O0", "-g"]),
    "params_O2": (["params.c"], ["-O2", "-g"]),
    # the unwinder's call chains: -O2 without frame pointers (CFI only) with DWARF lines,
    # and with frame pointers and no unwind tables in the program (libc keeps its CFI)
    "unwind": (["unwind.c"], ["-O2", "-fomit-frame-pointer", "-pthread", "-g"]),
    "unwind_fp": (["unwind.c"], ["-O2", "-pthread", "-fno-omit-frame-pointer",
                                 "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]),
}

#: The C functions of `probes` that hold the instruction shapes the probe tests cover.
PROBE_FUNCTIONS = ("probe_loads", "probe_stores", "probe_switch", "probe_plt", "probe_canary")
#: The labels of the hand-written sites in asmops.S (built into `asmmain`).
ASM_SITES = ("call_ret_imm", "ret_imm_site", "do_write", "syscall_site", "sse_load_site",
             "sse_store_site", "avx_load_site", "avx_store_site", "lock_add", "lock_site",
             "lock_add_site", "rep_ops", "rep_movs_site", "rep_stos_site")


def every_probe_instruction(exe: str) -> list:
    """Every instruction of the PROBE_FUNCTIONS of a `probes` build."""
    return [i for f in PROBE_FUNCTIONS for i in instructions(exe, f)]


def gcc(out, *args) -> str:
    """`gcc -O1 -o out args...` (later flags win); the path of what it built."""
    subprocess.run(["gcc", "-O1", "-o", str(out), *map(str, args)], check=True)
    return str(out)


#: The C program the spec and symbol tests build as PIE and non-PIE: it prints `&t_one` and
#: dlsym(getpid) (the runtime ground truth), then, given an argument, waits for a byte on
#: stdin so that its maps can be read while it runs. @THIRD@ is a third function,
#: @BEFORE_MAIN@ text just before main, @RESULT@ main's return expression.
COUNTER_PROGRAM = textwrap.dedent("""\
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <stdio.h>
    #include <unistd.h>
    int counter;
    __attribute__((noinline)) int t_one(int x) {
        counter += x;
        return counter * 2;
    }
    __attribute__((noinline)) int t_two(int x) { return t_one(x) + 1; }
    @THIRD@
    int t_one_alias(int x) __attribute__((alias("t_one")));

    @BEFORE_MAIN@int main(int argc, char **argv) {
        printf("%p %p\\n", (void *)&t_one, dlsym(RTLD_DEFAULT, "getpid"));
        fflush(stdout);
        char c;
        if (argc > 1 && read(0, &c, 1) < 0) return 1;
        return @RESULT@;
    }
    """)
LINE_OF_COUNTER = COUNTER_PROGRAM.splitlines().index("    counter += x;") + 1


def counter_program(third: str, result: str, before_main: str = "") -> str:
    """COUNTER_PROGRAM with its third function, the text before main and main's result."""
    return (COUNTER_PROGRAM.replace("@THIRD@", third).replace("@BEFORE_MAIN@", before_main)
            .replace("@RESULT@", result))


def build_pie_and_nopie(d: Path, program: str) -> dict:
    """`program` written to d/prog.c and built as d/pie (with -g) and d/nopie (without):
    {"dir": d, "pie": path, "nopie": path}."""
    (d / "prog.c").write_text(program)
    return {
        "dir": d,
        "pie": gcc(d / "pie", "-g", "-fPIE", "-pie", d / "prog.c"),
        "nopie": gcc(d / "nopie", "-fno-pie", "-no-pie", d / "prog.c"),
    }
