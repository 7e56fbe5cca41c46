"""Shared fixtures: tiny generated images and configs. Tests never read files outside tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_image(path: Path, colour=(128, 128, 128), size=(40, 30), mode="RGB", fmt=None,
                seed: int = 0) -> Path:
    """A noisy image of roughly one colour (so classes are learnable), saved as `path`."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def make_class_folders(root: Path, per_class: int = 12, classes=("red", "green", "blue"),
                       size=(40, 30)) -> Path:
    for c in classes:
        for i in range(per_class):
            write_image(root / c / f"{c}_{i}.png", COLOURS[c], size=size, seed=i)
    return root


@pytest.fixture
def colour_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "images")


def tiny_config(root: Path, runs_dir: Path, **sections) -> dict:
    """A config that trains MobileNet V1 0.25 at 32x32 from scratch for a few steps."""
    raw = {
        "name": "tiny",
        "seed": 1,
        "runs_dir": str(runs_dir),
        "data": {"source": {"format": "folder", "root": str(root)}, "val_fraction": 0.2,
                 "test_fraction": 0.2, "workers": 2},
        "model": {"alpha": 0.25, "input_size": 32, "weights": "none"},
        # min_steps 0 and no augmentation: the few steps asked for, as before train.recipe
        "train": {"batch_size": 8, "max_steps_per_epoch": 3, "min_steps": 0, "augment": [],
                  "head": {"epochs": 1, "learning_rate": 0.01},
                  "fine_tune": {"epochs": 2, "learning_rate": 0.01, "unfreeze_from": 0}},
        "export": {"representative_samples": 16},
        "verify": {"tflm_samples": 5},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.fixture(scope="session")
def backbone_weights_file(tmp_path_factory) -> Path:
    """A MobileNet V1 0.25 weights file standing in for pretrained weights (no downloads in tests).

    Random kernels with BatchNorm statistics set from one batch of images, so the frozen backbone
    gives non-degenerate features (a purely random network's activations vanish).
    """
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(input_shape=(32, 32, 3), include_top=False, weights=None,
                                         alpha=0.25)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the moving statistics become this batch's statistics
    images = np.random.default_rng(0).uniform(-1, 1, (64, 32, 32, 3)).astype(np.float32)
    model(images, training=True)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_0.25_calibrated.weights.h5"
    model.save_weights(path)
    return path
