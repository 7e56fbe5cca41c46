"""Quantisation-aware fine-tuning: fake quantisation where the converter quantises, and a
constructed model that post-training int8 breaks (a large outlier channel sets the per-tensor
range, the signal channels round to zero) is mostly recovered by QAT."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import handbuilt_run

from tinyvision.config import TrainConfig
from tinyvision.deploy.litert import export_int8
from tinyvision.deploy.runners import ReferenceRunner
from tinyvision.training.qat import FakeQuant, qat_fine_tune, quantised_outputs, with_fake_quant


def red_or_green(n: int = 400, seed: int = 0):
    """Reddish images (class 1) and greenish ones (class 0), blue random."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.uint8)
    high, low = rng.integers(150, 256, (n, 8, 8)), rng.integers(0, 100, (n, 8, 8))
    images[..., 0] = np.where(labels[:, None, None] == 1, high, low)
    images[..., 1] = np.where(labels[:, None, None] == 1, low, high)
    return images, labels


def badly_scaled_model() -> keras.Model:
    """Perfect in float; channel 0 of `mix` is a large outlier that carries nothing, channels 1
    and 2 carry the class at a scale the shared int8 range rounds away."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1)(inputs)
    mix = keras.layers.Conv2D(3, 1, name="mix")
    x = keras.layers.ReLU(name="act")(mix(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(2, activation="softmax", name="out")
    model = keras.Model(inputs, out(x))
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, :, 0] = 200.0
    kernel[0, 0, 0, 1], kernel[0, 0, 1, 1] = 0.3, -0.3
    kernel[0, 0, 0, 2], kernel[0, 0, 1, 2] = -0.3, 0.3
    mix.set_weights([kernel, np.array([200.0, 0, 0], np.float32)])
    out.set_weights([np.array([[0, 0], [-20, 20], [20, -20]], np.float32), np.zeros(2, np.float32)])
    return model


def test_fake_quant_goes_where_the_converter_quantises():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv_bn")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    y = keras.layers.Conv2D(4, 1, name="conv_relu")(x)
    y = keras.layers.ReLU(name="relu2")(y)
    z = keras.layers.Conv2D(4, 1, name="conv_plain")(x)
    x = keras.layers.Add(name="add")([y, z])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))
    assert quantised_outputs(model) == {"relu", "relu2", "conv_plain", "add", "pool"}
    wrapped = with_fake_quant(model)
    assert sum(isinstance(layer, FakeQuant) for layer in wrapped.layers) == 5
    assert wrapped.get_layer("conv_bn") is model.get_layer("conv_bn")  # shared weights


def test_fake_quant_rounds_to_the_int8_grid_of_its_range():
    layer = FakeQuant()
    layer.build(())
    layer.range_min.assign(0.0)
    layer.range_max.assign(2.55)  # 256 levels: steps of 0.01
    out = np.asarray(layer(np.array([0.004, 0.006, 1.234, 9.0], np.float32), training=False))
    np.testing.assert_allclose(out, [0.0, 0.01, 1.23, 2.55], atol=1e-6)


def test_qat_recovers_most_of_what_post_training_int8_loses(tmp_path):
    images, labels = red_or_green()
    model = badly_scaled_model()
    float_accuracy = np.mean(np.argmax(model.predict(images.astype(np.float32), verbose=0), 1)
                             == labels)
    export_int8(model, images[:200], tmp_path / "ptq.tflite")
    ptq = np.mean(np.argmax(ReferenceRunner(tmp_path / "ptq.tflite").scores(images), 1) == labels)
    assert float_accuracy == 1.0 and ptq < 0.6  # post-training int8 is at chance
    targets = np.eye(2, dtype=np.float32)[labels]
    qat_fine_tune(model, images, np.arange(300), targets, "multiclass", TrainConfig(), steps=300,
                  learning_rate=3e-3, batch_size=32)
    export_int8(model, images[:200], tmp_path / "qat.tflite")
    qat = np.mean(np.argmax(ReferenceRunner(tmp_path / "qat.tflite").scores(images), 1) == labels)
    assert qat - ptq >= 0.5 * (float_accuracy - ptq), (float_accuracy, ptq, qat)


@pytest.mark.slow
def test_export_qat_on_keeps_both_int8_models_and_reports_them_side_by_side(tmp_path):
    cfg, run, data, model = handbuilt_run(tmp_path, export={"qat": "on", "qat_steps": 5})
    verified = json.loads(run.verify.read_text())
    assert set(verified["qat"]) == {"float", "ptq_int8", "qat_int8"}
    kept = {p.name for p in run.export_dir.glob("model_int8*.tflite")}
    assert "model_int8.tflite" in kept and len(kept & {"model_int8_ptq.tflite",
                                                       "model_int8_qat.tflite"}) == 1


def test_qat_auto_leaves_a_model_that_int8_does_not_hurt(tmp_path):
    cfg, run, data, model = handbuilt_run(tmp_path)
    assert cfg.export.qat == "auto"
    assert not list(run.export_dir.glob("model_int8_*.tflite"))
    assert "qat" not in json.loads(run.verify.read_text())
