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
    """(extractor, head): extractor(images) -> the features the head reads (a list: a detection
    head reads the final map for its class and a finer one for its box), head(features) -> model
    outputs.

    Both share the layer objects of `model`, so training `head` trains `model`'s head.
    """
    names = [layer.name for layer in model.layers]
    if "head_pool" in names and len(model.outputs) == 1:
        features = [model.get_layer("head_pool").output]
    else:  # the tensors of the backbone that head layers read
        features = []
        for layer in model.layers:
            if not is_head_layer(layer):
                continue
            for node in layer._inbound_nodes:
                for tensor in node.input_tensors:
                    producer = tensor._keras_history.operation
                    if not is_head_layer(producer) and not any(tensor is f for f in features):
                        features.append(tensor)
    extractor = keras.Model(model.inputs, features, name="feature_extractor")
    head = keras.Model(features, model.outputs, name="head_on_features")
    return extractor, head


def extract_features(extractor: keras.Model, images: np.ndarray, indices: np.ndarray,
                     batch_size: int = 128) -> list[np.ndarray]:
    """Backbone features of `images[indices]` (inference mode), float32, in order: one array per
    output of the extractor."""
    outputs = predict_scores(extractor, images, indices, batch_size)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [np.asarray(o, np.float32) for o in outputs]


def feature_dataset(features, targets, batch_size: int, shuffle: bool = False,
                    seed: int = 0, repeat: bool = False, steps_per_epoch: int | None = None,
                    first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of (features, targets) from memory, in the same order `cache_dataset` would give
    the images (`training_batches` when training with `steps_per_epoch`). `features`: an array,
    or a list of arrays for a head with several inputs."""
    arrays = features if isinstance(features, (list, tuple)) else [features]
    positions = position_batches(len(arrays[0]), batch_size, shuffle, seed, repeat,
                                 steps_per_epoch, first_epoch).map(lambda p, batch_seed: p)
    feats = [tf.constant(f) for f in arrays]
    targets = tf.nest.map_structure(lambda t: tf.constant(np.asarray(t, np.float32)), targets)

    def gather(p):
        x = [tf.gather(f, p) for f in feats]
        return (x[0] if len(x) == 1 else tuple(x)), tf.nest.map_structure(
            lambda t: tf.gather(t, p), targets)

    return positions.map(gather).prefetch(tf.data.AUTOTUNE)
