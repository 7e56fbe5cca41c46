"""The other export formats of a run (export.formats) and their checks, and the per-class float vs
int8 comparison.

    export:  float16 / onnx / onnx_int8 / coreml files in export/, beside the int8 model
    verify:  each on its runtime: outputs vs the Keras model (within a tolerance for the float
             formats) and the metrics on the evaluation split; Core ML only on macOS
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tinyvision.config import RunConfig
from tinyvision.deploy.formats import (FORMAT_FILES, TOLERANCE, export_coreml, export_float16,
                                       export_onnx, export_onnx_int8, format_runner)
from tinyvision.errors import VerifyError
from tinyvision.run.folder import RunDir

log = logging.getLogger("tinyvision")

KERAS_SAMPLE = 32  # images on which each format's outputs are compared with the Keras model's


def export_format(fmt: str, model, export_dir: Path, calibration: np.ndarray,
                  per_channel: bool) -> int:
    """Write one extra format into export/; returns its bytes."""
    path = export_dir / FORMAT_FILES[fmt]
    if fmt == "float16":
        return export_float16(model, path)
    if fmt == "onnx":
        return export_onnx(model, path)
    if fmt == "onnx_int8":
        float_onnx = export_dir / FORMAT_FILES["onnx"]
        if not float_onnx.exists():
            export_onnx(model, float_onnx)
        return export_onnx_int8(float_onnx, calibration, path, per_channel)
    return export_coreml(model, path)


def verify_formats(cfg: RunConfig, run: RunDir, images: np.ndarray, keras_model, score) -> dict:
    """Each extra format on its runtime: {format: {file, bytes, metrics, max_abs_diff, ...}}.

    `score(outputs)` turns a format's outputs on `images` into metrics; the Keras model's outputs
    on the first images are the reference for the float formats' tolerance."""
    results: dict = {}
    sample = images[:KERAS_SAMPLE].astype(np.float32)
    keras_out = keras_model(sample, training=False) if keras_model is not None else None
    keras_out = [np.asarray(o) for o in (keras_out if isinstance(keras_out, (list, tuple))
                                         else [keras_out])] if keras_out is not None else None
    for fmt in cfg.export.formats[1:]:
        path = run.export_dir / FORMAT_FILES[fmt]
        if not path.exists():
            raise VerifyError(f"{path} is missing: run `tinyvision export {run.root}` first.")
        entry: dict = {"file": FORMAT_FILES[fmt], "bytes": _size(path)}
        runner = format_runner(fmt, path)
        if runner is None:
            entry.update(verified=False, note="Core ML models run only on macOS; the .mlpackage "
                                              "was exported and not run here.")
            results[fmt] = entry
            continue
        outputs = runner(images)
        if keras_out is not None:
            diff = max(float(np.max(np.abs(o[:len(sample)] - k))) for o, k in
                       zip(outputs, keras_out))
            entry["max_abs_diff"] = diff
            tolerance = TOLERANCE.get(fmt)
            if tolerance is not None:
                entry["tolerance"] = tolerance
                if diff > tolerance:
                    raise VerifyError(f"{fmt} ({path.name}) outputs differ from the Keras model's "
                                      f"by up to {diff:.3g}, over the {tolerance:g} allowed.")
        entry.update(verified=True, metrics=score(outputs[0] if len(outputs) == 1
                                                  else tuple(outputs)))
        results[fmt] = entry
    return results


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def class_drops(float_metrics: dict | None, int8_metrics: dict, threshold: float) -> list[dict]:
    """Classes whose F1 falls more than `threshold` from float to int8, worst first."""
    if not float_metrics:
        return []
    drops = []
    for name, row in int8_metrics.get("per_class", {}).items():
        before = (float_metrics.get("per_class", {}).get(name) or {}).get("f1")
        if before is not None and before - row["f1"] > threshold:
            drops.append({"class": name, "float_f1": before, "int8_f1": row["f1"],
                          "drop": before - row["f1"]})
    return sorted(drops, key=lambda d: -d["drop"])
