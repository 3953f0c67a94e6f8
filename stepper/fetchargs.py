"""What a probe fetches at each hit: the `-p` text split into its spec, fetch arguments and
filter, each fetch argument parsed once into a small tree, then evaluated per hit.

    -p 'SPEC[%return] [NAME=]FETCHARG[:TYPE] ... [if EXPR]'

The syntax is the kernel's uprobe_events/perf-probe one (docs/trace.md has the user's
version): `%REG` (`%di` or `%rdi`), `$stackN`, `$stack`, `@ADDR`, `@SYMBOL[+|-OFFS]`,
`+|-OFFS(FETCHARG)` (nestable), `$comm`, `$argN` (System V: rdi rsi rdx rcx r8 r9, then the
stack), `$retval` (return probes only); TYPE `u8`..`u64`, `s8`..`s64`, `x8`..`x64` (the
default), `string`, `symbol`. As in the kernel, `+OFFS(X):string` is the string AT X+OFFS (the
last dereference gives the address, not a load); `%di:string` (perf probe's reading of a
pointer) is the string at the address in rdi. Everything is parsed before the program starts;
an error is one line naming the character where it is. Nothing here writes to the program:
a bad pointer is a fault (None), shown as `(fault)` / JSON null.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .errors import StepperError
from .filters import Filter, parse_filter

__all__ = ["FetchError", "FetchArg", "ProbeLine", "split_words", "parse_probe", "parse_fetch",
           "TYPES", "text_formatter", "format_json", "json_formatter"]

_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
         "r12", "r13", "r14", "r15", "rip", "rflags")
_SHORT = {"ax": "rax", "bx": "rbx", "cx": "rcx", "dx": "rdx", "si": "rsi", "di": "rdi",
          "bp": "rbp", "sp": "rsp", "ip": "rip", "flags": "rflags", "eflags": "rflags"}
TYPES = tuple(f"{k}{n}" for k in "usx" for n in (8, 16, 32, 64)) + ("string", "symbol")
_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|\d+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_NAME_AT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = frozenset({"pid", "tid", "comm", "retval", "duration_ns", "if"})


class FetchError(StepperError):
    """A probe's fetch arguments, types or filter do not parse (one line, with the column)."""


def _fail(text: str, pos: int, why: str) -> FetchError:
    return FetchError(f"probe {text!r}: {why} (character {pos + 1})")


# -- splitting one -p into words ---------------------------------------------------------------

