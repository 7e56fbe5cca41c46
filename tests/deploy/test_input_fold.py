"""The input normalisation folded into the int8 input quantisation: the int8 graph starts with the
first convolution, the .tflite records the normalisation, and every reader takes the input
quantisation in pixels from it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import random_images

from tinyvision.deploy.litert import export_int8, foldable_normalization
from tinyvision.deploy.ops import model_ops
from tinyvision.deploy.outputs import input_normalization, quantize_images, tensor_quantization
from tinyvision.deploy.runners import ReferenceRunner, run_tflm


def _model(scale, offset, name="normalize") -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(scale, offset, name=name)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("scale, offset, expected", [
    (1 / 127.5, -1.0, (127.5 / 128, 0)),  # MobileNet: pixel 127.5 is int8 0
    (1 / 255, 0.0, (1.0, -128)),  # [0, 1]: pixel 0 is int8 -128
    ((1 / 127.5,) * 3, (-1.0,) * 3, (127.5 / 128, 0)),  # the same for every channel
    ((1 / 58.4, 1 / 57.1, 1 / 57.4), (-2.1, -2.0, -1.8), None),  # per channel: not folded
    (1.0, 10.0, None),  # normalised 0 below pixel 0
])
def test_which_normalisations_fold_and_onto_which_grid(scale, offset, expected):
    fold = foldable_normalization(_model(scale, offset))
    if expected is None:
        assert fold is None
        return
    _, a, b, pixel_scale, zero_point = fold
    assert (pixel_scale, zero_point) == pytest.approx(expected)
    assert a == pytest.approx(np.mean(scale)) and b == pytest.approx(np.mean(offset))
    assert foldable_normalization(_model(scale, offset, name="other")) is None


@pytest.mark.slow
def test_a_folded_model_starts_with_its_convolution_and_computes_what_keras_does(tmp_path):
    model = _model(1 / 127.5, -1.0)
    images = random_images(32, 16, 3)
    data = export_int8(model, images, tmp_path / "m.tflite", warn_few=False)
    assert [use.op for use in model_ops(data)][0] == "CONV_2D"  # no MUL, no ADD
    assert input_normalization(data) == pytest.approx({"scale": 1 / 127.5, "offset": -1.0})
    inp = tensor_quantization(data)["input"]
    assert (inp["tensor_scale"], inp["tensor_zero_point"]) == (1 / 128, 0)
    assert (inp["scale"], inp["zero_point"]) == (255 / 256, -128)  # in pixels
    runner = ReferenceRunner(tmp_path / "m.tflite")
    assert (runner.input_q.scale, runner.input_q.zero_point) == (255 / 256, -128)
    int8 = quantize_images(images, runner.input_q)
    assert np.array_equal(int8[0, 0, 0], np.clip(np.rint(images[0, 0, 0] * (256 / 255)) - 128,
                                                 -128, 127))
    reference = runner.run_all(int8)[0]
    assert np.array_equal(reference, run_tflm(tmp_path / "m.tflite", int8, 1 << 20))
    # the border the convolution pads is exact: scores within int8 rounding of Keras'
    float_scores = model.predict(images.astype(np.float32), verbose=0)
    assert np.abs(runner.scores(images) - float_scores).max() < 0.05
    # a model without the metadata (an export from before) reads as its tensor says
    plain = export_int8(_model(1 / 127.5, -1.0, name="other"), images, tmp_path / "p.tflite",
                        warn_few=False)
    assert input_normalization(plain) is None and [u.op for u in model_ops(plain)][:2] == [
        "MUL", "ADD"]
    assert tensor_quantization(plain)["input"]["scale"] == 1.0
    assert input_normalization(b"not a flatbuffer") is None
