"""Folding a strided convolution's ZeroPadding2D into "same" padding computes the same outputs
and gradients, removes the Pad op from the traced step, folds only where "same" is that padding,
and leaves the layers (calls and configuration) as they were afterwards."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tinyvision.training.folded_padding import foldable_pairs, folded_padding


def _model(size: int, pad=((0, 1), (0, 1)), kernel: int = 3, seed: int = 0) -> keras.Model:
    """keras.applications' pattern: pad, then a stride-2 "valid" convolution (plain and depthwise),
    plus one pad read by two layers (not foldable: the other reader needs the padded tensor)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.ZeroPadding2D(pad, name="pad_conv")(inputs)
    x = keras.layers.Conv2D(8, kernel, strides=2, name="conv")(x)
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad_dw")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, name="dw")(x)
    shared = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad_shared")(x)
    a = keras.layers.Conv2D(4, 3, strides=2, name="conv_a")(shared)
    b = keras.layers.GlobalAveragePooling2D()(shared)
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(a), b])
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _names(pairs) -> list[tuple[str, str]]:
    return [(pad.name, conv.name) for pad, conv in pairs]


def _outputs_and_gradients(model: keras.Model, images: np.ndarray):
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = tf.reduce_mean(tf.square(out - 1.0))
    grads = tape.gradient(loss, model.trainable_variables)
    return out.numpy(), [g.numpy() for g in grads]


def test_folded_convolutions_compute_the_same_outputs_and_gradients():
    images = np.random.default_rng(0).normal(0.0, 1.0, (3, 16, 16, 3)).astype(np.float32)
    model = _model(16)
    assert _names(foldable_pairs(model)) == [("pad_conv", "conv"), ("pad_dw", "dw")]
    plain_out, plain_grads = _outputs_and_gradients(model, images)
    with folded_padding(model) as folded:
        assert folded == 2
        out, grads = _outputs_and_gradients(model, images)
    np.testing.assert_allclose(out, plain_out, rtol=1e-5, atol=1e-6)
    for a, b in zip(plain_grads, grads):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_the_traced_step_has_no_pad_op_for_a_folded_pair():
    model = _model(16)
    spec = tf.TensorSpec([None, 16, 16, 3], tf.float32)

    def pad_ops() -> int:
        graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec).graph
        return sum(op.type in ("Pad", "PadV2") for op in graph.get_operations())

    assert pad_ops() == 3
    with folded_padding(model):
        assert pad_ops() == 1  # the shared pad stays
    assert pad_ops() == 3


def test_only_paddings_that_same_reproduces_are_folded():
    # an odd side: "same" pads 1 before and 1 after, not (0, 1)
    assert _names(foldable_pairs(_model(15)))[:1] != [("pad_conv", "conv")]
    # ResNet's stem: pad 3 before a 7x7 stride-2 convolution; "same" would pad (2, 3) at 16
    assert ("pad_conv", "conv") not in _names(foldable_pairs(_model(16, pad=3, kernel=7)))
    # (1, 1) before a 3x3 stride-2 convolution of an odd side is what "same" pads
    assert ("pad_conv", "conv") in _names(foldable_pairs(_model(15, pad=((1, 1), (1, 1)))))


def test_layers_and_config_are_restored_also_after_an_error():
    model = _model(16)
    config = model.get_config()
    try:
        with folded_padding(model):
            assert model.get_layer("conv").padding == "same"
            raise RuntimeError("training failed")
    except RuntimeError:
        pass
    assert model.get_config() == config
    assert model.get_layer("conv").padding == "valid"
    assert "call" not in vars(model.get_layer("pad_conv"))
    assert model(np.zeros((1, 16, 16, 3), np.float32)).shape == (1, 2)


def test_a_mobilenet_folds_its_four_strided_paddings():
    from tinyvision.config import ModelConfig
    from tinyvision.models.build import build_model

    model = build_model(ModelConfig(weights="none", alpha=0.25, input_size=64, color_mode="rgb"),
                        3, "multiclass")
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    plain = model(images, training=False).numpy()
    with folded_padding(model) as folded:
        np.testing.assert_allclose(model(images, training=False).numpy(), plain, atol=1e-6)
    assert folded == 4
