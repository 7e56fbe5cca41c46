"""Where to cut a user's model file (`model.cut_at`): its layers with their output shapes and, on a
sample of the user's own images, how much of each feature map is alive.

A file trained for another task often has late layers whose activations are almost all zero on
new images (a person detector's last blocks on inspection photos: ~93 % zeros): features that
carry next to nothing, however good the file was at its own task. The listing shows that before a
run spends its budget on them, and suggests the deepest feature map that is still alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tinyvision.data.cache import BadImage, DecodeSpec, decode_image
from tinyvision.errors import DataError
from tinyvision.models.backbones import copy_weights, leaf_layers
from tinyvision.models.build import FILE_INPUT_OFFSET, FILE_INPUT_SCALE
from tinyvision.models.user_models import flatten_model, load_model_file

DEAD_SHARE = 0.9  # a feature map with at least this share of activations <= 0 is (nearly) dead
ALIVE_SHARE = 0.6  # the suggested cut: the deepest map with at most this share, before any dead


@dataclass(frozen=True)
class LayerFacts:
    """One layer of a model file: what `model.cut_at` would give if cut there."""

    index: int
    name: str
    kind: str  # the Keras class
    shape: tuple  # output shape without the batch
    params: int
    # share of the activations on the sample images that are <= 0 (None without images): zeros
    # after a ReLU, and before one the values it will zero
    zero_share: float | None = None
    mean_abs: float | None = None

    @property
    def feature_map(self) -> bool:
        """A (height, width, channels) output: a place `cut_at` accepts."""
        return len(self.shape) == 3

    @property
    def dead(self) -> bool:
        return self.zero_share is not None and self.zero_share >= DEAD_SHARE


def describe_layers(path: str | Path, images: Sequence[str | Path] = (), input_scale: float =
                    FILE_INPUT_SCALE, input_offset: float = FILE_INPUT_OFFSET,
                    allow_unsafe_code: bool = False) -> list[LayerFacts]:
    """Every layer of the model file at `path` (nested models inlined) with its output shape and
    parameter count; with `images`, the share of activations <= 0 and the mean |activation| of its
    output on them, decoded at the file's input size and normalised as a cut backbone would be
    (pixel * input_scale + input_offset)."""
    source = load_model_file(path, allow_unsafe_code)
    model = flatten_model(source)  # fresh layers: the file's weights are copied in by name
    copy_weights(leaf_layers(source), model)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    stats: dict[str, tuple[float, float]] = {}
    if images:
        batch = _decode(model, images) * input_scale + input_offset
        probe = keras.Model(model.inputs, [layer.output for layer in layers])
        outputs = probe(batch.astype(np.float32), training=False)
        for layer, value in zip(layers, outputs):
            value = keras.ops.convert_to_numpy(value)
            stats[layer.name] = (float(np.mean(value <= 0)), float(np.mean(np.abs(value))))
    facts = []
    for index, layer in enumerate(layers):
        zero, mean = stats.get(layer.name, (None, None))
        facts.append(LayerFacts(index, layer.name, type(layer).__name__,
                                tuple(layer.output.shape[1:]), layer.count_params(), zero, mean))
    return facts


def suggest_cut(facts: list[LayerFacts]) -> LayerFacts | None:
    """The deepest feature map with at most ALIVE_SHARE of its activations <= 0 that comes before
    the first dead one (None without activation figures, or when none is alive)."""
    maps = [f for f in facts if f.feature_map and f.zero_share is not None]
    first_dead = next((i for i, f in enumerate(maps) if f.dead), len(maps))
    alive = [f for f in maps[:first_dead] if f.zero_share <= ALIVE_SHARE]
    return alive[-1] if alive else None


def _decode(model: keras.Model, paths: Sequence[str | Path]) -> np.ndarray:
    shape = model.inputs[0].shape
    height, width, channels = shape[1], shape[2], shape[3]
    if height is None or width is None:
        raise DataError(f"{model.name} takes images of any size; the listing needs a fixed input "
                        "size in the file.")
    spec = DecodeSpec((int(height), int(width)), "grayscale" if channels == 1 else "rgb")
    decoded = []
    for path in paths:
        try:
            decoded.append(decode_image(path, spec))
        except BadImage as exc:
            raise DataError(f"Cannot read image {path}: {exc}") from None
    if not decoded:
        raise DataError("No images to measure the activations on.")
    return np.stack(decoded).astype(np.float32)
