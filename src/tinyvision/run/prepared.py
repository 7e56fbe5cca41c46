"""The data stage: a run's manifest and image cache (`PreparedData`), the settings resolved from
the training images (color mode, recipe), and the splits the other stages read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyvision.config import RGB_ONLY_AUGMENT_OPS, RunConfig
from tinyvision.data.cache import DecodeSpec, ImageCache, build_cache
from tinyvision.data.color import resolve_color_mode
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources import build_manifest
from tinyvision.errors import DataError
from tinyvision.files import atomic_write_text
from tinyvision.run.folder import RunDir
from tinyvision.training.recipes import apply_recipe


@dataclass
class PreparedData:
    manifest: Manifest
    cache: ImageCache

    def indices(self, split: str) -> np.ndarray:
        """Sample indices of `split` whose image decoded."""
        return np.array([i for i, s in enumerate(self.manifest.samples)
                         if s.split == split and self.cache.valid[i]], np.int64)

    def split_sizes(self) -> dict[str, int]:
        """Decodable images per split, as summary.json lists them."""
        return {split: int(len(self.indices(split))) for split in ("train", "val", "test")}


def decode_spec(cfg: RunConfig) -> DecodeSpec:
    """How the run's images are decoded. An unresolved color_mode "auto" (a config used without
    `resolve_settings`) decodes as rgb, as the model is then built with three channels."""
    color_mode = "grayscale" if cfg.model.channels == 1 else "rgb"
    return DecodeSpec(tuple(cfg.model.input_size), color_mode, cfg.data.resize,
                      cfg.data.crop_to_box, cfg.data.crop_margin)


def prepare_manifest(cfg: RunConfig, run: RunDir) -> Manifest:
    """Build the manifest from `data.source` and save it in the run."""
    manifest = build_manifest(cfg.data, cfg.seed, cfg.model.task)
    manifest.save(run.manifest)
    return manifest


def prepare_data(cfg: RunConfig, run: RunDir, manifest: Manifest | None = None,
                 progress: bool = True) -> PreparedData:
    """Build (or load) the manifest, save it in the run, and open or build the image cache."""
    if manifest is None:
        manifest = prepare_manifest(cfg, run)
    cache = build_cache(manifest, decode_spec(cfg), cfg.cache_dir, cfg.data.workers, progress)
    atomic_write_text(run.bad_images, "".join(f"{path}\t{reason}\n" for path, reason in cache.bad))
    data = PreparedData(manifest, cache)
    if len(data.indices("train")) == 0:
        raise DataError("No decodable training images; see bad_images.txt in the run directory.")
    return data


def resolve_settings(cfg: RunConfig, manifest: Manifest) -> tuple[RunConfig, list[str]]:
    """The config with `model.color_mode: auto` and `train.recipe` resolved from the training
    images, and one line on each choice for the console."""
    extra, lines = {}, []
    if cfg.model.color_mode == "auto":
        rgb_only = [op.op for op in cfg.train.augment if op.op in RGB_ONLY_AUGMENT_OPS]
        mode, reason = resolve_color_mode(manifest, cfg.seed, rgb_only)
        extra["model.color_mode"] = mode
        lines.append(f"color_mode: {mode} ({reason})")
    n_train = sum(1 for s in manifest.samples if s.split == "train")
    cfg, recipe = apply_recipe(cfg, n_train, manifest.task, extra)
    return cfg, [*lines, recipe.describe()]


def train_data(data: PreparedData):
    """What the trainer (and lr-find) take: cached images, targets, splits, boxes for detection."""
    from tinyvision.training.trainer import TrainData

    boxes = data.cache.boxes if data.manifest.task == "detection" else None
    return TrainData(data.cache.images, data.manifest.label_matrix(), data.indices("train"),
                     data.indices("val"), data.indices("test"), data.manifest.classes,
                     data.manifest.task, boxes)


def eval_split(data: PreparedData) -> tuple[str, np.ndarray]:
    """The split the run is scored on: test, else val."""
    for split in ("test", "val"):
        indices = data.indices(split)
        if len(indices):
            return split, indices
    raise DataError("Neither a test nor a val split has images to evaluate on; set "
                    "data.test_fraction above 0 or add a test/ folder.")
