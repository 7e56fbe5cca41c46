"""Test-time augmentation: average a model's scores over an image and its mirror images.

Works for any scorer that maps uint8 images (N, H, W, C) to the model's outputs in its order
(models/outputs.py): class scores (N, classes), (class scores, boxes) for a detection model, or
boxes alone for a one-class box model: the float Keras model (`keras_scorer`) and the int8 model
on the LiteRT reference kernels (`int8_scorer`). Boxes are normalised xyxy; a box predicted on a
flipped image is flipped back before averaging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import numpy as np

from tinyvision.errors import ConfigError, did_you_mean
from tinyvision.models.outputs import BOX, CLASS

FLIPS = frozenset({"horizontal", "vertical"})
DEFAULT_FLIPS = ("horizontal",)
_AXES = {"horizontal": 2, "vertical": 1}  # NHWC: width is axis 2, height axis 1

Outputs = Union[np.ndarray, tuple[np.ndarray, np.ndarray]]
Scorer = Callable[[np.ndarray], Outputs]


def check_flips(flips: Sequence[str]) -> tuple[str, ...]:
    """`flips` as a tuple, or a ConfigError naming the allowed values and close matches."""
    if isinstance(flips, str):
        flips = (flips,)
    flips = tuple(flips)
    for flip in flips:
        if flip not in FLIPS:
            raise ConfigError(f"Expected each TTA flip to be one of {sorted(FLIPS)}, received "
                              f"flip={flip!r}.{did_you_mean(flip, FLIPS)}")
    if len(set(flips)) != len(flips):
        raise ConfigError(f"TTA flips must not repeat, received flips={list(flips)}.")
    return flips


def flip_images(images: np.ndarray, flip: str) -> np.ndarray:
    """Mirror a batch (N, H, W, C) left-right ("horizontal") or top-bottom ("vertical")."""
    check_flips((flip,))
    return np.ascontiguousarray(np.flip(np.asarray(images), axis=_AXES[flip]))


def unflip_boxes(boxes: np.ndarray, flip: str) -> np.ndarray:
    """Normalised xyxy boxes predicted on a flipped image -> boxes of the original image."""
    boxes = np.asarray(boxes, dtype=np.float32).copy()
    if flip == "horizontal":
        boxes[:, [0, 2]] = 1.0 - boxes[:, [2, 0]]
    else:
        boxes[:, [1, 3]] = 1.0 - boxes[:, [3, 1]]
    return boxes


def tta_outputs(scorer: Scorer, images: np.ndarray, flips: Sequence[str] = DEFAULT_FLIPS,
                kinds: Sequence[str] | None = None) -> Outputs:
    """Mean of `scorer` over the images and each flip of them (boxes flipped back first).

    `kinds`: what each output is (models/outputs.output_kinds); by default one output is class
    scores and two are (class scores, boxes). With `flips=()` this is just `scorer(images)`.
    """
    flips = check_flips(flips)
    first = scorer(images)
    if not flips:
        return first
    several = isinstance(first, tuple)
    kinds = tuple(kinds) if kinds is not None else ((CLASS, BOX) if several else (CLASS,))
    passes = [_as_tuple(first)] + [_unflipped(_as_tuple(scorer(flip_images(images, f))), f, kinds)
                                   for f in flips]
    means = tuple(_mean([p[k] for p in passes]) for k in range(len(kinds)))
    return means if several else means[0]


def _as_tuple(outputs: Outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)


def _mean(passes: list[np.ndarray]) -> np.ndarray:
    """Mean of the passes as first + mean difference: exactly the first pass when all agree."""
    base = np.asarray(passes[0])
    return base + np.mean([np.asarray(p) - base for p in passes], axis=0).astype(base.dtype)


def _unflipped(outputs: tuple, flip: str, kinds: Sequence[str]) -> tuple:
    return tuple(unflip_boxes(o, flip) if kind == BOX else o for o, kind in zip(outputs, kinds))


def keras_scorer(model, batch_size: int = 128) -> Scorer:
    """uint8 images -> the float Keras model's outputs (scores, or (scores, boxes))."""

    def score(images: np.ndarray) -> Outputs:
        outputs = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
        if isinstance(outputs, (list, tuple)):
            return tuple(np.asarray(o, np.float32) for o in outputs)
        return np.asarray(outputs, np.float32)

    return score


def int8_scorer(runner) -> Scorer:
    """uint8 images -> dequantised scores of an int8 model (a `verify.ReferenceRunner` or any
    object with `.scores(uint8_images)`)."""
    return runner.scores
