"""One description of an int8 LiteRT model's tensors: the input and output quantisation, the
outputs in the Keras model's order, the ops. Everything that reads an exported model (runners,
verification, C source, prediction) takes it from here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int


def quantize_images(images: np.ndarray, q: Quantization) -> np.ndarray:
    """uint8 pixels -> the model's int8 input (pixel - 128 for tinyvision's own exports)."""
    values = np.rint(images.astype(np.float32) / q.scale) + q.zero_point
    return np.clip(values, -128, 127).astype(np.int8)


def dequantize(outputs: np.ndarray, q: Quantization) -> np.ndarray:
    return (outputs.astype(np.float32) - q.zero_point) * q.scale


def keras_output_order(interpreter, n_classes: int | None = None) -> list[dict]:
    """Output details of a .tflite in the order of the Keras model it was converted from."""
    details = interpreter.get_output_details()
    if len(details) < 2:
        return details
    try:
        named = interpreter.get_signature_runner().get_output_details()
    except ValueError:  # no signature in the file
        named = {}
    by_index = {d["index"]: d for d in details}
    keys = sorted(named, key=lambda k: (len(k), k))  # output_0, output_1, ..., output_10
    if len(keys) == len(details) and all(named[k]["index"] in by_index for k in keys):
        return [by_index[named[k]["index"]] for k in keys]
    return sorted(details, key=lambda d: d["shape"][-1] != n_classes)



def device_thresholds(thresholds, scale: float, zero_point: int) -> tuple[list[int], list[float]]:
    """Thresholds snapped to the nearest value an int8 output can take: (int8 q, (q - zp) * scale).

    A threshold above the largest int8 score (0.9998 > 255/256 for a sigmoid) could never be met
    on the device; its nearest grid value can. Then `output >= q` equals `score >= snapped`.
    """
    values = np.asarray(thresholds, dtype=np.float64)
    q = np.clip(np.rint(values / scale + zero_point), -128, 127).astype(np.int64)
    return q.tolist(), ((q - zero_point) * scale).tolist()


def snap_thresholds(thresholds: np.ndarray, q: Quantization) -> np.ndarray:
    """Multi-label thresholds snapped to the values an int8 output can take, as the exported C
    arrays hold them, so int8 scores are judged exactly as on the device."""
    return np.asarray(device_thresholds(thresholds, q.scale, q.zero_point)[1])


def tensor_quantization(path_or_bytes: str | Path | bytes, n_classes: int | None = None,
                        kinds: tuple[str, ...] | None = None) -> dict:
    """Input and output quantisation (scale, zero point), shapes and dtypes of a .tflite model.

    `outputs` lists every output in the Keras model's order, each with `index`: its position
    among the interpreter's outputs (what TFLM's `output(i)` takes) and, given `kinds`
    (models/outputs.output_kinds), its `kind` ("class" or "box"); `output` is the first (the
    class scores, or a one-class model's box).
    """
    interpreter = litert_interpreter(path_or_bytes)
    file_order = [d["index"] for d in interpreter.get_output_details()]
    inp = interpreter.get_input_details()[0]
    ordered = keras_output_order(interpreter, n_classes)
    if kinds is not None and len(kinds) != len(ordered):
        raise ValueError(f"the model has {len(ordered)} output(s), expected {len(kinds)} "
                         f"({', '.join(kinds)})")
    outputs = [dict(_facts(d), index=file_order.index(d["index"]),
                    **({} if kinds is None else {"kind": kinds[k]}))
               for k, d in enumerate(ordered)]
    return {"input": _facts(inp), "output": outputs[0], "outputs": outputs}


def output_kinds_of(quantization: dict) -> list[str]:
    """The kind of each output of a `tensor_quantization` dict; without recorded kinds (an
    export from before they were recorded), [class] or [class, box] by position."""
    outputs = quantization.get("outputs") or [quantization["output"]]
    return [o.get("kind", ("class", "box")[min(k, 1)]) for k, o in enumerate(outputs)]


def _facts(detail: dict) -> dict:
    return {"shape": detail["shape"].tolist(), "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(detail["quantization"][0]),
            "zero_point": int(detail["quantization"][1])}


def op_names(path_or_bytes: str | Path | bytes) -> list[str]:
    """Builtin op names of a .tflite model, in execution order."""
    return [op["op_name"] for op in litert_interpreter(path_or_bytes)._get_ops_details()]


def litert_interpreter(path_or_bytes):
    """A LiteRT interpreter (builtin kernels, no delegates) on a .tflite path or its bytes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = ({"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes)
              else {"model_path": os.fspath(path_or_bytes)})
    return Interpreter(**kwargs,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
