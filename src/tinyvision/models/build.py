"""Assemble a model: input -> normalisation -> backbone -> head, as one flat Keras model."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

from tinyvision.config import ModelConfig
from tinyvision.errors import ConfigError, ModelError, did_you_mean
from tinyvision.models.backbones import (AUTO_UNFREEZE_FRACTION, BACKBONES, build_backbone,
                                         check_weights_available, copy_weights, get_backbone,
                                         leaf_layers, load_pretrained)
from tinyvision.models.heads import HEAD_PREFIX, build_head, finer_features
from tinyvision.models.user_models import cut_backbone, load_model_file

SCRATCH_BN_MOMENTUM = 0.9  # BatchNorm statistics settle faster when training from random weights
FILE_INPUT_SCALE, FILE_INPUT_OFFSET = 1 / 127.5, -1.0  # a cut model file's default: [-1, 1]
NORMALIZE_LAYER = "normalize"


def build_model(cfg: ModelConfig, num_classes: int, task: str) -> keras.Model:
    """The float model. Its input is raw pixels 0..255 (float); normalisation is inside, so the
    int8 export takes pixel - 128 and the device needs no preprocessing code.

    `task` "detection" gives two outputs, [class probabilities, box]; see `models.heads`.
    """
    height, width = cfg.input_size
    inputs = keras.Input((height, width, cfg.channels), name="image")
    if cfg.cut_at:
        return _build_from_file(cfg, inputs, num_classes, task)
    spec = get_backbone(cfg.backbone)
    if cfg.pretrained:
        check_weights_available(spec, cfg.alpha, cfg.weights)  # fail before building anything
    x = _normalize(inputs, cfg, spec.input_scale, spec.input_offset)
    options = cfg.plain_cnn.model_dump() if cfg.backbone == "plain_cnn" and cfg.plain_cnn else {}
    features = build_backbone(spec, x, cfg.alpha, options)
    outputs = build_head(features, num_classes, task, cfg.dropout, _box_features(
        inputs, features, task))
    name = f"{cfg.backbone}_{cfg.alpha:g}_{height}x{width}_{cfg.color_mode}"
    model = keras.Model(inputs, outputs, name=name.replace(".", "_"))
    if cfg.pretrained:
        load_pretrained(model, spec, cfg.alpha, cfg.weights)
    _set_batchnorm_momentum(model, cfg)
    return model


def _build_from_file(cfg: ModelConfig, inputs: keras.KerasTensor, num_classes: int,
                     task: str) -> keras.Model:
    """A backbone cut from the user's model file at `cfg.cut_at`, with its trained weights."""
    source = load_model_file(cfg.weights, cfg.allow_unsafe_model_code)
    x = _normalize(inputs, cfg, FILE_INPUT_SCALE, FILE_INPUT_OFFSET)
    features = cut_backbone(source, cfg.cut_at, x)
    outputs = build_head(features, num_classes, task, cfg.dropout, _box_features(
        inputs, features, task))
    height, width = cfg.input_size
    name = re.sub(r"\W", "_", f"{Path(cfg.weights).stem}_{cfg.cut_at}_{height}x{width}_"
                              f"{cfg.color_mode}")
    try:
        model = keras.Model(inputs, outputs, name=name)
    except ValueError as exc:  # a file layer named like ours ("normalize", "head_*")
        raise ModelError(f"Cannot combine {cfg.weights} with tinyvision's layers: {exc} Rename "
                         f"that layer in the file (tinyvision uses '{NORMALIZE_LAYER}', 'image' "
                         f"and '{HEAD_PREFIX}*').") from None
    copy_weights(leaf_layers(source), model)
    _set_batchnorm_momentum(model, cfg)
    return model


def _box_features(inputs: keras.KerasTensor, features: keras.KerasTensor,
                  task: str) -> keras.KerasTensor | None:
    """Detection: the backbone's finer feature map for the box (models.heads.finer_features)."""
    if task != "detection":
        return None
    return finer_features(keras.Model(inputs, features))


