"""Export formats beyond the int8 LiteRT model, each with the runtime that checks it:

| format | file | made by | checked on |
|---|---|---|---|
| `float16` | model_float16.tflite | LiteRT converter, float16 weights | LiteRT |
| `onnx` | model.onnx | Keras' ONNX export (tf2onnx) | onnxruntime |
| `onnx_int8` | model_int8.onnx | onnxruntime static quantisation, QDQ, calibrated | onnxruntime |
| `coreml` | model.mlpackage | coremltools, ML Program | Core ML, macOS only |

Every model takes float pixels 0..255 (N, H, W, C), as the Keras model does; normalisation is
inside. The converters are optional extras: a missing one is an ExportError naming the
`pip install` command.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyvision.deploy.litert import litert_bytes, quiet_converter
from tinyvision.errors import ExportError
from tinyvision.files import atomic_path
from tinyvision.layout import FORMAT_FILES

_EXTRAS = {"onnx": ("tf2onnx", "onnxruntime", "onnx"), "coreml": ("coremltools",)}


def missing_modules(extra: str | None) -> list[str]:
    """The modules of a pip extra that are not installed here."""
    import importlib.util

    return [name for name in _EXTRAS.get(extra or "", ()) if importlib.util.find_spec(name) is None]


def require(extra: str, what: str) -> None:
    """Raise an ExportError naming the pip command when an optional converter is missing."""
    missing = missing_modules(extra)
    if missing:
        raise ExportError(f"{what} needs {', '.join(missing)}: pip install 'tinyvision[{extra}]'")


# ---- export ----------------------------------------------------------------------------------
def export_float16(model, path: Path) -> int:
    """A LiteRT model with float16 weights (half the float size; float compute)."""
    import tensorflow as tf

    try:
        data = litert_bytes(model, optimizations=[tf.lite.Optimize.DEFAULT],
                            target_spec={"supported_types": [tf.float16]})
    except Exception as exc:
        raise ExportError(f"float16 conversion of {model.name} failed: {str(exc)[:2000]}") \
            from None
    with atomic_path(path, suffix=".tflite") as tmp:
        Path(tmp).write_bytes(data)
    return path.stat().st_size


def export_onnx(model, path: Path, opset: int = 17) -> int:
    """A float ONNX model with a dynamic batch dimension."""
    require("onnx", "ONNX export")
    model(np.zeros((1, *model.input_shape[1:]), np.float32))  # Keras exports called models only
    with atomic_path(path, suffix=".onnx") as tmp, quiet_converter(), _quiet_stderr():
        try:
            model.export(str(tmp), format="onnx", verbose=False, opset_version=opset)
        except Exception as exc:
            raise ExportError(f"ONNX conversion of {model.name} failed: {str(exc)[:2000]}") \
                from None
    return path.stat().st_size


def export_onnx_int8(float_onnx: Path, calibration: np.ndarray, path: Path,
                     per_channel: bool = True) -> int:
    """Static int8 quantisation of the float ONNX model in QDQ form, calibrated on training
    images (the same draw as the int8 LiteRT model)."""
    require("onnx", "ONNX int8 export")
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    name = _onnx_input_name(float_onnx)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration.astype(np.float32)[:, None])

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {name: row}

    with atomic_path(path, suffix=".onnx") as tmp, quiet_converter(), _quiet_stderr():
        try:
            quantize_static(str(float_onnx), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            per_channel=per_channel)
        except Exception as exc:
            raise ExportError(f"ONNX int8 quantisation of {float_onnx} failed: {str(exc)[:2000]}") \
                from None
    return path.stat().st_size


def export_coreml(model, path: Path) -> int:
    """A Core ML ML Program (.mlpackage, a folder), float16 compute as Core ML's default."""
    require("coreml", "Core ML export")
    with quiet_converter(), _quiet_stderr():
        import coremltools as ct

        try:
            converted = ct.convert(model, source="tensorflow", convert_to="mlprogram",
                                   inputs=[ct.TensorType(shape=(1, *model.input_shape[1:]))])
        except Exception as exc:
            raise ExportError(f"Core ML conversion of {model.name} failed: {str(exc)[:2000]}") \
                from None
    tmp = path.with_name(path.stem + ".tmp.mlpackage")  # coremltools insists on the suffix
    shutil.rmtree(tmp, ignore_errors=True)
    converted.save(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---- run -------------------------------------------------------------------------------------


def _litert_runner(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    from tinyvision.deploy.outputs import keras_output_order

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in keras_output_order(interpreter)]

    def run(images: np.ndarray) -> list[np.ndarray]:
        rows = []
        for image in images.astype(np.float32):
            interpreter.set_tensor(index, image[None])
            interpreter.invoke()
            rows.append([interpreter.get_tensor(i)[0].copy() for i in outputs])
        return [np.stack([r[k] for r in rows]) for k in range(len(outputs))]

    return run


def _onnx_runner(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> list[np.ndarray]:
        chunks = [session.run(None, {name: images[i:i + 64].astype(np.float32)})
                  for i in range(0, len(images), 64)]
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    return run


def _coreml_runner(path: Path):  # pragma: no cover - macOS only
    import coremltools as ct

    model = ct.models.MLModel(str(path))
    spec = model.get_spec()
    name = spec.description.input[0].name
    outputs = [o.name for o in spec.description.output]

    def run(images: np.ndarray) -> list[np.ndarray]:
        rows = [model.predict({name: image[None].astype(np.float32)}) for image in images]
        return [np.concatenate([np.asarray(r[o]) for r in rows]) for o in outputs]

    return run


# ---- the table -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportFormatSpec:
    """One export format beyond the int8 LiteRT model (the module docstring's table)."""

    name: str
    # (Keras model, export folder, calibration images, per-channel weights) -> bytes written
    write: Callable[[Any, Path, np.ndarray, bool], int]
    # file -> images (uint8 N,H,W,C) -> float outputs in the Keras order; None where the runtime
    # is not available here (Core ML off macOS)
    runner: Callable[[Path], Callable[[np.ndarray], list[np.ndarray]] | None]
    # what the outputs may differ from Keras's by, in output units (probabilities or box
    # fractions); None: judged by its metrics only (an int8 model)
    tolerance: float | None
    extra: str | None  # the pip extra holding its converter and runtime


def _write_onnx_int8(model, export_dir: Path, calibration: np.ndarray, per_channel: bool) -> int:
    float_onnx = export_dir / FORMAT_FILES["onnx"]
    if not float_onnx.exists():
        export_onnx(model, float_onnx)
    return export_onnx_int8(float_onnx, calibration, export_dir / FORMAT_FILES["onnx_int8"],
                            per_channel)


def _onnx_run(path: Path):
    require("onnx", "ONNX verification")
    return _onnx_runner(path)


# float16 weights move a partly trained net's probabilities by up to ~0.013 (0.0013 for the demo
# model); a broken conversion moves them by tenths
FORMATS: dict[str, ExportFormatSpec] = {
    "float16": ExportFormatSpec(
        "float16", lambda m, d, c, p: export_float16(m, d / FORMAT_FILES["float16"]),
        _litert_runner, 0.05, None),
    "onnx": ExportFormatSpec(
        "onnx", lambda m, d, c, p: export_onnx(m, d / FORMAT_FILES["onnx"]), _onnx_run, 1e-4,
        "onnx"),
    "onnx_int8": ExportFormatSpec("onnx_int8", _write_onnx_int8, _onnx_run, None, "onnx"),
    "coreml": ExportFormatSpec(
        "coreml", lambda m, d, c, p: export_coreml(m, d / FORMAT_FILES["coreml"]),
        lambda path: _coreml_runner(path) if platform.system() == "Darwin" else None, 0.05,
        "coreml"),
}


def check_formats(formats: list[str]) -> None:
    """Before any work: every format is known and its converter installed, else an ExportError
    naming the pip command (not after the training)."""
    for name in formats:
        if name == "int8":
            continue
        if name not in FORMATS:
            raise ExportError(f"export format {name!r} is unknown; choose from int8, "
                              f"{', '.join(FORMATS)}.")
        missing = missing_modules(FORMATS[name].extra)
        if missing:
            raise ExportError(f"export.formats has {name}, which needs {', '.join(missing)}: pip "
                              f"install 'tinyvision[{FORMATS[name].extra}]', or remove {name} "
                              "from export.formats.")


def _onnx_input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


@contextlib.contextmanager
def _quiet_stderr():
    """Converter chatter: stderr prints, and warnings of the root and coremltools loggers
    (onnxruntime's "consider pre-processing", coremltools' untested-version notes)."""
    loggers = [logging.getLogger(), logging.getLogger("coremltools")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
