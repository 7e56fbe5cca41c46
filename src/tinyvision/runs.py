"""Run directories: `runs/<name>/` holds everything one run produced; writes are atomic.

Layout (DESIGN.md): config.yaml, manifest.jsonl, bad_images.txt, checkpoints/, log.csv,
metrics.json, report.html, export/, verify.json.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tinyvision.errors import RunError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash mid-write therefore never leaves a half-written file where a good one is expected.
    `suffix` keeps an extension some writers insist on (Keras wants `.keras`, `.weights.h5`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    config = property(lambda self: self.root / "config.yaml")
    manifest = property(lambda self: self.root / "manifest.jsonl")
    bad_images = property(lambda self: self.root / "bad_images.txt")
    checkpoints = property(lambda self: self.root / "checkpoints")
    best_weights = property(lambda self: self.root / "checkpoints" / "best.weights.h5")
    log = property(lambda self: self.root / "log.csv")
    metrics = property(lambda self: self.root / "metrics.json")
    export_dir = property(lambda self: self.root / "export")
    float_model = property(lambda self: self.root / "export" / "model_float.keras")
    int8_model = property(lambda self: self.root / "export" / "model_int8.tflite")
    c_header = property(lambda self: self.root / "export" / "model_int8.h")
    c_source = property(lambda self: self.root / "export" / "model_int8.cc")
    verify = property(lambda self: self.root / "verify.json")
    summary = property(lambda self: self.root / "summary.json")

    def require(self, path: Path, produced_by: str) -> Path:
        """Return `path`, or raise a RunError saying which step produces it."""
        if not path.exists():
            raise RunError(f"{path} does not exist; run `{produced_by}` first.")
        return path


def new_run_dir(runs_dir: str | Path, name: str, overwrite: bool = False) -> RunDir:
    """Create `runs_dir/name`; a taken name gets a numbered suffix (name-2, name-3, ...).

    Only `overwrite=True` reuses an existing directory, and then its contents are replaced.
    """
    if not _NAME_RE.match(name):
        raise RunError(f"Run name={name!r} is not allowed; use letters, digits, '.', '_' and '-', "
                       "starting with a letter or digit.")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    candidate = runs_dir / name
    if overwrite:
        if candidate.exists():
            import shutil

            shutil.rmtree(candidate)
        candidate.mkdir()
        return RunDir(candidate)
    number = 1
    while True:
        try:
            candidate.mkdir()  # atomic: two runs starting together never get the same folder
            return RunDir(candidate)
        except FileExistsError:
            number += 1
            candidate = runs_dir / f"{name}-{number}"


def open_run_dir(path: str | Path) -> RunDir:
    """An existing run directory (must hold config.yaml)."""
    root = Path(path)
    if not (root / "config.yaml").is_file():
        raise RunError(f"{root} is not a run directory (no config.yaml); pass a folder under runs/ "
                       "made by `tinyvision train`.")
    return RunDir(root)
