"""`stepper list`: what can be probed in a file, before probing it (perf probe -F/-L/-V).

    stepper list functions OBJECT[:GLOB]   function symbols, C++ names demangled
    stepper list lines OBJECT:FUNC         the source of FUNC, numbered where a FILE:LINE
                                           probe can go
    stepper list vars OBJECT:FUNC          parameters and locals at FUNC's probe address,
                                           with their types and where they are
    stepper list usdt OBJECT               USDT probes: provider, name, address, semaphore,
                                           arguments

OBJECT is a path, a program found in PATH, or a library name (`libstdc++.so.6`). Reads files only; nothing runs.
"""

from __future__ import annotations

import os
import shutil
import sys

from ..errors import StepperError
from . import SUMMARIES

WHAT = ("functions", "lines", "vars", "usdt")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "list", help=SUMMARIES["list"],
        description="List what can be probed in OBJECT: functions, the probe-able lines or "
                    "the variables of a function, USDT probes. Reads the file only.")
    p.add_argument("what", choices=WHAT, help="what to list")
    p.add_argument("target", metavar="OBJECT[:FUNC]",
                   help="a file (path or program in PATH), with :FUNC for lines and vars "
                        "(:GLOB to filter functions)")
    p.set_defaults(run=run)


def find_object(name: str) -> str:
    """The file `name` means: a path, a program in PATH, or a library name (`libc.so.6`)
    where the dynamic loader finds it for a program without RPATH/RUNPATH; a one-line error
    otherwise."""
    if os.path.isfile(name):
        return name
    found = None if "/" in name else shutil.which(name)
    if found is None and "/" not in name and ".so" in name:
        from types import SimpleNamespace

        from ..loader import find_library
        found = find_library(name, SimpleNamespace(rpath=[], runpath=[]), "/")
    if found is None:
        raise StepperError(f"no such file: {name}" + ("" if "/" in name else " (nor in PATH)"))
    return found


def run(args) -> int:
    from ..demangle import split_colon

    obj, sep, func = split_colon(args.target)
    if args.what in ("lines", "vars") and not func:
        raise StepperError(f"stepper list {args.what} needs a function: OBJECT:FUNC")
    if args.what == "usdt" and sep:
        raise StepperError("stepper list usdt takes an OBJECT only")
    path = find_object(obj)
    from ..symbols import ElfSymbols
    ElfSymbols.load(path)   # not an x86-64 ELF file: one line, exit 2
    lines = {"functions": _functions, "lines": _lines, "vars": _vars, "usdt": _usdt}[
        args.what](path, func)
    try:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
    except BrokenPipeError:   # `stepper list ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _functions(path: str, glob: str) -> list[str]:
    from ..demangle import demangle, matches
    from ..symbols import ElfSymbols

    import fnmatch
    names = sorted({demangle(s.name) for s in ElfSymbols.load(path).functions()
                    if not glob or fnmatch.fnmatchcase(s.name, glob)
                    or matches(glob, s.name, glob=True)})
    if not names:
        raise StepperError(f"no function of {os.path.basename(path)} matches {glob}"
                           if glob else f"{os.path.basename(path)} has no function symbols")
    return names


def _chosen(path: str, func: str):
    from .. import dwarf_params

    functions = dwarf_params.functions(path)
    if not functions:
        raise StepperError(f"{os.path.basename(path)} has no DWARF debug information, in "
                           "the file or a separate debug file (build it with -g, or install "
                           "its debug file under /usr/lib/debug)")
    found = dwarf_params.find(path, func)
    if not found:
        raise StepperError(f"no function named {func} in the DWARF of "
                           f"{os.path.basename(path)}")
    return found


def _lines(path: str, func: str) -> list[str]:
    from .. import dwarf_params

    out = []
    for function in _chosen(path, func):
        rows = dwarf_params.line_rows(function)
        by_file: dict[str, set[int]] = {}
        for _address, line, source in rows:
            by_file.setdefault(source, set()).add(line)
        out.append(f"<{function.title}@{function.file or '?'}:{function.line or '?'}>")
        source = function.file if function.file in by_file else next(iter(by_file), None)
        if source is None:
            out.append("      (no line table rows)")
            continue
        code = by_file[source]
        first = min([function.line or min(code)] + list(code))
        text = _source(source)
        for number in range(first, max(code) + 1):
            mark = f"{number:>7}" if number in code else " " * 7
            body = text[number - 1] if text and number <= len(text) else ""
            if text or number in code:
                out.append(f"{mark}  {body}".rstrip())
        if not text:
            out.append(f"      (source {source} not readable: line numbers only)")
    return out


def _source(path: str) -> list[str] | None:
    try:
        with open(path, errors="replace") as stream:
            return stream.read().splitlines()
    except OSError:
        return None


def _vars(path: str, func: str) -> list[str]:
    from .. import dwarf_params

    out = []
    for function in _chosen(path, func):
        pc = dwarf_params.after_prologue(function)
        out.append(f"<{function.title}+{pc - function.low:#x}> at {pc:#x}")
        for var in function.variables:
            where = dwarf_params.describe_location(function, var, pc)
            out.append(f"  {var.kind:<5}  {var.type} {var.name}  ({where})")
    return out


def _usdt(path: str, _func: str) -> list[str]:
    from ..usdt import notes

    found = notes(path)
    if not found:
        raise StepperError(f"{os.path.basename(path)} has no USDT probes (no .note.stapsdt)")
    header = ("provider", "name", "address", "semaphore", "arguments")
    rows = [(n.provider, n.name, f"{n.address:#x}",
             f"{n.semaphore:#x}" if n.semaphore else "-", n.args_text) for n in found]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]
            for r in [header] + rows]
