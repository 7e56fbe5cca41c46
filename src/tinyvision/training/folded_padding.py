"""Strided convolutions trained without their ZeroPadding2D: the padding folded into "same".

keras.applications' MobileNets and EfficientNet pad the input of a stride-2 convolution with a
ZeroPadding2D layer (one row at the bottom, one column at the right) and then convolve "valid".
When the padded tensor's sides are even, TensorFlow's "same" padding adds exactly those rows and
columns, so the convolution alone computes the same numbers, without a Pad op forward and a Slice
in its gradient (each a pass over the activations). On MobileNet V1 0.25 at 96x96 that is about
5 % of a training step (benchmarks/bench_train_step.py).

The fold holds only inside `folded_padding(model)`, which the trainer wraps around `fit`: the
saved model, evaluation and export see Keras' own layers and configuration. A pair is folded only
when "same" padding is provably the layer's padding; ResNet's 3-pixel pad before its 7x7
convolution, for one, stays as it is.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator

import keras


def foldable_pairs(model: keras.Model) -> list[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """(ZeroPadding2D, convolution) pairs of `model` (nested models too) whose padding "same"
    padding reproduces exactly: the convolution is the padding's only consumer, pads "valid",
    and for the padded input's height and width "same" adds the rows and columns it adds."""
    layers = list(model._flatten_layers(include_self=False))
    consumers: dict[int, list[keras.layers.Layer]] = {}
    for layer in layers:
        for tensor in _inputs_of(layer):
            consumers.setdefault(id(tensor), []).append(layer)
    pairs = []
    for pad in layers:
        if not isinstance(pad, keras.layers.ZeroPadding2D) or pad.data_format != "channels_last":
            continue
        users = consumers.get(id(_output_of(pad)), [])
        if len(users) == 1 and _same_equals_pad(pad, users[0]):
            pairs.append((pad, users[0]))
    return pairs


@contextlib.contextmanager
def folded_padding(model: keras.Model) -> Iterator[int]:
    """Within the block, every foldable pair of `model` runs as one "same" convolution (the
    padding layer passes its input through); yields how many pairs were folded. The layers'
    calls and configuration are restored on leaving, also when training raised."""
    pairs = foldable_pairs(model)
    for pad, conv in pairs:
        pad.call = types.MethodType(_pass_through, pad)
        conv.padding = "same"
    try:
        yield len(pairs)
    finally:
        for pad, conv in pairs:
            del pad.call  # the class's own call again
            conv.padding = "valid"


def _pass_through(self, inputs):
    return inputs


def _same_equals_pad(pad: keras.layers.ZeroPadding2D, conv: keras.layers.Layer) -> bool:
    if not isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        return False
    if conv.padding != "valid" or conv.data_format != "channels_last" \
            or tuple(conv.dilation_rate) != (1, 1):
        return False
    shape = _input_of(pad).shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return False
    for size, kernel, stride, (before, after) in zip(shape[1:3], conv.kernel_size, conv.strides,
                                                     pad.padding):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        if (total // 2, total - total // 2) != (before, after):
            return False
    return True


def _inputs_of(layer: keras.layers.Layer) -> list:
    """The tensors `layer` was first called on (none for an input layer or an unbuilt one)."""
    try:
        found = layer.input
    except (AttributeError, ValueError):
        return []
    return list(found) if isinstance(found, (list, tuple)) else [found]


def _input_of(layer: keras.layers.Layer):
    return _inputs_of(layer)[0]


def _output_of(layer: keras.layers.Layer):
    try:
        return layer.output
    except (AttributeError, ValueError):
        return None
