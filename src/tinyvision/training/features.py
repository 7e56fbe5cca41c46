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
from tinyvision.models.inference import predict_scores


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
