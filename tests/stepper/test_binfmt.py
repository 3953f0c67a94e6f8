"""stepper.binfmt: the ELF file the kernel runs for a program file, scripts followed through
their #! interpreters as binfmt_script does (checked against what the kernel actually runs)."""

from __future__ import annotations

import os
import subprocess

import pytest

from stepper.binfmt import executable_image
from stepper.errors import StepperError


def script(path, text: str):
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_elf_is_itself_and_a_script_is_its_interpreter(tmp_path):
    assert executable_image("/bin/sh") == os.path.realpath("/bin/sh")
    s = script(tmp_path / "s", "#!  /bin/sh -e  \necho $0\n")
    assert executable_image(str(s)) == os.path.realpath("/bin/sh")


def test_nested_interpreters_end_at_the_elf_the_kernel_runs(tmp_path):
    inner = script(tmp_path / "inner", '#!/bin/sh\nexec /bin/sh "$@"\n')
    outer = script(tmp_path / "outer", f"#!{inner}\necho nested ok\n")
    run = subprocess.run([str(outer)], capture_output=True, text=True, timeout=30)
    assert run.stdout == "nested ok\n"   # the kernel runs it this way too
    assert executable_image(str(outer)) == os.path.realpath("/bin/sh")


@pytest.mark.parametrize("first_line, message", [
    ("#!/no/such/interp", "its interpreter /no/such/interp does not exist"),
    ("#!", "its #! line names no interpreter"),
    ("#!@TMP@/plain", "its interpreter @TMP@/plain is not executable"),
])
def test_what_the_kernel_refuses_is_one_line(tmp_path, first_line, message):
    (tmp_path / "plain").write_text("not a program\n")   # mode 0644
    first_line, message = (x.replace("@TMP@", str(tmp_path)) for x in (first_line, message))
    s = script(tmp_path / "bad", first_line + "\necho hi\n")
    with pytest.raises(StepperError, match=f"^cannot run {s}: {message}$"):
        executable_image(str(s))


def test_too_deep_nesting(tmp_path):
    previous = "/bin/sh"
    for n in range(6):
        previous = str(script(tmp_path / f"s{n}", f"#!{previous}\n"))
    with pytest.raises(StepperError, match="more than 4 nested"):
        executable_image(previous)
