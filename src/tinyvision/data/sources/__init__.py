"""Annotation sources. Each module turns one format into a `Manifest`; `build_manifest` picks one
from the config, assigns the splits the source did not give, and validates the result."""

from __future__ import annotations

from tinyvision.config import DataConfig
from tinyvision.data.manifest import Manifest, assign_splits
from tinyvision.data.sources.coco import load_coco
from tinyvision.data.sources.csv import load_csv
from tinyvision.data.sources.folder import load_folder
from tinyvision.data.sources.merge import load_merge
from tinyvision.data.sources.voc import load_voc
from tinyvision.errors import DataError


def load_source(data: DataConfig, task: str = "auto", seed: int = 0) -> Manifest:
    """The manifest of the configured source, splits as the source gives them (possibly none).

    `seed` drives the seeded undersampling (caps) and negative sampling of annotation sources.
    """
    return load_one(data.source, task, seed, data.crop_to_box)


def load_one(source, task: str = "auto", seed: int = 0, crop_to_box: bool = False) -> Manifest:
    """The manifest of one source config (any member of `DataSource`); formats load lazily."""
    if source.format == "folder":
        return load_folder(source.root, source.extensions, task)
    if source.format == "coco":
        return load_coco(source, task, seed, crop_to_box)
    if source.format == "voc":
        return load_voc(source, task, seed, crop_to_box)
    if source.format == "csv":
        return load_csv(source, task, crop_to_box)
    if source.format == "merge":
        return load_merge(source, task, lambda inner: load_one(inner, task, seed, crop_to_box))
    raise AssertionError(f"unhandled source format {source.format!r}")  # config validation prevents


def build_manifest(data: DataConfig, seed: int, task: str = "auto") -> Manifest:
    """Load the source, then split it: splits the source gave are kept; a missing val or test
    split is carved from train (seeded, stratified by class)."""
    return finish_manifest(load_source(data, task, seed), data, seed)


def finish_manifest(manifest: Manifest, data: DataConfig, seed: int) -> Manifest:
    """Assign the splits a loaded manifest lacks and validate it (the second half of
    `build_manifest`, for callers that loaded the source themselves)."""
    if data.crop_to_box and manifest.samples and all(s.box is None for s in manifest.samples):
        raise DataError("data.crop_to_box is set but no sample has a box; use a source with "
                        "boxes (coco/voc with mode: largest, or a CSV with x1,y1,x2,y2 columns) "
                        "or set data.crop_to_box: false.")
    present = {s.split for s in manifest.samples}
    if present <= {""}:
        samples = assign_splits(manifest.samples, data.val_fraction, data.test_fraction, seed)
    else:
        val = 0.0 if "val" in present else data.val_fraction
        test = 0.0 if "test" in present else data.test_fraction
        # Train samples (or unsplit ones) become candidates again for the missing splits.
        pool = [s.with_split("") if s.split in ("train", "") else s for s in manifest.samples]
        samples = assign_splits(pool, val, test, seed)
    manifest = Manifest(manifest.classes, manifest.task, samples)
    manifest.validate()
    return manifest
