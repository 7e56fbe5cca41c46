"""The TFLM library cache (~/.cache/tinyvision/tflm/): built in a private folder and renamed into
place, checked against the digest written last, keyed on the toolchain as well as the tree, its
lock never followed through a link, its build killed as a group when it runs too long. Fake trees
only: the real library takes minutes to build."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tinyvision.deploy import tflm_build
from tinyvision.errors import VerifyError


def fake_tree(tmp_path: Path, build_sh: str | None = None) -> Path:
    """A tree whose build.sh counts its runs (in tmp_path/count) and writes a tiny library."""
    tree = tmp_path / "tree"
    (tree / "tensorflow").mkdir(parents=True)
    (tree / "tflm_flags.mk").write_text("")
    (tree / "tensorflow" / "a.cc").write_text("int a;")
    (tree / "build.sh").write_text(build_sh or (
        'mkdir -p "$1" && echo x >> "$(dirname "$0")/../count" && echo lib > "$1/libtflm.a"\n'))
    return tree


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(tflm_build.CACHE_ENV, str(tmp_path / "cache"))
    for name in ("CXX", "TARGET", "EXTRA_CXXFLAGS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


def _builds(tmp_path: Path) -> int:
    count = tmp_path / "count"
    return len(count.read_text().split()) if count.exists() else 0


def test_a_corrupt_or_unmarked_library_is_rebuilt(tmp_path, cache):
    root = tflm_build.find_tflm_source(fake_tree(tmp_path))
    library = tflm_build.build_library(root)
    assert library.read_text() == "lib\n" and _builds(tmp_path) == 1
    assert tflm_build.build_library(root) == library and _builds(tmp_path) == 1
    library.write_text("half a library")  # a disk error, a killed copy, a hand edit
    assert tflm_build.build_library(root) == library and library.read_text() == "lib\n"
    assert _builds(tmp_path) == 2
    (library.parent / tflm_build.MARKER).unlink()  # the marker is written last: no marker, no use
    tflm_build.build_library(root)
    assert _builds(tmp_path) == 3
    # the build ran in a private folder that is gone; only the library and its marker are kept
    assert sorted(p.name for p in library.parent.iterdir()) == ["libtflm.a", tflm_build.MARKER]
    assert not [p for p in library.parent.parent.iterdir() if ".build-" in p.name]


def test_the_key_follows_the_compiler_its_version_the_flags_and_the_target(tmp_path, cache,
                                                                           monkeypatch):
    root = tflm_build.find_tflm_source(fake_tree(tmp_path))
    compiler = tmp_path / "bin" / "my-g++"
    compiler.parent.mkdir()
    compiler.write_text("#!/bin/sh\necho 'my-g++ 12.1'\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    first = tflm_build.build_library(root)
    compiler.write_text("#!/bin/sh\necho 'my-g++ 13.2'\n")  # the compiler was upgraded
    second = tflm_build.build_library(root)
    monkeypatch.setenv("EXTRA_CXXFLAGS", "-g")
    third = tflm_build.build_library(root)
    monkeypatch.setenv("TARGET", "cortex-m4")
    fourth = tflm_build.build_library(root)
    assert len({first, second, third, fourth}) == 4 and _builds(tmp_path) == 4
    assert tflm_build.build_library(root) == fourth and _builds(tmp_path) == 4


def test_the_lock_file_is_never_followed_through_a_link(tmp_path, cache):
    root = tflm_build.find_tflm_source(fake_tree(tmp_path))
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file")
    locks = cache / "tflm"
    locks.mkdir(parents=True)
    (locks / f"{tflm_build.build_key(root)}.lock").symlink_to(victim)
    with pytest.raises(VerifyError, match=r"\.lock is a symbolic link"):
        tflm_build.build_library(root)
    assert victim.read_text() == "someone's file" and _builds(tmp_path) == 0


def _running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(line for line in status.read_text().splitlines() if line.startswith("State"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return " Z " not in state and "zombie" not in state


def test_a_build_that_runs_too_long_is_killed_with_its_children(tmp_path, cache, monkeypatch):
    build_sh = ('echo $$ > "$(dirname "$0")/../shell.pid"\n'
                'sleep 30 &\necho $! > "$(dirname "$0")/../child.pid"\nwait\n')
    root = tflm_build.find_tflm_source(fake_tree(tmp_path, build_sh))
    monkeypatch.setattr(tflm_build, "BUILD_TIMEOUT_S", 2)
    with pytest.raises(VerifyError, match=r"did not finish in 2 s"):
        tflm_build.build_library(root)
    pids = [int((tmp_path / name).read_text()) for name in ("shell.pid", "child.pid")]
    for _ in range(100):  # SIGKILL is sent; the orphaned `sleep` is reaped by init
        if not any(map(_running, pids)):
            break
        time.sleep(0.05)
    assert not any(map(_running, pids)), "the build's processes outlived it"
    folder = cache / "tflm"
    assert not [p for p in folder.iterdir() if ".build-" in p.name]  # its private folder is gone
    assert not (folder / tflm_build.build_key(root)).exists()


def test_an_interrupted_build_leaves_nothing_behind(tmp_path, cache, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) while build.sh runs: the group is killed, the error goes on."""
    build_sh = 'sleep 30 &\necho $! > "$(dirname "$0")/../child.pid"\nwait\n'
    root = tflm_build.find_tflm_source(fake_tree(tmp_path, build_sh))
    real_communicate = tflm_build.subprocess.Popen.communicate

    def interrupted(self, *args, **kwargs):
        if self.args[0] != "bash":  # the compiler's --version, for the key
            return real_communicate(self, *args, **kwargs)
        for _ in range(200):
            if (tmp_path / "child.pid").exists():
                break
            time.sleep(0.02)
        raise KeyboardInterrupt

    monkeypatch.setattr(tflm_build.subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tflm_build.build_library(root)
    monkeypatch.setattr(tflm_build.subprocess.Popen, "communicate", real_communicate)
    pid = int((tmp_path / "child.pid").read_text())  # a compiler build.sh started
    for _ in range(100):
        if not _running(pid):
            break
        time.sleep(0.05)
    assert not _running(pid)
    assert not [p for p in (cache / "tflm").iterdir() if ".build-" in p.name]


def test_a_dead_builds_leftover_folder_is_removed(tmp_path, cache):
    root = tflm_build.find_tflm_source(fake_tree(tmp_path))
    key = tflm_build.build_key(root)
    leftover = cache / "tflm" / f".{key}.999999999.build-x"  # a process id that does not run
    (leftover / "build").mkdir(parents=True)
    tflm_build.build_library(root)
    assert not leftover.exists()


@pytest.mark.parametrize("name", ["with space", "dollar$(touch x)", "quote'd"])
def test_paths_that_make_would_split_or_run_are_refused_up_front(tmp_path, monkeypatch, name):
    tree = fake_tree(tmp_path / name)
    with pytest.raises(VerifyError, match=r"TFLM source tree .* make .* split or run"):
        tflm_build.find_tflm_source(tree)
    monkeypatch.setenv(tflm_build.CACHE_ENV, str(tmp_path / name / "cache"))
    with pytest.raises(VerifyError, match=rf"TFLM library cache .*{tflm_build.CACHE_ENV}"):
        tflm_build.find_tflm_source(fake_tree(tmp_path / "ok"))
    assert not os.path.exists(tmp_path / "x")
