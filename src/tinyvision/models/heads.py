"""Heads built only from ops TensorFlow Lite Micro has: MEAN, CONV_2D (1x1), RESHAPE,
SOFTMAX / LOGISTIC. Layer names start with `head_` so the trainer can tell head from backbone."""

from __future__ import annotations

import keras

HEAD_PREFIX = "head_"
HEAD_TASKS = frozenset({"multiclass", "multilabel"})


def classification_head(features: keras.KerasTensor, num_classes: int, task: str,
                        dropout: float) -> keras.KerasTensor:
    """Pooling + dropout + 1x1 conv + softmax (multi-class) or sigmoid (multi-label)."""
    if task not in HEAD_TASKS:
        raise ValueError(f"task={task!r}; expected one of {sorted(HEAD_TASKS)}")
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Conv2D(num_classes, 1, name="head_logits")(x)
    x = keras.layers.Reshape((num_classes,), name="head_reshape")(x)
    activation = "softmax" if task == "multiclass" else "sigmoid"
    return keras.layers.Activation(activation, name="head_output")(x)
