"""Shared fixtures; the helpers they use live in helpers.py (import from there, not from here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import make_class_folders


@pytest.fixture
def colour_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "images")



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
