"""Fetch arguments that mean something only at a given probe site, bound to it: `$argN` of a
USDT probe (the probe's own Nth argument, from its `.note.stapsdt` operand), a parameter name
(`-p 'work a s:string'`, DWARF) and `$params` (every parameter of the function).

Binding happens twice: before the program starts, against the files (`settle`: `$params`
expanded, default types chosen, and whatever cannot be read at the site refused as one line),
and when a breakpoint goes in (`bind`: the site's own note or DWARF location, the load bias).

Default types follow perf: a USDT argument `-4@...` is s32, `8@...` u64 (perf's
`type_to_suffix` in tools/perf/util/probe-file.c); a parameter of a signed integer type is
sN, any other integer, enum or pointer xN (perf's `convert_variable_type`); `:string` only on
a pointer or array. docs/trace.md has the user's version.
"""

from __future__ import annotations

import dataclasses
import functools

from elftools.dwarf.dwarf_expr import DWARFExprParser

from . import cfi, cfi_expr, dwarf_params, located, maps, usdt
from .errors import StepperError
from .fetchargs import FetchArg, FetchError, ProbeLine, walk

__all__ = ["settle", "bind", "bind_or_unbound", "bind_for_hit",
           "site_function", "SiteFetchArg"]


def site_function(path: str, vaddr: int) -> dwarf_params.Function:
    """The DWARF function whose code holds link-time address `vaddr` of `path`."""
    try:
        found = [f for f in dwarf_params.functions(path) if f.low <= vaddr < f.high]
    except StepperError as e:
        raise FetchError(str(e)) from None
    if not found:
        has = bool(dwarf_params.functions(path))
        raise FetchError(f"{path} has no DWARF for address {vaddr:#x}" if has else
                         f"{path} has no DWARF (build it with -g, or install its separate "
                         "debug file: /usr/lib/debug, found by build-id or .gnu_debuglink)")
    return min(found, key=lambda f: f.high - f.low)   # the innermost


def _where(function: dwarf_params.Function, vaddr: int) -> str:
    off = vaddr - function.low
    return function.name + (f"+{off:#x}" if off else "")


def _variable(function: dwarf_params.Function, name: str, vaddr: int,
              is_return: bool) -> dwarf_params.Variable:
    """`name` of `function`, readable at `vaddr`, or a FetchError naming why not."""
    named = [v for v in function.variables if v.name == name]
    if not named:
        params = ", ".join(v.name for v in function.params) or "none"
        raise FetchError(f"{function.name} has no parameter or variable named {name!r} "
                         f"(parameters: {params})")
    variable = next((v for v in named if v.kind == "param"), named[0])
    where = f"{name} at {_where(function, vaddr)}"
    if variable.expression_at(vaddr) is None:
        raise FetchError(f"{where}: optimised out (no location at this address)")
    if function.needs_prologue(vaddr) and dwarf_params._own_frame_slot(
            function.dwarf, variable.expression_at(vaddr)):
        after = dwarf_params.after_prologue(function) - function.low
        hint = (f"; probe after the prologue: {function.name}+{after:#x}" if after and
                not is_return else "; a return probe reads its arguments at the entry"
                if is_return else "")
        raise FetchError(f"{where}: in a stack slot the prologue has not written yet (an "
                         f"unoptimised build){hint}")
    text = dwarf_params.describe_location(function, variable, vaddr)
    if "not readable" in text or "not written" in text or "optimised out" in text:
        raise FetchError(f"{where}: {text}")
    if variable.encoding == "other" or (variable.size or 0) > 8:
        raise FetchError(f"{where}: its type {variable.type} ({variable.size or '?'} bytes) "
                         "is not a number or pointer; only those are fetched")
    return variable


def _param_type(arg: FetchArg, variable: dwarf_params.Variable, where: str) -> str:
    if arg.typed:
        if arg.type == "string" and variable.encoding != "pointer":
            raise FetchError(f"{where}: {variable.name} is a {variable.type}, not a pointer: "
                             "no :string")
        return arg.type
    bits = 8 * (variable.size or 8)
    return f"{'s' if variable.encoding == 'signed' else 'x'}{bits}"


