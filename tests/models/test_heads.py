"""Heads: names, outputs and activations of the multi-class, multi-label and detection heads, and
(slow) their int8 export running bit-exactly on TFLM, both detection outputs included."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from helpers import export_and_compare, random_images, settle_batchnorm
from tinyvision.config import ModelConfig
from tinyvision.deploy.outputs import Quantization, dequantize, tensor_quantization
from tinyvision.errors import ModelError
from tinyvision.models.build import build_model, is_head_layer
from tinyvision.models.heads import (BOX_OUTPUT, CLASS_OUTPUT, OUTPUT_NAME, CellBoxes, CellBoxPool,
                                     build_head)

SMALL = {"backbone": "plain_cnn", "input_size": 32, "plain_cnn": {"filters": [8, 16]}}


def _head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    first = next(i for i, layer in enumerate(model.layers) if is_head_layer(layer))
    return model.layers[first:]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_classification_heads(task):
    model = build_model(ModelConfig(**SMALL), 4, task)
    assert model.output_names == [OUTPUT_NAME]
    assert all(is_head_layer(layer) for layer in _head_layers(model))
    scores = keras.ops.convert_to_numpy(model(random_images(2, 32, 3).astype(np.float32)))
    assert scores.shape == (2, 4) and np.all((scores >= 0) & (scores <= 1))
    if task == "multiclass":
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_detection_head_has_class_then_box_output():
    model = build_model(ModelConfig(**SMALL), 3, "detection")
    assert model.output_names == [CLASS_OUTPUT, BOX_OUTPUT]
    assert [tuple(o.shape) for o in model.outputs] == [(None, 3), (None, 4)]
    assert all(is_head_layer(layer) for layer in _head_layers(model))
    assert isinstance(model.get_layer(BOX_OUTPUT), CellBoxPool)
    classes, box = (keras.ops.convert_to_numpy(t)
                    for t in model(random_images(8, 32, 3).astype(np.float32)))
    np.testing.assert_allclose(classes.sum(axis=1), 1.0, rtol=1e-5)
    # normalised xyxy, ordered by construction (a sigmoid per corner let x2 < x1: a model could
    # learn the mirror-image box, which every IoU scores 0)
    assert box.shape == (8, 4) and np.all((box >= 0) & (box <= 1))
    assert np.all(box[:, 2] >= box[:, 0]) and np.all(box[:, 3] >= box[:, 1])


def test_one_class_detection_is_the_box_alone():
    """A softmax over one class always says 1: a one-class detector answers its box only."""
    model = build_model(ModelConfig(**SMALL), 1, "detection")
    assert model.output_names == [BOX_OUTPUT]
    box = keras.ops.convert_to_numpy(model(random_images(2, 32, 3).astype(np.float32)))
    assert box.shape == (2, 4)


def test_cell_boxes_and_their_pool_by_hand():
    """A cell's box lies its four distances (sides) from the cell's centre; one cell sure of
    itself gives its box; two equally sure cells give the mean of theirs, clipped to 0..1."""
    sides = np.zeros((1, 2, 2, 4), np.float32)
    sides[0, 1, 0] = [0.1, 0.2, 0.3, 0.05]  # row 1, column 0: the cell centred at (0.25, 0.75)
    sides[0, 0, 1] = [0.05, 0.1, 0.5, 0.1]  # row 0, column 1: centred at (0.75, 0.25)
    cells = keras.ops.convert_to_numpy(CellBoxes()(sides))
    np.testing.assert_allclose(cells[0, 2], [0.15, 0.55, 0.55, 0.8], atol=1e-6)
    np.testing.assert_allclose(cells[0, 1], [0.7, 0.15, 1.25, 0.35], atol=1e-6)
    np.testing.assert_allclose(cells[0, 0], [0.25, 0.25, 0.25, 0.25], atol=1e-6)
    where = np.full((1, 4), -50.0, np.float32)
    where[0, 2] = 50.0
    box = keras.ops.convert_to_numpy(CellBoxPool()(cells, where))
    np.testing.assert_allclose(box, [[0.15, 0.55, 0.55, 0.8]], atol=1e-6)
    where[0, 1] = 50.0
    box = keras.ops.convert_to_numpy(CellBoxPool()(cells, where))
    np.testing.assert_allclose(box, [[0.425, 0.35, 0.9, 0.575]], atol=1e-6)
    where[0, 2] = -50.0  # the other cell alone: its x2 of 1.25 is clipped to the image
    box = keras.ops.convert_to_numpy(CellBoxPool()(cells, where))
    np.testing.assert_allclose(box, [[0.7, 0.15, 1.0, 0.35]], atol=1e-6)


def test_the_box_reads_the_finer_feature_map_and_training_adds_the_cells():
    """MobileNet V1 at 96x96 ends on a 3x3 map; the box reads the 6x6 one before it
    (conv_pw_11_relu), the class the 3x3 one; the training model has the cells as a third
    output, (N, 36, 5)."""
    from tinyvision.models.heads import training_model

    model = build_model(ModelConfig(weights="none", input_size=96), 2, "detection")
    assert model.get_layer("head_box_reduce").input.shape[1:3] == (6, 6)
    assert model.get_layer("head_pool").input.shape[1:3] == (3, 3)
    fitted, grid = training_model(model)
    assert grid == (6, 6) and [tuple(o.shape) for o in fitted.outputs] == [
        (None, 2), (None, 4), (None, 36, 5)]
    assert fitted.count_params() == model.count_params()  # the same layers, no new weights
    assert training_model(build_model(ModelConfig(**SMALL), 3, "multiclass"))[1] is None


def test_unknown_task_is_refused():
    features = keras.Input((4, 4, 8))
    with pytest.raises(ModelError, match=r"Expected task to be one of \['detection', "
                                         r"'multiclass', 'multilabel'\], received task='boxes'"):
        build_head(features, 2, "boxes", 0.1)


def _fit_briefly(model: keras.Model, images: np.ndarray, targets) -> None:
    """A few steps with BatchNorm training, so activations and int8 scales are realistic."""
    losses = (["categorical_crossentropy", "mse"] if isinstance(targets, list)
              else "mse" if targets.shape[1] == 4 else "binary_crossentropy")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses)
    model.fit(images.astype(np.float32), targets, epochs=2, batch_size=8, verbose=0)


@pytest.mark.slow
def test_multilabel_and_detection_heads_run_bit_exactly_on_tflm(tmp_path):
    keras.utils.set_random_seed(0)
    images = random_images(16, 32, 3)
    rng = np.random.default_rng(0)

    multilabel = build_model(ModelConfig(**SMALL, weights="none"), 3, "multilabel")
    settle_batchnorm(multilabel, images)
    (scores,) = export_and_compare(multilabel, images, tmp_path / "multilabel.tflite")
    assert scores.shape == (3, 3)

    detector = build_model(ModelConfig(**SMALL, weights="none"), 3, "detection")
    low = rng.uniform(0.0, 0.5, (16, 2))
    boxes = np.concatenate([low, low + rng.uniform(0.2, 0.5, (16, 2))], axis=1)
    _fit_briefly(detector, images, [np.eye(3)[rng.integers(0, 3, 16)], boxes])
    classes, box = export_and_compare(detector, images, tmp_path / "detection.tflite")
    assert classes.shape == (3, 3) and box.shape == (3, 4)
    # The int8 outputs are the float model's, quantised: the order is class, then box.
    float_classes, float_box = (keras.ops.convert_to_numpy(t)
                                for t in detector(images[:3].astype(np.float32)))
    box_q = tensor_quantization(tmp_path / "detection.tflite", 3)["outputs"][1]
    np.testing.assert_allclose(dequantize(box, Quantization(box_q["scale"], box_q["zero_point"])),
                               float_box, atol=0.02)
    np.testing.assert_allclose((classes.astype(np.float32) + 128) / 256, float_classes, atol=0.05)

    alone = build_model(ModelConfig(**SMALL, weights="none"), 1, "detection")
    _fit_briefly(alone, images, boxes)
    (box,) = export_and_compare(alone, images, tmp_path / "box.tflite")
    box_q = tensor_quantization(tmp_path / "box.tflite", 1)["outputs"][0]
    np.testing.assert_allclose(dequantize(box, Quantization(box_q["scale"], box_q["zero_point"])),
                               keras.ops.convert_to_numpy(alone(images[:3].astype(np.float32))),
                               atol=0.02)
