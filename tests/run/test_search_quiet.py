"""`tinyvision search` sizes each candidate by converting an untrained model on a few random
images: that is no calibration, so the "calibrating on only N images" warning is not printed
for it (a real export still warns)."""

from __future__ import annotations

import logging

import pytest
from helpers import tiny_config

from tinyvision.config import validate_config

pytest.importorskip("optuna")


@pytest.mark.slow
def test_sizing_a_candidate_prints_no_calibration_warning(tmp_path, caplog):
    import numpy as np

    from tinyvision.deploy.boards import Board
    from tinyvision.deploy.litert import export_int8
    from tinyvision.run.search import Candidate, FitChecker

    cfg = validate_config(tiny_config(tmp_path, tmp_path / "runs"))
    board = Board(name="big", core="x", clock_mhz=100, flash_bytes=1 << 30, ram_bytes=1 << 30,
                  cycles_per_mac=1.0)
    checker = FitChecker(cfg, board, 3, "multiclass", None)
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        fit = checker.check(Candidate("mobilenet_v1", 0.25, 32, "rgb", 0.0, 1e-3))
    assert fit["fits"] and fit["int8_bytes"] > 0
    assert "calibrating" not in caplog.text
    # an export of a real model on few images still says so
    import keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        export_int8(model, images, tmp_path / "m.tflite")
    assert "calibrating int8 ranges on only 8 images" in caplog.text