_GENERAL = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"} | {f"r{n}"
                                                                    for n in range(8, 16)}


def _simple(function: dwarf_params.Function, variable: dwarf_params.Variable, vaddr: int,
            typ: str) -> tuple | None:
    """The common locations as plain fetch nodes, so that the per-hit path is the one of
    `%REG` and `+OFFS(%REG)` (no DWARF expression evaluated per hit): a whole register, or
    a frame-base slot where the frame base is the CFA and the CFA is register + offset at
    `vaddr`. None: leave it to dwarf_params.read_value (the general evaluator). Only where
    both give the same value: the type no wider than the variable."""
    size = variable.size or 8
    bits = 64 if typ in ("string", "symbol") else int(typ[1:])
    if bits > 8 * size or (typ == "string" and size != 8):
        return None
    expr = variable.expression_at(vaddr)
    if not expr:
        return None
    if 0x50 <= expr[0] <= 0x6F and len(expr) == 1:   # DW_OP_reg0..31
        name = cfi_expr.reg_name(expr[0] - 0x50)
        return ("reg", name) if name in _GENERAL else None
    if expr[0] != 0x91 or list(function.frame_base) != [0x9C]:   # fbreg, call_frame_cfa
        return None
    ops = DWARFExprParser(dwarf_params._structs(function.dwarf)).parse_expr(expr)
    if len(ops) != 1:
        return None
    row = cfi.for_file(function.path).row(vaddr)
    rule = row.cfa if row is not None else None
    if rule is None or getattr(rule, "expr", None) is not None or rule.reg is None:
        return None
    base = cfi_expr.reg_name(rule.reg)
    if base not in _GENERAL:
        return None
    slot = ("deref", rule.offset + ops[0].args[0], ("reg", base))
    return ("deref", 0, slot) if typ == "string" else slot   # a string: AT the pointer


def _usdt_type(arg: usdt.Arg) -> str:
    return f"{'s' if arg.signed else 'u'}{8 * arg.size}"


def settle(line: ProbeLine, sites: list[tuple[str, int]]) -> ProbeLine:
    """`line` checked against its sites in the files ((path, link-time address) each),
    before the program starts: `$params` expanded (from the first site's function), default
    types taken from the first site; a site where an argument cannot be read is a
    FetchError naming the probe, the site and why (for a glob: only when no site can; the
    others fetch a fault, with a warning when their breakpoint goes in)."""
    if not line.needs_site or not sites:
        return line
    args = list(line.args)
    if args and args[0].node == ("params",):
        function = _function_or_fail(line, *sites[0])
        vaddr = sites[0][1]
        scalars = [v for v in function.params if v.encoding != "other" and (v.size or 0) <= 8
                   and v.expression_at(vaddr) is not None]
        if not scalars:
            raise FetchError(f"probe {line.text!r}: {function.name} has no parameter to fetch "
                             "(none, or none readable as a number or pointer)")
        args = [FetchArg(v.name, v.name, "x64", ("param", v.name), False) for v in scalars]
    first, problems = None, []
    for path, vaddr in sites:
        try:
            bound = [bind(a, line, path, vaddr, 0) for a in args]
        except FetchError as e:
            if not _is_glob(line.spec):
                raise
            problems.append(e)   # a glob's odd site: a fault there, warned when inserted
            continue
        if first is None:
            first = bound
    if first is None:
        raise problems[0]
    args = [dataclasses.replace(a, type=b.type) if not a.typed else a
            for a, b in zip(args, first)]
    return dataclasses.replace(line, args=tuple(args), names=tuple(a.name for a in args))


def _is_glob(spec: str) -> bool:
    from .specs import parse_spec

    try:
        return parse_spec(spec).is_glob
    except StepperError:
        return False


def _function_or_fail(line: ProbeLine, path: str, vaddr: int) -> dwarf_params.Function:
    try:
        return site_function(path, vaddr)
    except FetchError as e:
        raise FetchError(f"probe {line.text!r}: {e}") from None


