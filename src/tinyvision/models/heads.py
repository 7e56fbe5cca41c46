"""Heads built only from ops TensorFlow Lite Micro has: MEAN, CONV_2D (1x1), RESHAPE,
FULLY_CONNECTED, SOFTMAX / LOGISTIC. Layer names start with `head_` so the trainer can tell head
from backbone.

- multiclass: one softmax output `head_output` (N, classes).
- multilabel: one sigmoid output `head_output` (N, classes).
- detection (one object per image): two outputs, in this order: `head_class_output` (softmax,
  N x classes) and `head_box_output` (N x 4: x1, y1, x2, y2 as fractions of the image, x1 <= x2
  and y1 <= y2 by construction); with one class, the box alone (models/outputs.py). Training
  adds a third output, every cell's proposal (`training_model`).
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
BOX_CELLS = "head_box_cells"  # detection: every cell's proposal, read by the training loss only
# The output layers compute in float32 whatever the dtype policy: under mixed precision
# (train.precision) probabilities, boxes and the losses on them keep float32's range and steps.
OUTPUT_DTYPE = "float32"
BOX_FEATURE_CHANNELS = 64  # detection: 1x1-conv width of the box branch's per-cell features


def build_head(features: keras.KerasTensor, num_classes: int, task: str, dropout: float,
               box_features: keras.KerasTensor | None = None
               ) -> keras.KerasTensor | list[keras.KerasTensor]:
    """The head for `task`: one output tensor, or [class, box] for detection (whose box reads
    `box_features`, default `features`)."""
    if task not in HEAD_TASKS:
        raise ModelError(f"Expected task to be one of {sorted(HEAD_TASKS)}, received "
                         f"task={task!r}.")
    if task == "detection":
        outputs = detection_head(features, num_classes, dropout, box_features)
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
                   box_features: keras.KerasTensor | None = None,
                   box_channels: int = BOX_FEATURE_CHANNELS) -> tuple[keras.KerasTensor, ...]:
    """(class, box) outputs for single-object detection; (box,) alone with one class.

    The class branch is the multi-class head on `features` (pooled, softmax). The box branch
    reads `box_features` (a finer map, e.g. stride 16 where `features` is stride 32; default
    `features`) and is translation-equivariant, so that a few hundred images teach it where
    *this* object is rather than where objects usually are: every cell proposes a box by its
    distances to the four sides (FCOS) and says how sure it is that the object is there
    (`CellBoxes`, `head_box_cells`); the box is the proposals' average weighted by a softmax over
    the cells (`CellBoxPool`). Training also supervises every cell (`training.losses.CellLoss`).
    A dense layer on the flattened map, tried first, learnt a box per position and ended at the
    level of always answering the mean box on 140 real photos (docs/training.md, detection).
    """
    box_features = features if box_features is None else box_features
    height, width = box_features.shape[1], box_features.shape[2]
    if height is None or width is None:
        raise ModelError("The detection head needs a fixed input size (model.input_size); the "
                         "backbone's feature map has an unknown height or width.")
    b = keras.layers.Conv2D(box_channels, 1, activation="relu", name="head_box_reduce")(
        box_features)
    b = keras.layers.Dropout(dropout, name="head_box_dropout")(b)
    where = keras.layers.Conv2D(1, 1, name="head_box_where")(b)
    sides = keras.layers.Conv2D(4, 1, activation="sigmoid", name="head_box_sides")(b)
    cells = CellBoxes(name=BOX_CELLS, dtype=OUTPUT_DTYPE)(sides)
    where = keras.layers.Reshape((height * width,), name="head_box_where_flat")(where)
    box = CellBoxPool(name=BOX_OUTPUT, dtype=OUTPUT_DTYPE)(cells, where)
    if num_classes == 1:
        return (box,)
    classes = _class_branch(features, num_classes, dropout, "softmax", "head_class_", CLASS_OUTPUT)
    return classes, box


def finer_features(model: keras.Model) -> keras.KerasTensor | None:
    """The backbone's last feature map at twice the resolution of its output (stride 16 where
    the output is stride 32), where a box head finds objects more precisely: measured on 140
    real photos, a 6x6 map against a 3x3 one (docs/training.md, detection). None without one
    (a shallow plain CNN, a cut model file that ends early)."""
    final = model.outputs[0].shape
    for layer in reversed(model.layers):
        shape = getattr(layer.output, "shape", None)
        if (shape is not None and len(shape) == 4 and final[1] and shape[1] == 2 * final[1]
                and shape[2] == 2 * final[2]):
            return layer.output
    return None


@keras.saving.register_keras_serializable(package="tinyvision")
class CellBoxes(keras.layers.Layer):
    """Every cell's box proposal from `sides` (N, H, W, 4) in [0, 1], the distances from the
    cell's centre to the box's left, top, right and bottom sides as fractions of the image.
    Output (N, H * W, 4): x1, y1, x2, y2 per cell, row by row."""

    def call(self, sides):
        height, width = sides.shape[1], sides.shape[2]
        centres = cell_centres(height, width)
        twice = np.concatenate([centres, centres], axis=-1).reshape(height, width, 4)
        # x1 = cx - left, y1 = cy - top, x2 = cx + right, y2 = cy + bottom: one MUL and one ADD
        # with constants (slicing the sides would add STRIDED_SLICE ops)
        corners = ops.convert_to_tensor(twice) + sides * ops.convert_to_tensor(
            np.array([-1.0, -1.0, 1.0, 1.0], "float32"))
        return ops.reshape(corners, (-1, height * width, 4))

    def compute_output_shape(self, sides_shape):
        return (sides_shape[0], sides_shape[1] * sides_shape[2], 4)


@keras.saving.register_keras_serializable(package="tinyvision")
class CellBoxPool(keras.layers.Layer):
    """One box from the cells' proposals: `cells` (N, H * W, 4) x1, y1, x2, y2 averaged with
    softmax(`where`) weights ((N, H * W) logits), clipped to 0..1. Only ops TFLM has: SOFTMAX,
    MUL, MEAN, MINIMUM, RESHAPE."""

    def call(self, cells, where):
        count = cells.shape[1]
        weights = ops.reshape(ops.softmax(where, axis=-1), (-1, count, 1))
        # a MEAN of count x the weighted corners, not a SUM: LiteRT's reference SUM kernel and
        # TFLM's disagree on int8 (every box -1, -1, -1, -1 on one side), MEAN is bit-exact
        box = ops.mean(cells * (weights * float(count)), axis=1)
        return ops.minimum(ops.maximum(box, 0.0), 1.0)

    def compute_output_shape(self, cells_shape, where_shape=None):
        return (cells_shape[0], 4)


def cell_centres(height: int, width: int) -> np.ndarray:
    """(H * W, 2) float32 x, y of each cell's centre as fractions of the image, row by row."""
    ys, xs = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width,
                         indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype("float32")


