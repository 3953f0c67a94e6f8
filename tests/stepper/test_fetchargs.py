"""Parsing `-p` elements: splitting, fetch arguments, types, names and the errors' columns."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from stepper.fetchargs import FetchError, parse_fetch, parse_probe, split_words


def test_one_element_is_one_probe_split_outside_parens_and_quotes():
    line = parse_probe('libc.so.6:malloc size=%di x=+8( +0(%si) ) if comm == "a b"')
    assert line.spec == "libc.so.6:malloc" and not line.is_return
    assert [a.name for a in line.args] == ["size", "x"]
    assert line.args[1].node == ("deref", 8, ("deref", 0, ("reg", "rsi")))
    assert line.filter.text == 'comm == "a b"'


def test_register_forms_and_default_types():
    assert parse_fetch("%di").node == parse_fetch("%rdi").node == ("reg", "rdi")
    assert parse_fetch("%ip").node == ("reg", "rip")
    assert parse_fetch("%di").type == "x64" and parse_fetch("%di").name == "arg1"
    assert parse_fetch("$comm").type == "string"
    assert parse_fetch("$stack3").node == ("stack", 3) and parse_fetch("$stack").node == ("sp",)
    assert parse_fetch("$arg7").node == ("arg", 7)
    assert parse_fetch("@0x601000:u16").node == ("addr", 0x601000)
    assert parse_fetch("@gauge+4").node == ("sym", "gauge", 4)
    assert parse_fetch("-16(%bp):s32").node == ("deref", -16, ("reg", "rbp"))
    assert parse_fetch("r=$retval", is_return=True).node == ("retval",)


def test_unnamed_arguments_are_named_by_position():
    line = parse_probe("work %di n=%si %dx")
    assert [a.name for a in line.args] == ["arg1", "n", "arg3"]


def test_return_spec():
    line = parse_probe("libc.so.6:malloc%return size=%di ptr=$retval if retval != 0")
    assert line.is_return and line.spec == "libc.so.6:malloc"
    assert "duration_ns" not in line.filter.names


@pytest.mark.parametrize("text, message, column", [
    ("w a=%zz", "unknown register %zz", 6),
    ("w a=%di:q8", "unknown type 'q8'", 9),
    ("w $params:x64", "$params takes no NAME= or :TYPE", 3),
    ("w a $params", "$params fetches every parameter: give it alone", None),
    ("w a=+8(%di", "unclosed '('", 7),
    ("w a=%di)", "unbalanced ')'", 8),
    ("w a=$stacks", "unknown variable $stacks", 5),
    ("w a=$arg0", "unknown variable $arg0", 5),
    ("w a=$retval", "$retval is only for return probes", 5),
    ("w a=+8%di", "'(' expected", 7),
    ("w a=$comm:u8", "$comm is a string", 11),
    ("w pid=%di", "'pid' is a reserved name", 3),
    ("w a=%di b=%si a=%dx", "two fetch arguments named 'a'", None),
    ("w a=%di if", "'if' needs an expression", 9),
    ("%return", "SPEC expected before %return", 1),
])
def test_errors_are_one_line_with_the_character(text, message, column):
    with pytest.raises(FetchError) as e:
        parse_probe(text)
    assert message in str(e.value) and "\n" not in str(e.value)
    if column is not None:
        assert str(e.value).endswith(f"(character {column})")


_word = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="%$@+_"),
                min_size=1, max_size=8)
_group = st.builds(lambda a, b: f"{a}({b} {a})", _word, _word)
_quoted = st.builds(lambda a: f'"{a} {a}"', _word)


@given(st.lists(st.one_of(_word, _group, _quoted), min_size=1, max_size=6),
       st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=6, max_size=6))
def test_split_words_round_trip(words, gaps):
    text = "".join(g + w for g, w in zip(gaps, words))
    assert [w for w, _ in split_words(text)] == words
    assert all(text[at:at + len(w)] == w for w, at in split_words(text))


_REG = st.sampled_from(["rdi", "rsi", "rax", "r8", "r15", "rsp"])


def _location():
    leaf = st.one_of(_REG.map(lambda r: ("reg", r)),
                     st.integers(0, 40).map(lambda n: ("stack", n)),
                     st.integers(1, 12).map(lambda n: ("arg", n)),
                     st.integers(0, 2**48).map(lambda a: ("addr", a)))
    return st.recursive(leaf, lambda inner: st.tuples(
        st.just("deref"), st.integers(-4096, 4096), inner), max_leaves=4)


def _text(node) -> str:
    op = node[0]
    if op == "reg":
        return "%" + node[1]
    if op == "stack":
        return f"$stack{node[1]}"
    if op == "arg":
        return f"$arg{node[1]}"
    if op == "addr":
        return f"@{node[1]:#x}"
    off = node[1]
    return f"{'-' if off < 0 else '+'}{abs(off)}({_text(node[2])})"


@given(_location(), st.sampled_from(["u8", "s16", "x32", "u64", "string", "symbol", None]))
def test_fetcharg_text_round_trip(node, typ):
    text = "v=" + _text(node) + (f":{typ}" if typ else "")
    arg = parse_fetch(text)
    assert arg.node == node and arg.name == "v" and arg.type == (typ or "x64")
    assert parse_probe(f"f {text} if v == 1").args == (arg,)
