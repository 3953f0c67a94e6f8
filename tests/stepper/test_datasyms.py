"""A probe spec naming a variable says so, with its section: .data, .bss or .rodata."""

from __future__ import annotations

import pytest

from stepper.datasyms import data_section
from tests.support.runs import probe_specs


@pytest.mark.parametrize("name,section", [("counter", ".data"), ("zeroed", ".bss"),
                                          ("limit", ".rodata")])
def test_variable_in_a_probe_spec(build, tmp_path, name, section):
    exe = build("cxx_names")
    assert data_section(exe, name) == section
    run, report = probe_specs(tmp_path, [name], [exe])
    assert run.returncode == 2 and report is None and run.stdout == ""
    assert run.stderr.strip() == (f"stepper: error: probe spec {name!r}: {name} is a variable "
                                  f"(in {section} of cxx_names), not a function")


def test_a_function_is_not_a_variable(build):
    assert data_section(build("cxx_names"), "main") is None
