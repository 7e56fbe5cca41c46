"""Assemble a model: input -> normalisation -> backbone -> head, as one flat Keras model."""

from __future__ import annotations

import keras

from tinyvision.config import ModelConfig
from tinyvision.models.backbones import get_backbone, load_pretrained
from tinyvision.models.heads import HEAD_PREFIX, classification_head

SCRATCH_BN_MOMENTUM = 0.9  # BatchNorm statistics settle faster when training from random weights


def build_model(cfg: ModelConfig, num_classes: int, task: str) -> keras.Model:
    """The float model. Its input is raw pixels 0..255 (float); normalisation is inside, so the
    int8 export takes pixel - 128 and the device needs no preprocessing code."""
    spec = get_backbone(cfg.backbone)
    height, width = cfg.input_size
    inputs = keras.Input((height, width, cfg.channels), name="image")
    x = keras.layers.Rescaling(spec.input_scale, spec.input_offset, name="normalize")(inputs)
    features = spec.build(x, cfg.alpha)
    outputs = classification_head(features, num_classes, task, cfg.dropout)
    name = f"{cfg.backbone}_{cfg.alpha:g}_{height}x{width}_{cfg.color_mode}"
    model = keras.Model(inputs, outputs, name=name.replace(".", "_"))
    if cfg.pretrained:
        load_pretrained(model, spec, cfg.alpha, cfg.weights)
    momentum = cfg.batchnorm_momentum or (None if cfg.pretrained else SCRATCH_BN_MOMENTUM)
    if momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = momentum
    return model


def is_head_layer(layer: keras.layers.Layer) -> bool:
    return layer.name.startswith(HEAD_PREFIX)


def resolve_unfreeze_index(model: keras.Model, backbone: str, unfreeze_from: str | int) -> int:
    """Index of the first layer to train in stage 2, from a block name, layer name or index."""
    from tinyvision.errors import ConfigError

    names = [layer.name for layer in model.layers]
    if isinstance(unfreeze_from, int):
        if not 0 <= unfreeze_from < len(names):
            raise ConfigError(f"train.fine_tune.unfreeze_from={unfreeze_from} is outside the "
                              f"model's layers 0..{len(names) - 1}.")
        return unfreeze_from
    if unfreeze_from.startswith("block_") and unfreeze_from[6:].isdigit():
        return get_backbone(backbone).block_start(names, int(unfreeze_from[6:]))
    if unfreeze_from in names:
        return names.index(unfreeze_from)
    import difflib

    close = difflib.get_close_matches(unfreeze_from, names, n=3)
    hint = f" Similar layers: {close}." if close else ""
    raise ConfigError(f"train.fine_tune.unfreeze_from={unfreeze_from!r} is neither block_N, a layer "
                      f"name nor a layer index.{hint}")
