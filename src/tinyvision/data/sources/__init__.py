"""Annotation sources. Each module turns one format into a `Manifest`; `build_manifest` picks one
from the config, assigns the splits the source did not give, and validates the result."""

from __future__ import annotations

from dataclasses import replace

from tinyvision.config import DataConfig
from tinyvision.data.manifest import Manifest, assign_splits


def load_source(data: DataConfig, task: str = "auto") -> Manifest:
    """The manifest of the configured source, splits as the source gives them (possibly none)."""
    source = data.source
    if source.format == "folder":
        from tinyvision.data.sources.folder import load_folder

        return load_folder(source.root, source.extensions, task)
    raise AssertionError(f"unhandled source format {source.format!r}")  # config validation prevents


def build_manifest(data: DataConfig, seed: int, task: str = "auto") -> Manifest:
    """Load the source, then split it: splits the source gave are kept; a missing val or test
    split is carved from train (seeded, stratified by class)."""
    manifest = load_source(data, task)
    present = {s.split for s in manifest.samples}
    if present <= {""}:
        samples = assign_splits(manifest.samples, data.val_fraction, data.test_fraction, seed)
    else:
        val = 0.0 if "val" in present else data.val_fraction
        test = 0.0 if "test" in present else data.test_fraction
        # Train samples (or unsplit ones) become candidates again for the missing splits.
        pool = [replace(s, split="") if s.split in ("train", "") else s for s in manifest.samples]
        samples = assign_splits(pool, val, test, seed)
    manifest = Manifest(manifest.classes, manifest.task, samples)
    manifest.validate()
    return manifest
