"""Run folders: `runs/<name>/` holds everything one run produced.

The file names and the layout are tinyvision/layout.py's; RunDir makes them paths.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tinyvision.errors import RunError
from tinyvision.layout import (APP_DIR, BAD_IMAGES_FILE, BEST_WEIGHTS_FILE, C_HEADER_FILE,
                               C_SOURCE_FILE, CHECKPOINTS_DIR, CONFIG_FILE, EVAL_SCORES_FILE,
                               EXPORT_DIR, FIT_FILE, FLOAT_MODEL_FILE, FORMAT_FILES,
                               INT8_SCORES_FILE, LEGACY_RUN_FILES, LOG_FILE, LR_FIND_PLOT,
                               MANIFEST_FILE, METRICS_FILE, REPORT_FILE, RUN_MARKER,
                               SUMMARY_FILE, THRESHOLDS_FILE, VERIFY_FILE)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    config = property(lambda self: self.root / CONFIG_FILE)
    manifest = property(lambda self: self.root / MANIFEST_FILE)
    bad_images = property(lambda self: self.root / BAD_IMAGES_FILE)
    checkpoints = property(lambda self: self.root / CHECKPOINTS_DIR)
    best_weights = property(lambda self: self.root / CHECKPOINTS_DIR / BEST_WEIGHTS_FILE)
    log = property(lambda self: self.root / LOG_FILE)
    lr_find_plot = property(lambda self: self.root / LR_FIND_PLOT)
    metrics = property(lambda self: self.root / METRICS_FILE)
    eval_scores = property(lambda self: self.root / EVAL_SCORES_FILE)
    int8_scores = property(lambda self: self.root / INT8_SCORES_FILE)
    thresholds = property(lambda self: self.root / THRESHOLDS_FILE)
    export_dir = property(lambda self: self.root / EXPORT_DIR)
    float_model = property(lambda self: self.root / EXPORT_DIR / FLOAT_MODEL_FILE)
    int8_model = property(lambda self: self.root / EXPORT_DIR / FORMAT_FILES["int8"])
    c_header = property(lambda self: self.root / EXPORT_DIR / C_HEADER_FILE)
    c_source = property(lambda self: self.root / EXPORT_DIR / C_SOURCE_FILE)
    app_dir = property(lambda self: self.root / EXPORT_DIR / APP_DIR)
    fit = property(lambda self: self.root / EXPORT_DIR / FIT_FILE)
    verify = property(lambda self: self.root / VERIFY_FILE)
    report = property(lambda self: self.root / REPORT_FILE)
    summary = property(lambda self: self.root / SUMMARY_FILE)

    def load_float_model(self, trust_model_code: bool = False):
        """The trained float Keras model (export/model_float.keras); the one place a run's model
        is loaded. `trust_model_code`: the caller's consent to load a model storing Python code
        (never the run folder's own config)."""
        from tinyvision.models.user_models import load_trained_model

        return load_trained_model(self.require(self.float_model, "tinyvision train"),
                                  trust_model_code)

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
    if not (root / CONFIG_FILE).is_file():
        raise RunError(f"{root} is not a run directory (no config.yaml); pass a folder under runs/ "
                       "made by `tinyvision train`.")
    return RunDir(root)
