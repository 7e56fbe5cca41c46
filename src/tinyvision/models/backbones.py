"""Backbone registry: name -> builder plus metadata (input scaling, pretrained weights, blocks).

A builder takes the (already normalised) input tensor and returns the feature-map tensor, with
fixed layer names so that pretrained weights load by name and fine-tuning can start at a block.
Pretrained weights are copied by layer name from a reference model built by keras.applications,
which works for any input size and for grayscale input (first conv kernel summed over RGB).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from tinyvision.errors import ModelError

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    """What tinyvision needs to know about a backbone, as data."""

    name: str
    build: Callable[[keras.KerasTensor, float], keras.KerasTensor]
    reference: Callable[[tuple[int, int, int], float, str], keras.Model]  # keras.applications model
    input_scale: float  # model input = pixel * scale + offset
    input_offset: float
    num_blocks: int
    block_pattern: str  # regex of a block's first layer; {n} is the block number
    imagenet_alphas: tuple[float, ...] = ()
    imagenet_sizes: tuple[int, ...] = ()
    weights_file: Callable[[float, int], str] = field(default=lambda alpha, size: "")

    def block_start(self, layer_names: list[str], block: int) -> int:
        """Index of the first layer of block `block` (1-based) in `layer_names`."""
        if not 1 <= block <= self.num_blocks:
            raise ModelError(f"{self.name} has blocks 1..{self.num_blocks}; got block_{block}.")
        pattern = re.compile(self.block_pattern.format(n=block))
        for index, name in enumerate(layer_names):
            if pattern.match(name):
                return index
        raise ModelError(f"No layer of block_{block} found in the {self.name} model.")


# ---- MobileNet V1 ----------------------------------------------------------------------------
def _mobilenet_v1(x: keras.KerasTensor, alpha: float) -> keras.KerasTensor:
    # keras.applications' own graph (layer names conv1, conv_dw_N, conv_pw_N, ...), built on x.
    model = keras.applications.MobileNet(input_tensor=x, include_top=False, weights=None, alpha=alpha)
    return model.output


def _mobilenet_v1_reference(shape: tuple[int, int, int], alpha: float, weights: str) -> keras.Model:
    with warnings.catch_warnings():  # "weights for 224x224 will be loaded": expected, any size works
        warnings.filterwarnings("ignore", message=".*input_shape. is undefined or non-square.*")
        return keras.applications.MobileNet(input_shape=shape, include_top=False, weights=weights,
                                            alpha=alpha)


def _mobilenet_v1_file(alpha: float, size: int) -> str:
    alpha_text = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[alpha]
    size = size if size in (128, 160, 192, 224) else 224
    return f"{KERAS_WEIGHTS_URL}mobilenet/mobilenet_{alpha_text}_{size}_tf_no_top.h5"


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v1": BackboneSpec(
        name="mobilenet_v1",
        build=_mobilenet_v1,
        reference=_mobilenet_v1_reference,
        input_scale=1 / 127.5,
        input_offset=-1.0,
        num_blocks=13,
        block_pattern=r"conv_(pad|dw)_{n}($|_)",
        imagenet_alphas=(0.25, 0.5, 0.75, 1.0),
        imagenet_sizes=(128, 160, 192, 224),
        weights_file=_mobilenet_v1_file,
    ),
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ModelError(f"Unknown backbone={name!r}; available: {sorted(BACKBONES)}.") from None


# ---- pretrained weights ----------------------------------------------------------------------
def load_pretrained(model: keras.Model, spec: BackboneSpec, alpha: float, weights: str) -> int:
    """Copy pretrained backbone weights into `model` by layer name; return how many layers got them.

    `weights` is "imagenet" (keras.applications download, cached in ~/.keras/models) or a path to a
    weights file for the same backbone and alpha, without the classifier top.
    """
    height, width, channels = model.input_shape[1:]
    if weights == "imagenet" and alpha not in spec.imagenet_alphas:
        raise ModelError(f"No ImageNet weights for {spec.name} with alpha={alpha}; they exist for "
                         f"alpha in {list(spec.imagenet_alphas)}. Pick one of those, or set "
                         "model.weights=none to train from scratch.")
    if weights != "imagenet" and not Path(weights).is_file():
        raise ModelError(f"model.weights={weights!r}: no such file. Give the path of a weights file "
                         "(.h5) for this backbone, 'imagenet', or 'none'.")
    try:
        reference = spec.reference((height, width, 3), alpha, weights)
    except Exception as exc:  # download failures and file-format errors arrive as many types
        raise ModelError(_weights_error(spec, alpha, height, weights, exc)) from None
    copied = 0
    for ref_layer in reference.layers:
        ref_weights = ref_layer.get_weights()
        if not ref_weights:
            continue
        try:
            layer = model.get_layer(ref_layer.name)
        except ValueError:
            continue
        if channels == 1 and ref_weights[0].ndim == 4 and ref_weights[0].shape[2] == 3:
            # Grayscale input: a gray pixel g equals RGB (g, g, g), so summing the kernel over the
            # colour axis gives the same response the RGB network had to a gray image.
            ref_weights = [ref_weights[0].sum(axis=2, keepdims=True)] + ref_weights[1:]
        layer.set_weights(ref_weights)
        copied += 1
    return copied


def _weights_error(spec: BackboneSpec, alpha: float, size: int, weights: str, exc: Exception) -> str:
    if weights == "imagenet":
        url = spec.weights_file(alpha, size)
        return (f"Could not get ImageNet weights for {spec.name} alpha={alpha} ({exc}). "
                f"If this machine is offline, download {url} elsewhere and set model.weights to "
                "the file's path (or copy it to ~/.keras/models/), or set model.weights=none to "
                "train from scratch.")
    return (f"Could not load weights file {weights} into {spec.name} alpha={alpha}: {exc}. It must "
            "be a weights file of this backbone and alpha, without the classifier top.")


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))
