"""The build cache: nobody else can plant a program in it, a checked file is used through its
descriptor, and concurrent builders on an empty cache do not meet."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from stepper import cli, toolchain

NOBODY = 65534
SOURCE, FLAGS = "demo.c", ("-O0", "-fno-inline", "-g")

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("STEPPER_CACHE", str(path))
    toolchain._held.clear()
    yield path
    for fd in toolchain._held.values():
        os.close(fd)
    toolchain._held.clear()


def _demo_name(cache: Path) -> Path:
    """Where the demo's build lives in `cache`, relative to it (built once to learn it)."""
    built = toolchain.build(SOURCE, FLAGS, filename="demo")
    return Path(os.path.realpath(built)).relative_to(os.path.realpath(cache))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    os.chmod(path, 0o777)
    os.chown(path, NOBODY, NOBODY)


def test_the_cache_is_created_0700_and_builds_are_used_through_a_descriptor(cache):
    built = toolchain.build(SOURCE, FLAGS)
    assert os.stat(cache).st_mode & 0o777 == 0o700
    assert str(built).startswith(f"/proc/{os.getpid()}/fd/")
    real = Path(os.path.realpath(built))
    assert real.parent == Path(os.path.realpath(cache))
    before = built.read_bytes()
    assert before.startswith(b"\x7fELF")
    # Something swapped in under the cache's name afterwards is not what the path runs.
    swap = cache / "swap"
    swap.write_bytes(b"#!/bin/sh\nexit 3\n")
    os.rename(swap, real)
    assert built.read_bytes() == before
    assert [p.name for p in cache.iterdir()] == [real.name]  # no temporaries left behind


def test_a_planted_program_under_a_world_writable_cache_is_refused_not_run(cache, tmp_path, capsys):
    name = _demo_name(cache)
    shutil.rmtree(cache)
    cache.mkdir()
    os.chmod(cache, 0o777)
    marker = tmp_path / "planted-ran"
    _plant(cache / name, marker)
    toolchain._held.clear()
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cache) in err and "writable by others" in err
    assert "STEPPER_CACHE" in err
    assert not marker.exists()


def test_a_file_owned_by_someone_else_is_refused_not_run(cache, tmp_path, capsys):
    name = _demo_name(cache)
    toolchain._held.clear()
    marker = tmp_path / "planted-ran"
    (cache / name).unlink()
    _plant(cache / name, marker)
    os.chmod(cache / name, 0o700)  # not writable by others: refused for its owner alone
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"owned by uid {NOBODY}" in err and str(cache / name) in err
    assert not marker.exists()


def test_a_symlink_in_the_cache_is_not_followed(cache, tmp_path):
    name = _demo_name(cache)
    toolchain._held.clear()
    (cache / name).unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("#!/bin/sh\n")
    os.symlink(elsewhere, cache / name)
    with pytest.raises(toolchain.CacheError, match="symbolic link"):
        toolchain.build(SOURCE, FLAGS, filename="demo")


def test_a_cache_directory_owned_by_someone_else_is_refused(cache):
    cache.mkdir(mode=0o700)
    os.chown(cache, NOBODY, NOBODY)
    with pytest.raises(toolchain.CacheError, match=f"owned by uid {NOBODY}, not by you"):
        toolchain.build(SOURCE, FLAGS)
    assert list(cache.iterdir()) == []


def test_an_ancestor_others_can_write_is_refused_unless_sticky(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("STEPPER_CACHE", str(shared / "mine"))
    with pytest.raises(toolchain.CacheError, match="without the sticky bit"):
        toolchain.cache_dir()
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename or remove what is ours
    assert toolchain.cache_dir() == Path(os.path.realpath(shared / "mine"))


def test_an_ancestor_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    monkeypatch.setenv("STEPPER_CACHE", str(theirs / "mine"))
    with pytest.raises(toolchain.CacheError, match="neither you nor root"):
        toolchain.cache_dir()


def _build_in_child(barrier) -> bytes:
    barrier.wait()
    return toolchain.build(SOURCE, FLAGS).read_bytes()


def test_concurrent_builds_on_an_empty_cache(cache):
    """Several processes build the same program at once into an empty cache (fuzz workers on
    a cold cache): each gets a complete, identical build, and no temporary is left behind."""
    n = 4
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier = manager.Barrier(n)
        with context.Pool(n) as pool:
            results = pool.map(_build_in_child, [barrier] * n)
    assert all(r == results[0] and r.startswith(b"\x7fELF") for r in results)
    assert len(list(cache.iterdir())) == 1
