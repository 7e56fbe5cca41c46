"""The fused BatchNorm computes what Keras 3's BatchNormalization computes, in training (outputs,
gradients, moving statistics) and in inference, and leaves the saved model plain Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tinyvision.training.fused_batchnorm import use_fused_batchnorm


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(center=False, name="bn_no_beta")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _train_step(model: keras.Model, images: np.ndarray):
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = tf.reduce_mean(tf.square(out - 1.0))
    grads = tape.gradient(loss, model.trainable_variables)
    stats = [v.numpy() for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
             for v in (layer.moving_mean, layer.moving_variance)]
    return out.numpy(), [g.numpy() for g in grads], stats


def test_fused_training_equals_keras_batchnorm():
    images = np.random.default_rng(0).normal(3.0, 2.0, (6, 12, 10, 3)).astype(np.float32)
    plain, fused = _model(), _model()
    assert use_fused_batchnorm(fused) == 2
    out_a, grads_a, stats_a = _train_step(plain, images)
    out_b, grads_b, stats_b = _train_step(fused, images)
    np.testing.assert_allclose(out_b, out_a, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    for a, b in zip(stats_a, stats_b):  # moving mean and (biased) variance, momentum 0.9
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(stats_a[0], 0.0)  # the statistics did move
    np.testing.assert_allclose(fused(images, training=False), plain(images, training=False),
                               rtol=1e-5, atol=1e-6)


def test_fused_layers_with_frozen_batchnorm_run_in_inference_mode():
    images = np.random.default_rng(1).normal(size=(4, 12, 10, 3)).astype(np.float32)
    model = _model()
    use_fused_batchnorm(model)
    model.get_layer("bn").trainable = False
    before = model.get_layer("bn").moving_mean.numpy().copy()
    model(images, training=True)
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), before)


def test_a_fused_model_saves_and_loads_as_plain_keras(tmp_path):
    model = _model()
    use_fused_batchnorm(model)
    images = np.random.default_rng(2).normal(size=(2, 12, 10, 3)).astype(np.float32)
    model(images, training=True)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert type(loaded.get_layer("bn")) is keras.layers.BatchNormalization
    assert "call" not in vars(loaded.get_layer("bn"))
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6)


@pytest.mark.parametrize("layer", [keras.layers.BatchNormalization(axis=1),
                                   keras.layers.BatchNormalization(synchronized=True)])
def test_layers_the_kernel_cannot_take_keep_keras_computation(layer):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layer(inputs))
    assert use_fused_batchnorm(model) == 0
