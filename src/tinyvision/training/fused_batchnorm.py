"""Fused BatchNorm in training: TensorFlow's FusedBatchNormV3 kernel instead of Keras 3's
BatchNormalization arithmetic.

Keras 3 computes a training-mode BatchNorm as moments plus several element-wise ops, each a pass
over the activations forward and backward; on a CPU that costs nearly as much as MobileNet's
convolutions. One fused kernel (what tf-keras uses) does it in one pass. Measured with
benchmarks/bench_train_step.py: about 1.5x the images/s of Keras 3 fit on MobileNet V1 0.25 at
96x96, on a par with tf-keras (docs/training.md).

Only the training-mode computation of the layers changes, for the lifetime of the model object:
inference, the saved model file and the exported model are Keras' own layer. The moving
statistics are updated as Keras does (biased batch variance, `momentum`).
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf


def use_fused_batchnorm(model: keras.Model) -> int:
    """Make every BatchNormalization of `model` (nested ones too) train with the fused kernel;
    returns how many layers were switched. Layers it cannot fuse (masks, renorm, synchronized,
    axis other than the last of a 4-D input) keep Keras' computation."""
    switched = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and _fusable(layer):
            layer.call = types.MethodType(_fused_call, layer)
            switched += 1
    return switched


def _fusable(layer: keras.layers.BatchNormalization) -> bool:
    return not layer.renorm and not layer.synchronized and layer.axis in (-1, 3)


def _fused_call(self: keras.layers.BatchNormalization, inputs, training=None, mask=None):
    if not (training and self.trainable) or mask is not None or len(inputs.shape) != 4:
        return type(self).call(self, inputs, training=training, mask=mask)
    x = tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
    beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
    y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
        epsilon=self.epsilon, data_format="NHWC", is_training=True)
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
    variance = variance * (count - 1.0) / tf.maximum(count, 2.0)  # the op's is Bessel-corrected
    momentum = self.momentum
    self.moving_mean.assign(self.moving_mean * momentum
                            + tf.stop_gradient(mean) * (1.0 - momentum))
    self.moving_variance.assign(self.moving_variance * momentum
                                + tf.stop_gradient(variance) * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)
