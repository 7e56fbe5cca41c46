"""Run folders: `runs/<name>/` holds everything one run produced.

Layout (DESIGN.md): config.yaml, manifest.jsonl, bad_images.txt, checkpoints/, log.csv,
metrics.json, report.html, export/, verify.json, summary.json.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tinyvision.errors import RunError
from tinyvision.training import BEST_WEIGHTS_FILE, CHECKPOINTS_DIR, LOG_FILE

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# written into every run folder when it is made: `overwrite: true` replaces only such a folder
RUN_MARKER = ".tinyvision-run"
LEGACY_RUN_FILES = ("config.yaml", "manifest.jsonl")  # what a run made before the marker holds


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
    checkpoints = property(lambda self: self.root / CHECKPOINTS_DIR)
    best_weights = property(lambda self: self.root / CHECKPOINTS_DIR / BEST_WEIGHTS_FILE)
    log = property(lambda self: self.root / LOG_FILE)
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

    Only `overwrite=True` reuses an existing directory, and then its contents are replaced; a
    folder that is not a tinyvision run (`is_run_folder`) is refused, never deleted.
    """
    if not _NAME_RE.match(name):
        raise RunError(f"Run name={name!r} is not allowed; use letters, digits, '.', '_' and '-', "
                       "starting with a letter or digit.")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    candidate = runs_dir / name
    if overwrite:
        if candidate.is_symlink() or candidate.exists():
            _check_replaceable(candidate)
            shutil.rmtree(candidate)
        candidate.mkdir()
        return _marked(candidate)
    number = 1
    while True:
        try:
            candidate.mkdir()  # atomic: two runs starting together never get the same folder
            return _marked(candidate)
        except FileExistsError:
            number += 1
            candidate = runs_dir / f"{name}-{number}"


def is_run_folder(path: Path) -> bool:
    """Whether `path` is a folder tinyvision made for a run: it holds the marker every run
    folder gets when it is made (or, made before the marker, a config.yaml and a manifest)."""
    if path.is_symlink() or not path.is_dir():
        return False
    return (path / RUN_MARKER).is_file() or all((path / f).is_file() for f in LEGACY_RUN_FILES)


def _check_replaceable(path: Path) -> None:
    """`overwrite: true` deletes `path`: only an empty folder or a run folder, never a link."""
    if path.is_symlink():
        raise RunError(f"{path} is a symbolic link; overwrite: true replaces only a run folder "
                       "tinyvision made. Remove the link or choose another name.")
    if path.is_dir() and not any(path.iterdir()):
        return
    if not is_run_folder(path):
        raise RunError(f"{path} exists and is not a tinyvision run folder (no {RUN_MARKER}); "
                       "overwrite: true replaces only a run folder, so nothing was deleted. Move "
                       "it away, or choose another name (name=...) or runs_dir.")


def _marked(root: Path) -> RunDir:
    (root / RUN_MARKER).write_text("A tinyvision run folder: `overwrite: true` may replace it.\n")
    return RunDir(root)


def open_run_dir(path: str | Path) -> RunDir:
    """An existing run directory (must hold config.yaml)."""
    root = Path(path)
    if not (root / "config.yaml").is_file():
        raise RunError(f"{root} is not a run directory (no config.yaml); pass a folder under runs/ "
                       "made by `tinyvision train`.")
    return RunDir(root)
