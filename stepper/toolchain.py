"""Build the bundled programs (demo, benchmark tracee, C floor tracer, fuzz sandbox) with gcc
on first use, into a cache directory, keyed by a hash of the source, the flags and the compiler.

Why the checks: a cached file is executed, often as root, under a name anyone can predict.
Whoever can write the cache directory (or rename one of its ancestors) could plant a program
there. So, like ssh's StrictModes, the cache directory must be owned by the current user and
not writable by group or others, and each ancestor must be owned by the user or by root and not
writable by group or others, except that a sticky world-writable ancestor such as /tmp is
accepted: the sticky bit stops others from renaming or removing what is ours in it, and the
owner check refuses a directory someone else created there first. A cached file is opened with
O_NOFOLLOW and checked with fstat on the open descriptor (ours, a regular file, not writable by
group or others), then used through that descriptor (`/proc/PID/fd/N`), so nothing can be
swapped between the check and the use. Builds go to a unique temporary in the cache and are
renamed into place, so concurrent builders (fuzz workers on a cold cache) never meet.

`open_verified` and `cache_dir` are the general helpers: any later cache (parsed symbols, line
tables) must open its files through them, and validate the content it reads as well.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from .errors import StepperError


class BuildError(StepperError):
    """gcc is missing or refused a bundled source."""


class CacheError(StepperError):
    """The cache directory or a file in it could have been written by someone else."""


FIX = "set STEPPER_CACHE to a directory of your own (mode 0700)"

#: Descriptors of the files `build` returned, kept open for the life of the process: the
#: paths handed out (/proc/PID/fd/N) name these descriptors, not the cache's file names.
_held: dict[Path, int] = {}


def cache_dir() -> Path:
    """$STEPPER_CACHE, else $XDG_CACHE_HOME/stepper, else ~/.cache/stepper: created 0700,
    checked (see `check_dir`), returned resolved (a symlink swapped later does not matter)."""
    base = os.environ.get("STEPPER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stepper")
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
    except OSError as e:
        raise CacheError(f"cannot create the cache directory {base}: {e.strerror}; {FIX}") from None
    return check_dir(Path(base))


def check_dir(path: Path) -> Path:
    """The resolved `path` if it and its ancestors are safe to trust (module doc); else a
    CacheError naming the first offending directory and the fix."""
    real = Path(os.path.realpath(path))
    me = os.geteuid()
    info = _lstat(real)
    if not stat.S_ISDIR(info.st_mode):
        raise CacheError(f"cache directory {real} is not a directory; {FIX}")
    if info.st_uid != me:
        raise CacheError(f"cache directory {real} is owned by uid {info.st_uid}, not by you "
                         f"(uid {me}); {FIX}")
    if info.st_mode & 0o022:
        raise CacheError(f"cache directory {real} is writable by others (mode "
                         f"{stat.S_IMODE(info.st_mode):o}): chmod 700 {real}, or {FIX}")
    for parent in real.parents:
        up = _lstat(parent)
        if up.st_uid not in (me, 0):
            raise CacheError(f"{parent}, above the cache directory {real}, is owned by uid "
                             f"{up.st_uid} (neither you nor root); {FIX}")
        if up.st_mode & 0o022 and not up.st_mode & stat.S_ISVTX:
            raise CacheError(f"{parent}, above the cache directory {real}, is writable by "
                             f"others (mode {stat.S_IMODE(up.st_mode):o}) without the sticky "
                             f"bit; {FIX}")
    return real


def open_verified(path: Path, missing_ok: bool = False) -> int | None:
    """A read-only, close-on-exec descriptor of the file `path` in a checked directory (see
    `check_dir`), refused unless it is a regular file (no symlink followed), owned by the
    current user and not writable by group or others. None if it does not exist and
    `missing_ok`. The checks are on the open descriptor: use it, not the path, afterwards."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise CacheError(f"cached file {path} is missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CacheError(f"refusing cached file {path}: it is a symbolic link; "
                             f"remove it") from None
        raise CacheError(f"cannot open cached file {path}: {e.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_uid != os.geteuid():
        problem = f"owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    elif info.st_mode & 0o022:
        problem = f"writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        os.close(fd)
        raise CacheError(f"refusing cached file {path}: {problem}; remove it (it is rebuilt)")
    return fd


def fd_path(fd: int) -> Path:
    """The path through which this process's descriptor `fd` can be opened or executed, by
    this process and by its children (which need not inherit the descriptor)."""
    return Path(f"/proc/{os.getpid()}/fd/{fd}")


def bundled_source(name: str) -> str:
    return resources.files("stepper").joinpath("data", name).read_text()


def build(name: str, flags: tuple[str, ...] = ("-O2",), output: str | None = None,
          filename: str | None = None) -> Path:
    """Compile the bundled source `name` (in stepper/data) and return a path executing the
    checked build: /proc/PID/fd/N, valid while this process lives (its children included).

    The build is cached as `<output or stem>-<key>`, or as `<stem>-<key>.d/<filename>` when
    the program's own file name matters (the demo's table shows it)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc not found: install it (apt-get install gcc) to build bundled programs")
    source = bundled_source(name)
    key = hashlib.sha256("\0".join((source, *flags, gcc)).encode()).hexdigest()[:16]
    stem = output or Path(name).stem
    directory = cache_dir()
    if filename is None:
        target = directory / f"{stem}-{key}"
    else:
        folder = directory / f"{stem}-{key}.d"
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        directory = check_dir(folder)
        target = directory / filename
    fd = _held.get(target)
    if fd is None:
        fd = open_verified(target, missing_ok=True)
        if fd is None:
            _compile(gcc, name, source, flags, directory, target)
            fd = open_verified(target)
        _held[target] = fd
    return fd_path(fd)


def _compile(gcc: str, name: str, source: str, flags: tuple[str, ...], directory: Path,
             target: Path) -> None:
    """gcc in a unique temporary directory of `directory`, then an atomic rename to `target`:
    a concurrent builder never sees a half-written file, and two builders never share a name.
    The source keeps the cache's name in the debug information (-ffile-prefix-map), so every
    builder produces the same bytes."""
    work = tempfile.mkdtemp(prefix=f".{target.name}-", dir=directory)
    src = os.path.join(work, f"{target.name}{Path(name).suffix}")
    out = os.path.join(work, "out")
    try:
        with open(src, "w") as f:
            f.write(source)
        proc = subprocess.run([gcc, *flags, f"-ffile-prefix-map={work}={directory}", "-o", out,
                               src], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["no message"])[0]
            raise BuildError(f"gcc failed on bundled {name}: {first}")
        os.chmod(out, 0o700)  # whatever the umask: only its owner runs it
        os.rename(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _lstat(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as e:
        raise CacheError(f"cannot check {path}: {e.strerror}; {FIX}") from None
