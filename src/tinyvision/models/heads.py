"""Heads built only from ops TensorFlow Lite Micro has: MEAN, CONV_2D (1x1), RESHAPE,
FULLY_CONNECTED, SOFTMAX / LOGISTIC. Layer names start with `head_` so the trainer can tell head
from backbone.

- multiclass: one softmax output `head_output` (N, classes).
- multilabel: one sigmoid output `head_output` (N, classes).
- detection (one object per image): two outputs, in this order: `head_class_output` (softmax,
  N x classes) and `head_box_output` (sigmoid, N x 4: x1, y1, x2, y2 as fractions of the image).
"""

from __future__ import annotations

import keras

from tinyvision.config import TASKS
from tinyvision.errors import ModelError

HEAD_PREFIX = "head_"
HEAD_TASKS = TASKS - {"auto"}  # config.model.Task, once "auto" is resolved
OUTPUT_NAME = "head_output"  # the single output of the classification heads
CLASS_OUTPUT = "head_class_output"  # detection: class probabilities, first output
BOX_OUTPUT = "head_box_output"  # detection: normalised xyxy box, second output
BOX_FEATURE_CHANNELS = 32  # detection: 1x1-conv width of the box branch before its dense layer


def build_head(features: keras.KerasTensor, num_classes: int, task: str,
               dropout: float) -> keras.KerasTensor | list[keras.KerasTensor]:
    """The head for `task`: one output tensor, or [class, box] for detection."""
    if task not in HEAD_TASKS:
        raise ModelError(f"Expected task to be one of {sorted(HEAD_TASKS)}, received "
                         f"task={task!r}.")
    if task == "detection":
        return list(detection_head(features, num_classes, dropout))
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
                   box_channels: int = BOX_FEATURE_CHANNELS
                   ) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(class, box) outputs for single-object detection.

    The class branch is the multi-class head (pooled features, softmax). The box branch keeps
    *where* things are: a 1x1 conv narrows the feature map to `box_channels`, which is flattened
    (every cell keeps its place) into a dense layer with 4 sigmoid outputs, the box as x1, y1, x2,
    y2 fractions of the image.
    """
    height, width = features.shape[1], features.shape[2]
    if height is None or width is None:
        raise ModelError("The detection head needs a fixed input size (model.input_size); the "
                         "backbone's feature map has an unknown height or width.")
    classes = _class_branch(features, num_classes, dropout, "softmax", "head_class_", CLASS_OUTPUT)

    b = keras.layers.Conv2D(box_channels, 1, activation="relu", name="head_box_reduce")(features)
    b = keras.layers.Reshape((height * width * box_channels,), name="head_box_flatten")(b)
    b = keras.layers.Dropout(dropout, name="head_box_dropout")(b)
    b = keras.layers.Dense(4, name="head_box_logits")(b)
    box = keras.layers.Activation("sigmoid", name=BOX_OUTPUT)(b)
    return classes, box


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
