"""What an int8 .tflite asks of the device: its ops (checked against TFLM's before an export
succeeds, each traced back to the Keras layer that produced it) and its multiply-accumulates
(counted from the flatbuffer itself, so a fit check needs no Keras model)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from tinyvision.deploy.outputs import litert_interpreter
from tinyvision.deploy.tflm_ops import TFLM_OPS
from tinyvision.errors import ExportError


@dataclass(frozen=True)
class OpUse:
    op: str  # builtin name, e.g. CONV_2D
    layer: str  # the Keras layer that produced it, as far as the tensor names tell
    macs: int
    int8: bool = False  # int8 tensors only (int32 biases aside): TFLM's int8-only kernel serves


def int8_ops(uses: list[OpUse]) -> set[str]:
    """The ops every use of which has int8 tensors only: the application registers TFLM's
    int8-only kernel for them (on Cortex-M, CMSIS-NN without its int4 and int16 paths)."""
    ops = {use.op for use in uses}
    return {op for op in ops if all(use.int8 for use in uses if use.op == op)}


def model_ops(path_or_bytes: str | Path | bytes, layer_names: Iterable[str] = ()) -> list[OpUse]:
    """Every op of a .tflite in execution order, with its Keras layer and MACs."""
    interpreter = litert_interpreter(path_or_bytes)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    known = set(layer_names)
    uses = []
    for op in interpreter._get_ops_details():
        outputs = [tensors[int(i)] for i in op["outputs"] if int(i) >= 0]
        inputs = [tensors[int(i)] if int(i) >= 0 else None for i in op["inputs"]]
        name = outputs[0]["name"] if outputs else ""
        uses.append(OpUse(op["op_name"], layer_from_tensor_name(name, known),
                          _op_macs(op["op_name"], inputs, outputs), _int8_only(inputs, outputs)))
    return uses


def layer_from_tensor_name(name: str, layer_names: set[str]) -> str:
    """The Keras layer in a converter tensor name such as
    `functional_1/odd_gelu_1/Gelu/mul_2;functional_1/odd_gelu_1/Gelu/Neg` -> `odd_gelu`.

    Keras 3 adds `_<n>` to each layer scope; with the model's layer names the right one is found
    exactly, without them the second path segment is the best guess."""
    candidates = []
    for part in name.split(";"):
        for segment in part.split("/")[1:]:
            for guess in (segment, re.sub(r"_\d+$", "", segment)):
                if guess in layer_names:
                    return guess
        segments = part.split("/")
        if len(segments) > 1:
            candidates.append(re.sub(r"_\d+$", "", segments[1]))
    return candidates[0] if candidates else name


def _int8_only(inputs: list, outputs: list) -> bool:
    """int8 outputs and activations and weights, int32 only as a bias (a third input)."""
    if not outputs or not all(t["dtype"] == np.int8 for t in outputs):
        return False
    for position, tensor in enumerate(inputs):
        allowed = (np.int8, np.int32) if position == 2 else (np.int8,)
        if tensor is not None and tensor["dtype"] not in allowed:
            return False
    return True


def _op_macs(op: str, inputs: list, outputs: list) -> int:
    """MACs of one op (convolutions and dense layers; the rest are small), from tensor shapes."""
    if not outputs or not inputs or inputs[0] is None:
        return 0
    out_shape = [int(v) for v in outputs[0]["shape"]]
    weights = inputs[1] if len(inputs) > 1 else None
    if weights is None:
        return 0
    w_shape = [int(v) for v in weights["shape"]]
    if op == "CONV_2D":  # weights (out_ch, kh, kw, in_ch)
        return prod(out_shape) * prod(w_shape[1:])
    if op == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, out_ch)
        return prod(out_shape) * w_shape[1] * w_shape[2]
    if op == "FULLY_CONNECTED":  # weights (units, in)
        return prod(out_shape) * w_shape[-1]
    if op == "TRANSPOSE_CONV":  # inputs: output shape, weights (out_ch, kh, kw, in_ch), input
        source = inputs[2]
        return prod(int(v) for v in source["shape"]) * w_shape[0] * w_shape[1] * w_shape[2]
    return 0


def model_macs(path_or_bytes: str | Path | bytes) -> int:
    return sum(use.macs for use in model_ops(path_or_bytes))


def check_tflm_ops(uses: list[OpUse], model_name: str = "the model") -> None:
    """Refuse a model with an op TFLM does not implement, naming each op and its Keras layers."""
    missing: dict[str, list[str]] = {}
    for use in uses:
        if use.op not in TFLM_OPS:
            layers = missing.setdefault(use.op, [])
            if use.layer not in layers:
                layers.append(use.layer)
    if missing:
        listed = "; ".join(f"{op} (from layer(s) {', '.join(map(repr, layers))})"
                           for op, layers in missing.items())
        raise ExportError(
            f"{model_name} uses op(s) TensorFlow Lite Micro does not implement: {listed}. "
            "Replace those layers with ones TFLM has (e.g. relu/relu6/hard_swish instead of "
            "gelu/swish, GlobalAveragePooling2D, Conv2D, DepthwiseConv2D, Dense), or cut a user "
            "backbone before them (model.cut_at).")
