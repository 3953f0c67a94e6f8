"""stepper.elf: the one ELF sniffer (used by the loader search, the process map reader and the
corpus) and the plain records read from ELF tables."""

from __future__ import annotations

import sys

from stepper.elf import is_elf, looks_like_elf


def test_sniffer_tells_elf_from_other_files(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert is_elf(sys.executable) and is_elf(sys.executable, x86_64=True)
    assert not is_elf(str(script))
    assert not is_elf(str(tmp_path / "missing"))


def test_x86_64_needs_class_64_and_machine_62():
    header = bytearray(b"\x7fELF" + bytes(16))
    header[4], header[18] = 2, 0x3E
    assert looks_like_elf(bytes(header), x86_64=True)
    header[4] = 1                                   # ELFCLASS32
    assert looks_like_elf(bytes(header)) and not looks_like_elf(bytes(header), x86_64=True)
    header[4], header[18] = 2, 0xB7                 # aarch64
    assert not looks_like_elf(bytes(header), x86_64=True)
    assert not looks_like_elf(b"\x7fEL") and not looks_like_elf(b"\x7fELF", x86_64=True)


def test_dwarf5_paths_relative_to_a_relative_compilation_directory(tmp_path):
    """As Debian builds libc (-fdebug-prefix-map): DW_AT_comp_dir "./sub" and directory 0 of
    the line table "./sub" name one directory, not sub/sub."""
    import shutil
    import subprocess

    import pytest

    from stepper.elf import line_rows
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the object")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "unit.c").write_text("int unit(int x) {\n  return x + 1;\n}\n")
    subprocess.run(["gcc", "-c", "-g", "-gdwarf-5", f"-fdebug-prefix-map={tmp_path}=.",
                    "-o", str(sub / "unit.o"), "unit.c"], cwd=sub, check=True)
    paths = {row.path for row in line_rows(str(sub / "unit.o"))}
    assert paths == {"sub/unit.c"}
