"""Atomic writes, used by every layer: a file is written under a temporary name beside its
target and renamed over it only when complete, so a crash never leaves a half-written file where
a good one is expected."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tinyvision.errors import DiskFullError

@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash mid-write therefore never leaves a half-written file where a good one is expected.
    The file is flushed to disk (fsync) before the rename and its folder after it, so a power
    cut cannot leave the new name pointing at data that never reached the disk. `suffix` keeps
    an extension some writers insist on (Keras wants `.keras`, `.weights.h5`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's process id in the name lets a later start tell a dead writer's leftover
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp")  # .<name>.<pid>.<random>.tmp<suffix>


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files that `atomic_path` left in `folder` when its process was killed
    (their writer's process is gone); a live writer's file is kept. Returns what was removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp*"):
        match = _TEMP_NAME.match(path.name)
        if match and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def reserve_space(path: str | Path, nbytes: int, what: str) -> None:
    """Give the file `path` `nbytes` of real disk blocks now, so that writing it later through a
    memory map cannot hit a full disk (which kills the process with SIGBUS, a sparse file's
    fate). Not enough room: a DiskFullError saying how much `what` needs and how much is free."""
    folder = Path(path).parent
    fd = os.open(path, os.O_RDWR)
    try:
        if nbytes:
            os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        free = shutil.disk_usage(folder).free
        if exc.errno == errno.ENOSPC or free < nbytes:
            raise DiskFullError(f"{what} needs {nbytes:,} bytes in {folder}, but only {free:,} "
                                "are free. Free some space, or set data.cache_dir to a folder on "
                                "a larger disk.") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, nbytes)  # the filesystem cannot reserve blocks; there was room just now
    finally:
        os.close(fd)
