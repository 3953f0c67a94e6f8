"""The syntax of a probe spec (`-p`): the parsed Spec, its parser, and the errors every spec
step raises (one line naming the spec). Resolving a Spec to addresses is stepper.specs'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import demangle, usdt
from .errors import StepperError

GLOB_CHARS = "*?["


class SpecError(StepperError):
    """Base of every probe-spec error; the message is one line naming the spec."""


class SpecSyntaxError(SpecError):
    """The text is not any spec form."""


class NoMatchError(SpecError):
    """No function, address or line matches the spec."""


class AmbiguousSpecError(SpecError):
    """An unqualified spec matches in several libraries; OBJECT: must choose."""


class OffsetError(SpecError):
    """SYMBOL+OFFSET (or an address) does not start an instruction of that function."""


class ObjectNotFoundError(SpecError):
    """OBJECT: names a file the program never loads."""


# -- parsing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """One parsed probe spec. `kind` is "symbol", "address", "line" or "usdt".

    symbol: `pattern` (exact name or shell glob) and `offset`; address: `address` (a
    link-time address of `object`, or of the main executable); line: `file` and `line`.
    `object` is the OBJECT: qualifier (a file name, soname, path or glob) or None.
    usdt: `pattern` is PROVIDER:NAME (globs allowed).
    """

    text: str
    kind: str
    object: str | None = None
    pattern: str | None = None
    offset: int = 0
    file: str | None = None
    line: int | None = None
    address: int | None = None

    @property
    def is_glob(self) -> bool:
        return self.pattern is not None and any(c in self.pattern for c in GLOB_CHARS)


def parse_spec(text: str) -> Spec:
    """Parse one `-p` argument. Raises SpecSyntaxError with a one-line message."""
    if not text:
        raise SpecSyntaxError("empty probe spec")
    if any(c.isspace() for c in text):
        raise SpecSyntaxError(f"probe spec {text!r} contains whitespace")
    if text.startswith("usdt:"):
        return usdt.parse_usdt_spec(text, Spec, SpecSyntaxError)
    head, sep, tail = demangle.rsplit_colon(text)
    if sep and tail.isdigit():
        return _parse_line(text, head, int(tail))
    obj, sep, rest = demangle.split_colon(text)
    if not sep:
        obj, rest = None, text
    elif not obj:
        raise SpecSyntaxError(f"empty object name in probe spec {text!r} (write OBJECT:SYMBOL)")
    elif demangle.COLON.search(rest):
        raise SpecSyntaxError(f"too many ':' in probe spec {text!r} "
                              "(forms: OBJECT:SYMBOL, FILE:LINE, OBJECT:FILE:LINE)")
    if not rest:
        raise SpecSyntaxError(f"empty symbol name in probe spec {text!r}")
    if rest[:2].lower() == "0x":
        return Spec(text, "address", object=obj, address=_number(text, rest, "address"))
    if re.fullmatch(r"[0-9][0-9a-fA-F]*", rest):   # bare hex, as `nm` prints it
        return Spec(text, "address", object=obj, address=int(rest, 16))
    name, plus, offset = demangle.split_offset(rest)
    if not name:
        raise SpecSyntaxError(f"empty symbol name in probe spec {text!r}")
    return Spec(text, "symbol", object=obj, pattern=name,
                offset=_number(text, offset, "offset") if plus else 0)


def _parse_line(text: str, head: str, line: int) -> Spec:
    obj, sep, file = demangle.rsplit_colon(head)
    if demangle.COLON.search(obj):
        raise SpecSyntaxError(f"too many ':' in probe spec {text!r}")
    if not file or (sep and not obj):
        raise SpecSyntaxError(f"empty file name in probe spec {text!r} (write FILE:LINE)")
    if line == 0:
        raise SpecSyntaxError(f"line numbers start at 1 in probe spec {text!r}")
    return Spec(text, "line", object=obj or None, file=file, line=line)


def _number(text: str, value: str, what: str) -> int:
    """A decimal number, or hex after 0x: what people write after `+` and what nm prints."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", value):
        return int(value, 16)
    if re.fullmatch(r"[0-9]+", value):
        return int(value, 10)
    raise SpecSyntaxError(f"bad {what} {value!r} in probe spec {text!r} "
                          "(write a decimal number or 0x followed by hex digits)")