def bind(arg: FetchArg, line: ProbeLine, path: str, vaddr: int, bias: int) -> FetchArg:
    """`arg` for the site at link-time address `vaddr` of `path` (load bias `bias`): USDT
    `$argN` and names replaced by what reads them there. A FetchError says why it cannot."""
    if not any(n[0] in ("param", "arg") for n in walk(arg.node)):
        return arg
    state: dict = {"type": arg.type}

    def rewrite(node: tuple, top: bool) -> tuple:
        if node[0] == "deref":
            return ("deref", node[1], rewrite(node[2], False))
        if node[0] == "arg" and line.spec.startswith("usdt:"):
            note = state.get("note") or usdt.note_at(path, vaddr)
            if note is None:
                raise FetchError(f"probe {line.text!r}: no USDT note at {vaddr:#x} of {path}")
            state["note"] = note
            n = node[1]
            if n > len(note.args):
                raise FetchError(f"probe {line.text!r}: usdt:{note.label} has "
                                 f"{len(note.args)} argument(s): there is no $arg{n}")
            if top and not arg.typed:
                state["type"] = _usdt_type(note.args[n - 1])
            return ("usdt", note.args[n - 1])
        if node[0] == "param":
            function = state.get("function") or _function_or_fail(line, path, vaddr)
            state["function"] = function
            try:
                variable = _variable(function, node[1], vaddr, line.is_return)
                typ = "x64"   # inside +OFFS(...): an address, all 64 bits
                if top:
                    typ = state["type"] = _param_type(arg, variable, _where(function, vaddr))
            except FetchError as e:
                raise FetchError(f"probe {line.text!r}: {e}") from None
            return _simple(function, variable, vaddr, typ) or (
                "dwarf", function, variable, vaddr, bias)
        return node

    node = rewrite(arg.node, True)
    return dataclasses.replace(arg, node=node, type=state["type"])


def bind_or_unbound(arg: FetchArg, line: ProbeLine, path: str, vaddr: int,
                    bias: int) -> tuple[FetchArg, str | None]:
    """`bind` for a site found while the program runs (a library loaded later): what cannot
    be read there is a fault at every hit, and the reason is returned for a warning."""
    try:
        return bind(arg, line, path, vaddr, bias), None
    except FetchError as e:
        return dataclasses.replace(arg, node=("unbound", str(e))), str(e)


@functools.lru_cache(maxsize=256)
def bind_for_hit(arg: FetchArg, pid: int, address: int) -> FetchArg:
    """`arg` bound to the site of a hit at `address` in process `pid` (the library's
    `hit.fetch`): a parameter name through DWARF; `$argN` is the USDT probe's own where a
    `.note.stapsdt` probe sits at that address, else the ABI argument. FetchError: why not."""
    if not any(n[0] in ("param", "arg") for n in walk(arg.node)):
        return arg
    try:
        mapping = maps.find(maps.read(pid), address)
    except (OSError, ValueError):
        mapping = None
    bias = located.load_bias(mapping) if mapping is not None and mapping.is_file else None
    if bias is None:
        raise FetchError(f"{arg.text!r}: no file is mapped at {address:#x}")
    vaddr = address - bias
    is_usdt = any(n[0] == "arg" for n in walk(arg.node)) and \
        usdt.note_at(mapping.path, vaddr) is not None
    line = ProbeLine(arg.text, "usdt:" if is_usdt else "", args=(arg,))
    return bind(arg, line, mapping.path, vaddr, bias)


@dataclasses.dataclass(frozen=True)
class SiteFetchArg(FetchArg):
    """A FetchArg whose `fetch(hit)` first binds it to the hit's site (`bind_for_hit`):
    what `api.parse_fetch` returns, so that `hit.fetch(parsed)` reads parameter names and
    a USDT probe's own `$argN` (FetchError where they cannot be read there)."""

    def fetch(self, hit, retval: int | None = None) -> object:
        from .fetching import Fetcher, HitContext, pid_of

        ctx = HitContext()
        ctx.tid, ctx.pid, ctx.address = hit.tid, pid_of(hit.tid), hit.address
        ctx.retval = retval
        return Fetcher(bind_for_hit(self, ctx.pid, hit.address)).value(hit.regs, hit.read, ctx)

    @classmethod
    def of(cls, arg: FetchArg) -> "SiteFetchArg":
        return cls(**{f.name: getattr(arg, f.name) for f in dataclasses.fields(arg)})
