"""Quantisation-aware fine-tuning for Keras 3, where TensorFlow Model Optimization does not work.

`with_fake_quant(model)` calls the model's own layers (sharing their weights) with a
`FakeQuant` after every tensor the int8 converter quantises on its own: each activation, each
convolution or dense output not folded into a following BatchNorm, each Add. `FakeQuant` rounds
its input to the per-tensor asymmetric int8 grid the converter computes from calibration — range
from the running min/max (always holding 0), 256 levels — and passes gradients straight through
inside the range. A short fine-tune teaches the weights to live with that rounding; the model is
then converted with the usual post-training calibration.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tinyvision.data.pipeline import cache_dataset
from tinyvision.models.outputs import has_class_output
from tinyvision.training.losses import build_loss, build_loss_weights
from tinyvision.training.optimizers import build_optimizer_state
from tinyvision.training.trainer import JIT_COMPILE

# layers whose output keeps its input's quantisation, or that the converter folds away
_PASS_THROUGH = (keras.layers.InputLayer, keras.layers.Dropout, keras.layers.Reshape,
                 keras.layers.Flatten, keras.layers.BatchNormalization, keras.layers.Rescaling)


class FakeQuant(keras.layers.Layer):
    """Per-tensor int8 fake quantisation with running min/max ranges (momentum), as calibration
    would find them; ranges update only in training."""

    def __init__(self, momentum: float = 0.99, **kwargs) -> None:
        super().__init__(**kwargs)
        self.momentum = momentum

    def build(self, input_shape) -> None:
        self.range_min = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         name="range_min")
        self.range_max = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         name="range_max")
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

    def call(self, x, training=None):
        if training:
            low, high = tf.reduce_min(x), tf.reduce_max(x)
            first = tf.equal(self.seen, 0.0)
            m = self.momentum
            self.range_min.assign(tf.where(first, low, m * self.range_min + (1 - m) * low))
            self.range_max.assign(tf.where(first, high, m * self.range_max + (1 - m) * high))
            self.seen.assign(1.0)
        low = tf.minimum(self.range_min, 0.0)
        high = tf.maximum(self.range_max, low + 1e-6)
        return tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=8)

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}


def quantised_outputs(model: keras.Model) -> set[str]:
    """Names of the layers whose outputs get a FakeQuant: not pass-through layers, not outputs
    consumed by a BatchNorm (folded into the convolution) or a ReLU (fused into it), not the
    model's outputs (softmax and sigmoid outputs have fixed int8 ranges)."""
    outputs = {t._keras_history.operation.name for t in model.outputs}
    chosen = set()
    for layer in model.layers:
        if isinstance(layer, _PASS_THROUGH) or layer.name in outputs:
            continue
        consumers = [node.operation for node in layer._outbound_nodes]
        if any(isinstance(c, keras.layers.BatchNormalization) or _fused_activation(c)
               for c in consumers):
            continue
        chosen.add(layer.name)
    return chosen


def _fused_activation(layer) -> bool:
    """ReLU and ReLU6 fold into the op before them: its output is quantised after them."""
    if isinstance(layer, keras.layers.ReLU):
        return True
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
    return False


def with_fake_quant(model: keras.Model) -> keras.Model:
    """The model with FakeQuant layers after its quantised tensors; its layers (and weights)
    are the original model's, so training it trains `model`."""
    wanted = quantised_outputs(model)

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in wanted and not isinstance(out, (list, tuple)):
            out = FakeQuant(name=f"{layer.name}_fake_quant")(out)
        return out

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)


def qat_fine_tune(model: keras.Model, images: np.ndarray, train: np.ndarray, targets,
                  task: str, train_cfg, steps: int, learning_rate: float, batch_size: int,
                  seed: int = 0, boxes: np.ndarray | None = None) -> dict:
    """Fine-tune `model` in place for `steps` optimiser steps with fake quantisation, on the
    samples `train` of `images` (targets and boxes: one row per sample of `images`).

    BatchNorm keeps its statistics (inference mode), as the converter folds them; the loss is
    the run's. Returns the loss before and after."""
    qat = with_fake_quant(model)
    frozen = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    was = [layer.trainable for layer in frozen]
    for layer in frozen:
        layer.trainable = False
    n_classes = targets.shape[1]
    class_targets = targets[train] if has_class_output(task, n_classes) else None
    try:
        batch = min(batch_size, len(train))
        data = cache_dataset(images, train, class_targets, batch, shuffle=True, seed=seed,
                             repeat=True, boxes=None if boxes is None else boxes[train],
                             steps_per_epoch=steps)
        qat.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    loss=build_loss(train_cfg, task, n_classes),
                    loss_weights=build_loss_weights(train_cfg, task, n_classes),
                    jit_compile=JIT_COMPILE)
        build_optimizer_state(qat)
        history = qat.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    finally:
        for layer, trainable in zip(frozen, was):
            layer.trainable = trainable
    losses = history.history["loss"]
    return {"steps": steps, "loss_end": float(losses[-1])}