def _normalize(inputs: keras.KerasTensor, cfg: ModelConfig, scale, offset) -> keras.KerasTensor:
    """pixel * scale + offset; `model.input_scale` / `input_offset` override the backbone's."""
    scale = cfg.input_scale if cfg.input_scale is not None else scale
    offset = cfg.input_offset if cfg.input_offset is not None else offset
    if cfg.channels == 1:  # one channel: a per-RGB-channel value becomes its mean
        scale, offset = (sum(v) / len(v) if isinstance(v, (tuple, list)) else v
                         for v in (scale, offset))
    return keras.layers.Rescaling(scale, offset, name=NORMALIZE_LAYER)(inputs)


def _set_batchnorm_momentum(model: keras.Model, cfg: ModelConfig) -> None:
    momentum = cfg.batchnorm_momentum or (None if cfg.pretrained else SCRATCH_BN_MOMENTUM)
    if momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = momentum


def is_head_layer(layer: keras.layers.Layer) -> bool:
    return layer.name.startswith(HEAD_PREFIX)


def resolve_unfreeze_index(model: keras.Model, backbone: str,
                           unfreeze_from: str | int | float) -> int:
    """Index of the first layer to train in stage 2.

    `unfreeze_from` is "auto" (3/4 of the way through the backbone's blocks), "block_N" (numbered
    per backbone), a layer name, a native block name ("conv4_block1", "fire5", "expanded_conv_3"),
    a layer index (int), or a fraction of the backbone's layers (float in [0, 1]; 1.0: head only).
    """
    names = [layer.name for layer in model.layers]
    if isinstance(unfreeze_from, bool):
        raise ConfigError(f"train.fine_tune.unfreeze_from={unfreeze_from!r} is a boolean; give a "
                          "block name, layer name, index or fraction.")
    if isinstance(unfreeze_from, float):
        return _fraction_index(model, unfreeze_from)
    if isinstance(unfreeze_from, int):
        if not 0 <= unfreeze_from < len(names):
            raise ConfigError(f"train.fine_tune.unfreeze_from={unfreeze_from} is outside the "
                              f"model's layers 0..{len(names) - 1}.")
        return unfreeze_from
    spec = BACKBONES.get(backbone)
    if unfreeze_from == "auto":
        return _auto_index(model, spec, names)
    if unfreeze_from.startswith("block_") and unfreeze_from[6:].isdigit():
        try:
            return get_backbone(backbone).block_start(names, int(unfreeze_from[6:]))
        except ModelError as exc:
            raise ConfigError(f"train.fine_tune.unfreeze_from={unfreeze_from!r}: {exc}") from None
    if unfreeze_from in names:
        return names.index(unfreeze_from)
    for index, name in enumerate(names):  # a native block name: its first layer
        if name.startswith(unfreeze_from + "_"):
            return index
    raise ConfigError(f"train.fine_tune.unfreeze_from={unfreeze_from!r} is neither 'auto', "
                      f"block_N, a layer or block name, a layer index nor a fraction."
                      f"{did_you_mean(unfreeze_from, names, n=3)}")


def _backbone_indices(model: keras.Model) -> list[int]:
    """Indices of the backbone's layers: not the input, not `normalize`, not the head."""
    return [i for i, layer in enumerate(model.layers)
            if not isinstance(layer, keras.layers.InputLayer) and layer.name != NORMALIZE_LAYER
            and not is_head_layer(layer)]


def _fraction_index(model: keras.Model, fraction: float) -> int:
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"train.fine_tune.unfreeze_from={fraction} as a fraction of the "
                          "backbone's layers must be in [0, 1] (0: all of them train, 1: none).")
    backbone = _backbone_indices(model)
    position = int(round(fraction * len(backbone)))
    return backbone[position] if position < len(backbone) else len(model.layers)


def _auto_index(model: keras.Model, spec, names: list[str]) -> int:
    """The block 3/4 through the backbone; a model file without blocks: 3/4 of its layers."""
    if spec is not None:
        try:
            return spec.block_start(names, spec.auto_block(names))
        except ModelError:
            pass  # e.g. a backbone cut from a user's file: no registry block names
    return _fraction_index(model, AUTO_UNFREEZE_FRACTION)


def settle_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics from one training-mode pass over `images`.

    An untrained deep network's activations shrink layer by layer until int8 scales collapse
    (~1e-9), which makes the interpreters abort on SOFTMAX; with batch statistics each layer's
    output is normalised again, as after training. Much cheaper than fitting.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images.astype(np.float32), training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