def split_words(text: str) -> list[tuple[str, int]]:
    """The words of `text` and where each starts: split on whitespace outside () and quotes.
    An unbalanced ( or quote is an error pointing at it."""
    words: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start, depth, quote, opened = i, 0, None, []
        while i < n and (quote or depth or not text[i].isspace()):
            c = text[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
                    opened.pop()
            elif c in "\"'":
                quote = c
                opened.append(i)
            elif c == "(":
                depth += 1
                opened.append(i)
            elif c == ")":
                if not depth:
                    raise _fail(text, i, "unbalanced ')'")
                depth -= 1
                opened.pop()
            i += 1
        if quote or depth:
            raise _fail(text, opened[-1], f"unclosed {text[opened[-1]]!r}")
        words.append((text[start:i], start))
    return words


# -- fetch arguments ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FetchArg:
    """One parsed fetch argument: `name`, `type`, and its location tree `node`:
    ("reg", r) | ("stack", n) | ("sp",) | ("addr", a) | ("sym", name, off) | ("comm",) |
    ("arg", n) | ("retval",) | ("deref", off, node) | ("param", name) | ("params",); bound
    to a site (stepper.fetch_sites): ("usdt", usdt.Arg) | ("dwarf", function, variable, pc,
    bias) | ("unbound", why)."""

    name: str
    text: str
    type: str
    node: tuple
    #: False when TYPE was left out: a USDT `$argN` or a parameter name then takes the type
    #: of the site (stepper.fetch_sites), a register stays x64
    typed: bool = True

    @property
    def numeric(self) -> bool:
        return self.type not in ("string", "symbol")

    def fetch(self, hit, retval: int | None = None) -> object:
        """The value at `hit` (a stepper.api.Hit): an int, a str (string, symbol types) or
        None (a fault). Parameter names and a USDT probe's `$argN` need the hit's site:
        `api.parse_fetch` gives a stepper.fetch_sites.SiteFetchArg, which binds them. `retval`: the value for `$retval`. For many hits, prefer
        `Fetcher` with one HitContext (what `stepper probe` does)."""
        from .fetching import Fetcher, HitContext, pid_of

        ctx = HitContext()
        ctx.tid, ctx.pid, ctx.address = hit.tid, pid_of(hit.tid), hit.address
        ctx.retval = retval
        return Fetcher(self).value(hit.regs, hit.read, ctx)


def parse_fetch(text: str, index: int = 1, is_return: bool = False,
                whole: str | None = None, at: int = 0) -> FetchArg:
    """`[NAME=]FETCHARG[:TYPE]` parsed; `index` names an unnamed one (`arg1`...). `whole`
    and `at`: the -p text and where this word starts in it, for the error's column."""
    whole = text if whole is None else whole
    name, body, base = None, text, at
    eq = text.find("=")
    if eq > 0 and _NAME.match(text[:eq]):
        name, body, base = text[:eq], text[eq + 1:], at + eq + 1
        if name in RESERVED:
            raise _fail(whole, at, f"{name!r} is a reserved name; choose another")
    elif _NAME.match(text.split(":")[0]):   # a parameter name (DWARF): named after itself
        name = text.split(":")[0]
        if name in RESERVED:
            raise _fail(whole, at, f"{name!r} is a reserved name; write NAME={name}")
    if not body:
        raise _fail(whole, base, "empty fetch argument")
    colon = _top_colon(body)
    loc, typ = (body, None) if colon < 0 else (body[:colon], body[colon + 1:])
    node, end = _location(loc, 0, whole, base, is_return)
    if end != len(loc):
        raise _fail(whole, base + end, f"unexpected {loc[end:]!r}")
    if node == ("params",) and (typ is not None or name is not None):
        raise _fail(whole, at, "$params takes no NAME= or :TYPE (it fetches every parameter "
                               "with its own type)")
    typed = typ is not None
    if typ is None:
        typ = "string" if node == ("comm",) else "x64"
    elif typ not in TYPES:
        raise _fail(whole, base + colon + 1, f"unknown type {typ!r}: use one of "
                                             f"{', '.join(TYPES)}")
    if node == ("comm",) and typ != "string":
        raise _fail(whole, base + colon + 1, "$comm is a string")
    return FetchArg(name or ("$params" if node == ("params",) else f"arg{index}"), text, typ,
                    node, typed)


def _top_colon(body: str) -> int:
    depth = 0
    for i, c in enumerate(body):
        depth += c == "("
        depth -= c == ")"
        if c == ":" and not depth:
            return i
    return -1


def _location(s: str, i: int, whole: str, base: int, is_return: bool) -> tuple[tuple, int]:
    """Parse one location of `s` from i: (node, end)."""
    def err(pos: int, why: str) -> FetchError:
        return _fail(whole, base + pos, why)

    while i < len(s) and s[i].isspace():   # allowed inside parentheses
        i += 1
    if i >= len(s):
        raise err(i, "missing fetch argument")
    c = s[i]
    if c == "%":
        m = _IDENT.match(s, i + 1)
        reg = m.group(0).lower() if m else ""
        full = _SHORT.get(reg, reg)
        if full not in _REGS:
            raise err(i + 1, f"unknown register %{reg}" if reg else "register name expected")
        return ("reg", full), m.end()
    if c == "$":
        m = re.compile(r"[a-z]+(\d*)").match(s, i + 1)
        word = m.group(0) if m else ""
        if word == "stack":
            return ("sp",), m.end()
        if word.startswith("stack") and m.group(1):
            return ("stack", int(m.group(1))), m.end()
        if word.startswith("arg") and m.group(1) and word[3:].isdigit() and int(m.group(1)):
            return ("arg", int(m.group(1))), m.end()
        if word == "comm":
            return ("comm",), m.end()
        if word == "params":
            return ("params",), m.end()
        if word == "retval":
            if not is_return:
                raise err(i, "$retval is only for return probes (SPEC%return)")
            return ("retval",), m.end()
        raise err(i, f"unknown variable ${word}: use $stackN, $stack, $argN (N >= 1), "
                     "$comm, $retval or $params")
    if c == "@":
        m = _NUMBER.match(s, i + 1)
        if m:
            return ("addr", int(m.group(0), 0)), m.end()
        m = _IDENT.match(s, i + 1)
        if not m:
            raise err(i + 1, "address or symbol expected after @")
        off, end = 0, m.end()
        if end < len(s) and s[end] in "+-":
            n = _NUMBER.match(s, end + 1)
            if not n:
                raise err(end + 1, "offset expected")
            off, end = int(n.group(0), 0) * (1 if s[end] == "+" else -1), n.end()
        return ("sym", m.group(0), off), end
    if c in "+-" or c.isdigit():
        j = i + (c in "+-")
        m = _NUMBER.match(s, j)
        if not m:
            raise err(j, "offset expected after " + c)
        off = int(m.group(0), 0) * (-1 if c == "-" else 1)
        if m.end() >= len(s) or s[m.end()] != "(":
            raise err(m.end(), "'(' expected: +|-OFFS(FETCHARG)")
        inner, end = _location(s, m.end() + 1, whole, base, is_return)
        while end < len(s) and s[end].isspace():
            end += 1
        if end >= len(s) or s[end] != ")":
            raise err(end, "')' expected")
        return ("deref", off, inner), end + 1
    m = _NAME_AT.match(s, i)
    if m:   # a parameter or variable name (DWARF), read at the site
        return ("param", m.group(0)), m.end()
    raise err(i, f"unexpected {c!r}: a fetch argument starts with %, $, @, + or -, or is a "
                 "parameter name")


# -- one -p, whole -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeLine:
    """One `-p` element: its `spec` (what stepper.specs resolves), `is_return`, `args` and
    the filter (None: every hit)."""

    text: str
    spec: str
    is_return: bool = False
    args: tuple[FetchArg, ...] = ()
    filter: Filter | None = None
    names: tuple[str, ...] = field(default=())

    @property
    def plain(self) -> bool:
        """A counting probe: nothing to fetch, filter or print per hit."""
        return not self.args and self.filter is None and not self.is_return

    @property
    def needs_site(self) -> bool:
        """Whether some argument means something only at a site (USDT `$argN`, parameter
        names: stepper.fetch_sites binds them, and only then is DWARF read)."""
        usdt_spec = self.spec.startswith("usdt:")
        return any(n[0] in ("param", "params") or (usdt_spec and n[0] == "arg")
                   for a in self.args for n in walk(a.node))


def walk(node: tuple) -> Iterator[tuple]:
    """A location tree's nodes, outermost first (through +OFFS(...) dereferences)."""
    yield node
    if node[0] == "deref":
        yield from walk(node[2])


def parse_probe(text: str) -> ProbeLine:
    """Parse one `-p` element. The spec itself is left to stepper.specs."""
    words = split_words(text)
    if not words:
        raise FetchError("empty probe: -p needs a SPEC")
    spec, _ = words[0]
    is_return = False
    if spec.endswith("%return"):
        spec, is_return = spec[: -len("%return")], True
        if not spec:
            raise _fail(text, 0, "SPEC expected before %return")
    args: list[FetchArg] = []
    cond: Filter | None = None
    for k, (word, at) in enumerate(words[1:], start=1):
        if word == "if":
            rest = text[at + 2:]
            if not rest.strip():
                raise _fail(text, at, "'if' needs an expression")
            names = [a.name for a in args]
            extra = ("retval", "duration_ns") if is_return else ()
            cond = parse_filter(rest, names + ["pid", "tid", "comm", *extra],
                                whole=text, at=at + 2)
            break
        args.append(parse_fetch(word, len(args) + 1, is_return, whole=text, at=at))
    if spec.startswith("usdt:"):   # $argN: the probe's own, decimal as perf shows them
        args = [dataclasses.replace(a, type="s64") if a.node[0] == "arg" and not a.typed
                else a for a in args]
    if len(args) > 1 and any(a.node == ("params",) for a in args):
        raise FetchError(f"probe {text!r}: $params fetches every parameter: give it alone")
    names = [a.name for a in args]
    for j, name in enumerate(names):
        if name in names[:j]:
            raise FetchError(f"probe {text!r}: two fetch arguments named {name!r}")
    return ProbeLine(text, spec, is_return, tuple(args), cond, tuple(names))


# -- formatting (lazily, by the writers) -------------------------------------------------------

def _quoted(value: object) -> str:
    if value is None:
        return "(fault)"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _hex(value: object) -> str:
    return "(fault)" if value is None else hex(value)


def _plain(value: object) -> str:
    return "(fault)" if value is None else str(value)


def text_formatter(arg: FetchArg) -> Callable[[object], str]:
    """`fn(value)`, perf-script-like text for one argument, its type decided once: x hex,
    u/s decimal, strings quoted, a fault `(fault)`."""
    t = arg.type
    if t == "string":
        return _quoted
    if t == "symbol" or t[0] != "x":
        return _plain
    return _hex


_encode_string = json.encoder.encode_basestring_ascii   # json.dumps's own string encoder


def _json_hex(value: object) -> str:
    return "null" if value is None else f'"{hex(value)}"'


def _json_number(value: object) -> str:
    return "null" if value is None else str(value)


def _json_text(value: object) -> str:
    return "null" if value is None else _encode_string(value)


def json_formatter(arg: FetchArg) -> Callable[[object], str]:
    """`fn(value)`: the JSON text of format_json(arg, value) (what json.dumps writes), the
    type decided once."""
    if arg.type in ("string", "symbol"):
        return _json_text
    return _json_hex if arg.type[0] == "x" else _json_number


def format_json(arg: FetchArg, value: object) -> object:
    """x types "0x.." strings, u/s numbers, strings and symbols strings, a fault None."""
    if value is None or arg.type[0] != "x":
        return value
    return hex(value)
