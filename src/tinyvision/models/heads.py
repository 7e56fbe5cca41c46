"""Heads built only from ops TensorFlow Lite Micro has: MEAN, CONV_2D (1x1), RESHAPE,
FULLY_CONNECTED, SOFTMAX / LOGISTIC. Layer names start with `head_` so the trainer can tell head
from backbone.

- multiclass: one softmax output `head_output` (N, classes).
- multilabel: one sigmoid output `head_output` (N, classes).
- detection (one object per image): two outputs, in this order: `head_class_output` (softmax,
  N x classes) and `head_box_output` (N x 4: x1, y1, x2, y2 as fractions of the image, x1 <= x2
  and y1 <= y2 by construction); with one class, the box alone (models/outputs.py).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tinyvision.config import TASKS
from tinyvision.errors import ModelError

HEAD_PREFIX = "head_"
HEAD_TASKS = TASKS - {"auto"}  # config.model.Task, once "auto" is resolved
OUTPUT_NAME = "head_output"  # the single output of the classification heads
CLASS_OUTPUT = "head_class_output"  # detection: class probabilities, first output
BOX_OUTPUT = "head_box_output"  # detection: normalised xyxy box, second output
BOX_FEATURE_CHANNELS = 64  # detection: 1x1-conv width of the box branch's per-cell features


def build_head(features: keras.KerasTensor, num_classes: int, task: str,
               dropout: float) -> keras.KerasTensor | list[keras.KerasTensor]:
    """The head for `task`: one output tensor, or [class, box] for detection."""
    if task not in HEAD_TASKS:
        raise ModelError(f"Expected task to be one of {sorted(HEAD_TASKS)}, received "
                         f"task={task!r}.")
    if task == "detection":
        outputs = detection_head(features, num_classes, dropout)
        return list(outputs) if len(outputs) > 1 else outputs[0]
    return classification_head(features, num_classes, task, dropout)


def classification_head(features: keras.KerasTensor, num_classes: int, task: str,
                        dropout: float) -> keras.KerasTensor:
    """Pooling + dropout + 1x1 conv + softmax (multi-class) or sigmoid (multi-label)."""
    if task not in ("multiclass", "multilabel"):
        raise ModelError(f"classification_head takes task 'multiclass' or 'multilabel', received "
                         f"task={task!r}; use detection_head for detection.")
    activation = "softmax" if task == "multiclass" else "sigmoid"
    return _class_branch(features, num_classes, dropout, activation, "head_", OUTPUT_NAME)


def detection_head(features: keras.KerasTensor, num_classes: int, dropout: float,
                   box_channels: int = BOX_FEATURE_CHANNELS) -> tuple[keras.KerasTensor, ...]:
    """(class, box) outputs for single-object detection; (box,) alone with one class.

    The class branch is the multi-class head (pooled features, softmax). The box branch is
    translation-equivariant, so that a few hundred images teach it where *this* object is
    rather than where objects usually are: every cell of the feature map proposes a box around
    itself (a centre within a cell of its own, a width and a height) and says how sure it is
    that the object is there; the box is the proposals' average weighted by a softmax over the
    cells (`CellBoxPool`). A dense layer on the flattened map, tried first, learnt a box per
    position and ended at the level of always answering the mean box on 140 real photos
    (docs/training.md, detection).
    """
    height, width = features.shape[1], features.shape[2]
    if height is None or width is None:
        raise ModelError("The detection head needs a fixed input size (model.input_size); the "
                         "backbone's feature map has an unknown height or width.")
    b = keras.layers.Conv2D(box_channels, 1, activation="relu", name="head_box_reduce")(features)
    b = keras.layers.Dropout(dropout, name="head_box_dropout")(b)
    where = keras.layers.Conv2D(1, 1, name="head_box_where")(b)
    centre = keras.layers.Conv2D(2, 1, activation="tanh", name="head_box_centre")(b)
    size = keras.layers.Conv2D(2, 1, activation="sigmoid", name="head_box_size")(b)
    box = CellBoxPool(name=BOX_OUTPUT)(where, centre, size)
    if num_classes == 1:
        return (box,)
    classes = _class_branch(features, num_classes, dropout, "softmax", "head_class_", CLASS_OUTPUT)
    return classes, box


@keras.saving.register_keras_serializable(package="tinyvision")
class CellBoxPool(keras.layers.Layer):
    """One box from per-cell proposals: inputs `where` (N, H, W, 1) logits, `centre` (N, H, W, 2)
    in [-1, 1] (the offset from the cell's centre, in cells) and `size` (N, H, W, 2) in [0, 1]
    (width, height as fractions of the image). Output: the softmax(where)-weighted mean of the
    cells' x1, y1, x2, y2, clipped to 0..1. Only ops TFLM has: RESHAPE, SOFTMAX, MUL, ADD, SUB,
    CONCATENATION, MEAN, MINIMUM (and TANH, LOGISTIC before it)."""

    def call(self, where, centre, size):
        height, width = where.shape[1], where.shape[2]
        cells = height * width
        weights = ops.reshape(ops.softmax(ops.reshape(where, (-1, cells)), axis=-1), (-1, cells, 1))
        ys, xs = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width,
                             indexing="ij")
        grid = np.stack([xs, ys], axis=-1).astype("float32")  # (H, W, 2) cell centres
        cell_size = np.array([1.0 / width, 1.0 / height], "float32")
        centres = ops.convert_to_tensor(grid) + centre * ops.convert_to_tensor(cell_size)
        half = size * 0.5
        corners = ops.concatenate([centres - half, centres + half], axis=-1)
        # a MEAN of cells x the weighted corners, not a SUM: LiteRT's reference SUM kernel and
        # TFLM's disagree on int8 (every box -1, -1, -1, -1 on one side), MEAN is bit-exact
        box = ops.mean(ops.reshape(corners, (-1, cells, 4)) * (weights * float(cells)), axis=1)
        return ops.minimum(ops.maximum(box, 0.0), 1.0)

    def compute_output_shape(self, where_shape, centre_shape=None, size_shape=None):
        return (where_shape[0], 4)


def _class_branch(features: keras.KerasTensor, num_classes: int, dropout: float, activation: str,
                  prefix: str, output_name: str) -> keras.KerasTensor:
    """Global average pooling, dropout, a 1x1 conv to one logit per class, the activation. The
    pooling and dropout are `head_pool` / `head_dropout`; the rest are named `<prefix>logits`,
    `<prefix>reshape` and `output_name`, fixed names that weight loading relies on."""
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Conv2D(num_classes, 1, name=f"{prefix}logits")(x)
    x = keras.layers.Reshape((num_classes,), name=f"{prefix}reshape")(x)
    return keras.layers.Activation(activation, name=output_name)(x)
