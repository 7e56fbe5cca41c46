"""What a model costs to run: parameters and multiply-accumulates (MACs), from its Keras graph.

MACs are counted for the layers that do the arithmetic of a CNN — convolutions (plain, depthwise,
separable, transposed) and dense layers — at the model's own input size, batch 1, the usual
convention of model zoos (MobileNet V1 1.0 at 224x224: ~569 M). Pooling, BatchNorm, activations and
element-wise ops are left out; they are a few percent at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import keras


@dataclass(frozen=True)
class ModelCost:
    params: int  # all weights, trainable or not
    macs: int  # multiply-accumulates of one inference (batch 1)

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs}


def model_cost(model: keras.Model) -> ModelCost:
    """Parameters and MACs of a built Keras model."""
    return ModelCost(params=model.count_params(), macs=count_macs(model))


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one inference, summed over every call of every layer."""
    return sum(macs for _, macs in layer_macs(model))


def layer_macs(model: keras.Model) -> list[tuple[str, int]]:
    """(layer name, MACs) of each layer call that has any, nested models included."""
    rows: list[tuple[str, int]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            rows.extend(layer_macs(layer))
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            inputs, outputs = node.input_tensors, node.output_tensors
            if not inputs or not outputs:
                continue
            macs = _call_macs(layer, tuple(inputs[0].shape), tuple(outputs[0].shape))
            if macs:
                rows.append((layer.name, macs))
    return rows


def _call_macs(layer: keras.layers.Layer, in_shape: tuple, out_shape: tuple) -> int:
    """MACs of one call of `layer` with batch-less shapes (channels last)."""
    if None in in_shape[1:] or None in out_shape[1:]:
        return 0  # unknown spatial size: nothing to count
    in_channels, out_spatial = in_shape[-1], prod(out_shape[1:-1])
    layers = keras.layers
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        kernel = prod(layer.kernel_size)
        depthwise = out_spatial * in_channels * layer.depth_multiplier * kernel
        return depthwise + out_spatial * in_channels * layer.depth_multiplier * layer.filters
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return out_spatial * in_channels * layer.depth_multiplier * prod(layer.kernel_size)
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)):
        # Every input pixel is scattered through the whole kernel.
        return prod(in_shape[1:-1]) * in_channels * layer.filters * prod(layer.kernel_size)
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        groups = getattr(layer, "groups", 1) or 1
        return out_spatial * layer.filters * prod(layer.kernel_size) * in_channels // groups
    if isinstance(layer, layers.Dense):
        return prod(in_shape[1:-1]) * in_channels * layer.units
    return 0