def _class_branch(features: keras.KerasTensor, num_classes: int, dropout: float, activation: str,
                  prefix: str, output_name: str) -> keras.KerasTensor:
    """Global average pooling, dropout, a 1x1 conv to one logit per class, the activation. The
    pooling and dropout are `head_pool` / `head_dropout`; the rest are named `<prefix>logits`,
    `<prefix>reshape` and `output_name`, fixed names that weight loading relies on."""
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="head_pool")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Conv2D(num_classes, 1, name=f"{prefix}logits")(x)
    x = keras.layers.Reshape((num_classes,), name=f"{prefix}reshape")(x)
    return keras.layers.Activation(activation, name=output_name, dtype=OUTPUT_DTYPE)(x)


def training_model(model: keras.Model) -> tuple[keras.Model, tuple[int, int] | None]:
    """The model to fit: a detection model gets its cells' proposals and `where` logits as an
    extra last output (N, H * W, 5), which a training loss supervises cell by cell
    (`training.losses.CellLoss`); it shares every layer with `model`. Any other model is returned
    as it is. Also returns the cells' grid (height, width), or None."""
    names = [layer.name for layer in model.layers]
    if BOX_CELLS not in names:
        return model, None
    sides = model.get_layer("head_box_sides").output
    grid = (int(sides.shape[1]), int(sides.shape[2]))
    where = keras.layers.Reshape((grid[0] * grid[1], 1), name="head_box_where_cells")(
        model.get_layer("head_box_where_flat").output)
    cells = keras.layers.Concatenate(name="head_box_cells_train", dtype=OUTPUT_DTYPE)(
        [model.get_layer(BOX_CELLS).output, where])
    return keras.Model(model.inputs, list(model.outputs) + [cells],
                       name=f"{model.name}_training"), grid
