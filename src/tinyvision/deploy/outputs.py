"""One description of an int8 LiteRT model's tensors: the input and output quantisation, the
outputs in the Keras model's order, the ops. Everything that reads an exported model (runners,
verification, C source, prediction) takes it from here.

The input quantisation is always given in pixels (0..255): q = round(pixel / scale) + zero point.
A model whose input normalisation (pixel x a + b) was folded into its input quantisation at export
(`litert.export_int8`) records a and b in the .tflite's metadata (`INPUT_METADATA`): its input
tensor is quantised in normalised units, and `pixel_quantization` turns that into pixels."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_METADATA = "tinyvision_input_normalization"  # {"scale": a, "offset": b}, JSON


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int


def quantize_images(images: np.ndarray, q: Quantization) -> np.ndarray:
    """uint8 pixels -> the model's int8 input, through the table the camera's C code holds
    (`input_lut`): a split of images costs one int8 copy, not float64 temporaries 16 times its
    size."""
    return input_lut(q.scale, q.zero_point)[np.asarray(images, np.uint8)]


def input_lut(scale: float, zero_point: int) -> np.ndarray:
    """pixel 0..255 -> int8 input, as LiteRT quantises it: round(pixel / scale) + zero point."""
    values = np.rint(np.arange(256, dtype=np.float64) / scale) + zero_point
    return np.clip(values, -128, 127).astype(np.int8)


def pixel_quantization(tensor_scale: float, tensor_zero_point: int,
                       normalization: dict | None) -> Quantization:
    """The input quantisation in pixels: the tensor's own, or for a folded normalisation
    (n = pixel x a + b, q = n / s + z = pixel / (s / a) + z + b / s) scale s / a and zero point
    z + b / s (an integer by the export's choice of s and z)."""
    if not normalization:
        return Quantization(float(tensor_scale), int(tensor_zero_point))
    a, b = normalization["scale"], normalization["offset"]
    return Quantization(float(tensor_scale / a),
                        int(round(tensor_zero_point + b / tensor_scale)))


def input_normalization(path_or_bytes: str | Path | bytes) -> dict | None:
    """The input normalisation folded into the model's input quantisation ({"scale": a,
    "offset": b} from its metadata), or None. Reads the flatbuffer directly: Model.metadata
    (field 6) names a buffer (Model.buffers, field 4) that holds the JSON."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    try:
        model = _u32(data, 0)
        for entry in _vector_tables(data, _field(data, model, 6)):
            name_at = _field(data, entry, 0)
            if name_at is None or _string(data, name_at) != INPUT_METADATA.encode():
                continue
            buffers = _vector_tables(data, _field(data, model, 4))
            buffer_at = _field(data, entry, 1)
            index = _u32(data, buffer_at) if buffer_at is not None else 0
            raw = _string(data, _field(data, buffers[index], 0))
            found = json.loads(raw.decode())
            return {"scale": float(found["scale"]), "offset": float(found["offset"])}
    except (struct.error, IndexError, KeyError, TypeError, ValueError):
        return None  # not ours, or damaged: the model's own input quantisation stands
    return None


def _u32(data: bytes, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0]


def _field(data: bytes, table: int, index: int) -> int | None:
    """Where field `index` of the table at `table` is, or None when absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    size = struct.unpack_from("<H", data, vtable)[0]
    slot = 4 + 2 * index
    offset = struct.unpack_from("<H", data, vtable + slot)[0] if slot < size else 0
    return table + offset if offset else None


def _vector_tables(data: bytes, at: int | None) -> list[int]:
    if at is None:
        return []
    vector = at + _u32(data, at)
    return [vector + 4 + 4 * k + _u32(data, vector + 4 + 4 * k) for k in range(_u32(data, vector))]


def _string(data: bytes, at: int | None) -> bytes:
    if at is None:
        return b""
    start = at + _u32(data, at)
    return data[start + 4:start + 4 + _u32(data, start)]


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
    normalization = input_normalization(path_or_bytes)
    ordered = keras_output_order(interpreter, n_classes)
    if kinds is not None and len(kinds) != len(ordered):
        raise ValueError(f"the model has {len(ordered)} output(s), expected {len(kinds)} "
                         f"({', '.join(kinds)})")
    outputs = [dict(_facts(d), index=file_order.index(d["index"]),
                    **({} if kinds is None else {"kind": kinds[k]}))
               for k, d in enumerate(ordered)]
    return {"input": _input_facts(inp, normalization), "output": outputs[0], "outputs": outputs}


def _input_facts(detail: dict, normalization: dict | None) -> dict:
    """The input's facts, its quantisation in pixels; a folded normalisation and the tensor's own
    quantisation (in normalised units) beside it."""
    facts = _facts(detail)
    if normalization:
        q = pixel_quantization(facts["scale"], facts["zero_point"], normalization)
        facts.update(tensor_scale=facts["scale"], tensor_zero_point=facts["zero_point"],
                     normalization=normalization, scale=q.scale, zero_point=q.zero_point)
    return facts


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
