"""Fast head stage: with the backbone frozen and no augmentation, the backbone maps each image to
the same features every epoch, so compute them once and train the head on them.

The split point is the output of the head's global pooling (`head_pool`) when the head has one
output, so the stored features are one vector per image, else the input of the first head layer.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tinyvision.data.pipeline import position_batches
from tinyvision.models.build import is_head_layer


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(extractor, head): extractor(images) -> features, head(features) -> model outputs.

    Both share the layer objects of `model`, so training `head` trains `model`'s head.
    """
    names = [layer.name for layer in model.layers]
    if "head_pool" in names and len(model.outputs) == 1:
        features = model.get_layer("head_pool").output
    else:  # e.g. a box branch reads the feature map itself: split where the head begins
        first = next(layer for layer in model.layers if is_head_layer(layer))
        features = first.input
    extractor = keras.Model(model.inputs, features, name="feature_extractor")
    head = keras.Model(features, model.outputs, name="head_on_features")
    return extractor, head


def predict_scores(model: keras.Model, images: np.ndarray, indices: np.ndarray,
                   batch_size: int = 128):
    """Outputs of `model` (inference mode) for `images[indices]`, in order: an array, or a list
    of arrays for a model with several outputs.

    One traced function called per batch on the cached uint8 pixels, instead of `model.predict`:
    measured on 4000 images through MobileNet V1 0.25 it takes ~4.2 s against ~5.2 s, which is
    most of the fast head stage's cost (`benchmarks/bench_fast_head.py`).
    """
    indices = np.asarray(indices)
    if len(indices) == 0:
        shapes = model.output_shape if len(model.outputs) > 1 else [model.output_shape]
        empty = [np.zeros((0, *shape[1:]), np.float32) for shape in shapes]
        return empty if len(model.outputs) > 1 else empty[0]
    spec = tf.TensorSpec([None, *images.shape[1:]], tf.as_dtype(images.dtype))
    forward = tf.function(lambda x: model(tf.cast(x, tf.float32), training=False),
                          input_signature=[spec])
    parts = [forward(np.asarray(images[indices[start:start + batch_size]]))
             for start in range(0, len(indices), batch_size)]
    return tf.nest.map_structure(lambda *outs: np.concatenate([o.numpy() for o in outs]), *parts)


def extract_features(extractor: keras.Model, images: np.ndarray, indices: np.ndarray,
                     batch_size: int = 128) -> np.ndarray:
    """Backbone features of `images[indices]` (inference mode), float32, in order."""
    return np.asarray(predict_scores(extractor, images, indices, batch_size), np.float32)


def feature_dataset(features: np.ndarray, targets, batch_size: int, shuffle: bool = False,
                    seed: int = 0, repeat: bool = False, steps_per_epoch: int | None = None,
                    first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of (features, targets) from memory, in the same order `cache_dataset` would give
    the images (`training_batches` when training with `steps_per_epoch`)."""
    positions = position_batches(len(features), batch_size, shuffle, seed, repeat,
                                 steps_per_epoch, first_epoch).map(lambda p, batch_seed: p)
    feats = tf.constant(features)
    targets = tf.nest.map_structure(lambda t: tf.constant(np.asarray(t, np.float32)), targets)

    def gather(p):
        return tf.gather(feats, p), tf.nest.map_structure(lambda t: tf.gather(t, p), targets)

    return positions.map(gather).prefetch(tf.data.AUTOTUNE)
