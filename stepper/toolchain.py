"""Build the bundled C programs (demo, benchmark tracee, the C floor tracer) with gcc on first
use, into a cache directory, keyed by a hash of the source, the flags and the compiler."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from .errors import StepperError


class BuildError(StepperError):
    """gcc is missing or refused a bundled source."""


def cache_dir() -> Path:
    """$STEPPER_CACHE, else $XDG_CACHE_HOME/stepper, else ~/.cache/stepper."""
    base = os.environ.get("STEPPER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stepper")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_source(name: str) -> str:
    return resources.files("stepper").joinpath("data", name).read_text()


def build(name: str, flags: tuple[str, ...] = ("-O2",), output: str | None = None) -> Path:
    """Compile the bundled source `name` (in stepper/data) and return the executable's path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc not found: install it (apt-get install gcc) to build bundled programs")
    source = bundled_source(name)
    key = hashlib.sha256("\0".join((source, *flags, gcc)).encode()).hexdigest()[:16]
    stem = output or Path(name).stem
    target = cache_dir() / f"{stem}-{key}"
    if target.exists():
        return target
    src_path = cache_dir() / f"{stem}-{key}{Path(name).suffix}"
    src_path.write_text(source)
    tmp = target.with_suffix(".tmp")
    proc = subprocess.run([gcc, *flags, "-o", str(tmp), str(src_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise BuildError(f"gcc failed on bundled {name}: {first}")
    tmp.rename(target)  # atomic: a concurrent builder never sees a half-written binary
    return target
