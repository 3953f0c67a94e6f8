"""The README's debugger example ("Writing a debugger") runs as shown: its code block is
extracted and run against /bin/echo, and the lines it prints must be the README's output
block, word for word, so the README cannot drift from the API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n### {title}\n")
    end = text.find("\n#", start + len(title) + 6)
    return text[start:end if end != -1 else len(text)]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def test_the_debugger_example_prints_what_the_readme_shows(tmp_path):
    section = _section("Writing a debugger")
    code, = _blocks(section, "python")[:1]
    shown, = _blocks(section, "text")[:1]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(README.parent))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == shown.splitlines()
    assert run.stderr == "HELLO\n"  # the program's write, changed by the example


def test_the_extraction_finds_the_blocks():
    """The test above must not pass on an empty block."""
    section = _section("Writing a debugger")
    assert "proc.cont()" in _blocks(section, "python")[0]
    assert len(_blocks(section, "text")[0].splitlines()) >= 5
