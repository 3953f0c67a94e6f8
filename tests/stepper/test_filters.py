"""`if EXPR`: parsed once, evaluated over a hit's names; no eval of user text."""

from __future__ import annotations

import pytest

from stepper.filters import FilterError, parse_filter

NAMES = ["a", "s", "pid", "tid", "comm"]


@pytest.mark.parametrize("text, env, expected", [
    ("a > 3", {"a": 4}, True),
    ("a > 3", {"a": 3}, False),
    ("a + 1 == 5 and not s == 'x'", {"a": 4, "s": "y"}, True),
    ("a % 4 == 1 or s == \"x\"", {"a": 8, "s": "x"}, True),
    ("1 < a <= 3", {"a": 3}, True),
    ("1 < a <= 3", {"a": 4}, False),
    ("-7 / 2 == -3", {}, True),               # C's truncating division
    ("(a & 0xff) == 0x34", {"a": 0x1234}, True),
    ("a == 1", {"a": None}, False),           # a fault never matches
    ("a != 1", {"a": None}, False),
    ("s > 3", {"s": "abc"}, False),           # a string is not a number
    ("a / 0 == 1", {"a": 1}, False),
    ("comm == 'tw' and pid == tid", {"comm": "tw", "pid": 5, "tid": 5}, True),
])
def test_evaluates(text, env, expected):
    assert parse_filter(text, NAMES).matches(env) is expected


def test_names_used_are_reported():
    assert parse_filter("a > 1 and comm == 'x'", NAMES).names == {"a", "comm"}


@pytest.mark.parametrize("text, message", [
    ("a >", "syntax error"),
    ("b == 1", "unknown name 'b'"),
    ("__import__('os')", "call is not allowed"),
    ("a.real == 1", "attribute is not allowed"),
    ("a in (1, 2)", "only == != < <= > >= compare"),
    ("[a][0] == 1", "subscript is not allowed"),
    ("a == 1.5", "constant is not allowed"),
    ("lambda: 1", "lambda is not allowed"),
])
def test_refusals_are_one_line(text, message):
    with pytest.raises(FilterError) as e:
        parse_filter(text, NAMES, whole=f"w a=%di if {text}", at=12)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "(character " in str(e.value)
