"""C++ symbol names as people write them: demangling, and matching a spec against them.

The demangler is libstdc++'s own `abi::__cxa_demangle` (through the `cxxfilt` package), so a
name reads exactly as `c++filt`, `nm -C` and gdb print it. A demangled name has a full form
(`ns::Acc::add(int)`, `int ns::biggest<int>(int, int)`) and a base form, without the return
type and the parameter list (`ns::Acc::add`, `ns::biggest<int>`): a spec without `(` names
every overload by its base form, a spec with `(` chooses one by its signature. Spaces are
not significant when comparing signatures (`add(int,double)` equals `add(int, double)`).
"""

from __future__ import annotations

import fnmatch
import functools
import re

__all__ = ["demangle", "base_name", "names_of", "matches", "is_cxx_spec", "squeeze",
           "COLON", "split_colon", "rsplit_colon", "split_offset", "label"]

_QUALIFIERS = (" const", " volatile", " &&", " &", " noexcept", " [clone")


@functools.lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """The demangled form of a mangled (`_Z...`) name; any other name unchanged.

    A version suffix (`@@GLIBCXX_3.4`) and a clone suffix (`.cold`, `.isra.0`) stay at the
    end, as c++filt shows them."""
    if not name.startswith("_Z"):
        return name
    try:
        import cxxfilt   # loads libstdc++ with ctypes: a host without it shows mangled names
    except (ImportError, OSError):
        return name

    mangled, at, version = name.partition("@")
    try:
        text = cxxfilt.demangle(mangled, external_only=False)
    except (cxxfilt.InvalidName, UnicodeDecodeError):
        return name
    return text + (at + version if at else "")


@functools.lru_cache(maxsize=65536)
def base_name(demangled: str) -> str:
    """`ns::Acc::add(int) const` -> `ns::Acc::add`; `int f<int>(int)` -> `f<int>`.

    The parameter list is the last balanced `(...)` group (after cv/ref qualifiers and a
    clone note are set aside); a return type is what precedes the last top-level space."""
    text = demangled.split("@", 1)[0]
    clone = text.find(" [clone")
    if clone >= 0:
        text = text[:clone]
    changed = True
    while changed:
        changed = False
        for qualifier in _QUALIFIERS:
            if text.endswith(qualifier):
                text, changed = text[: -len(qualifier)], True
    if text.endswith(")"):
        depth = 0
        for i in range(len(text) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(text[i], 0)
            if depth == 0:
                text = text[:i]
                break
    return _drop_return_type(text)


_OPERATORS = sorted("() [] <<= >>= <=> ->* << >> <= >= == != && || ++ -- += -= *= /= %= &= |= "
                    "^= -> , < > + - * / % ^ & | ~ ! =".split(), key=len, reverse=True)


def _drop_return_type(text: str) -> str:
    """The part after the last space outside (), <> (an `operator<` opens nothing)."""
    depth, cut, i = 0, 0, 0
    while i < len(text):
        if text.startswith("operator", i):
            i += len("operator")
            if text.startswith(" ", i):   # operator new, a conversion `operator int`
                i += 1
                continue
            token = next((t for t in _OPERATORS if text.startswith(t, i)), "")
            i += len(token)
            continue
        c = text[i]
        if c in "(<":
            depth += 1
        elif c in ")>":
            depth -= 1
        elif c == " " and depth == 0:
            cut = i + 1
        i += 1
    return text[cut:]


def squeeze(text: str) -> str:
    """`text` without spaces: how signatures are compared."""
    return "".join(text.split())


def names_of(name: str) -> tuple[str, str]:
    """(full demangled name, base name) of a symbol name (both `name` for a C name)."""
    full = demangle(name)
    return full, (base_name(full) if full is not name and full != name else name)


def is_cxx_spec(pattern: str) -> bool:
    """Whether a spec pattern can only be a demangled C++ name (a C symbol has no `::`, `(`)."""
    return "::" in pattern or "(" in pattern or "<" in pattern or " " in pattern


def matches(pattern: str, name: str, glob: bool) -> bool:
    """Whether spec `pattern` names the symbol `name` through its demangled forms.

    With `(` the pattern is a signature compared with the full demangled name (return type
    optional); without, it is compared with the base name. `glob` uses shell wildcards."""
    full, base = names_of(name)
    if full == name:
        return False
    wanted = squeeze(pattern)
    if "(" in pattern:
        candidates = [squeeze(full), squeeze(_drop_return_type(full.split(" [clone")[0]))]
    else:
        candidates = [squeeze(base)]
    if glob:
        return any(fnmatch.fnmatchcase(c, wanted) for c in candidates)
    return wanted in candidates


# A ':' that separates the parts of a probe spec; `::` belongs to a C++ name.
COLON = re.compile(r"(?<!:):(?!:)")


def split_colon(text: str) -> tuple[str, str, str]:
    """str.partition(":") over separating colons only (`lib.so:ns::f` -> lib.so, ns::f)."""
    found = COLON.search(text)
    return (text, "", "") if found is None else (text[:found.start()], ":",
                                                  text[found.end():])


def rsplit_colon(text: str) -> tuple[str, str, str]:
    """str.rpartition(":") over separating colons only."""
    found = list(COLON.finditer(text))
    return ("", "", text) if not found else (text[:found[-1].start()], ":",
                                             text[found[-1].end():])


def split_offset(text: str) -> tuple[str, str, str]:
    """SYMBOL+OFFSET as (symbol, "+", offset), or (text, "", ""): for a C++ name only a
    trailing +NUMBER is an offset (`operator+`, `operator++(int)` are names)."""
    if not is_cxx_spec(text):
        return text.partition("+")
    name, plus, offset = text.rpartition("+")
    if plus and re.fullmatch(r"0[xX][0-9a-fA-F]+|[0-9]+", offset):
        return name, plus, offset
    return text, "", ""


def label(text: str) -> str:
    """`name` or `name+0xOFF` (how a probe site is shown) with the name demangled."""
    name, plus, offset = text.rpartition("+0x")
    return demangle(name) + plus + offset if plus else demangle(text)
