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
from tinyvision.deploy.formats import FORMATS
from tinyvision.deploy.litert import export_int8
from tinyvision.deploy.runners import ReferenceRunner
from tinyvision.errors import VerifyError
from tinyvision.layout import FORMAT_FILES, PTQ_FILE, QAT_FILE
from tinyvision.evaluate.metrics import task_score
from tinyvision.models.outputs import split_outputs
from tinyvision.run.folder import RunDir

log = logging.getLogger("tinyvision")

KERAS_SAMPLE = 32  # images on which each format's outputs are compared with the Keras model's


def export_format(fmt: str, model, export_dir: Path, calibration: np.ndarray,
                  per_channel: bool) -> int:
    """Write one extra format into export/; returns its bytes."""
    return FORMATS[fmt].write(model, export_dir, calibration, per_channel)


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
        runner = FORMATS[fmt].runner(path)
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
            tolerance = FORMATS[fmt].tolerance
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


# ---- quantisation-aware fine-tuning ----------------------------------------------------------


def quantisation_aware(cfg: RunConfig, run: RunDir, data, model, calibration: np.ndarray,
                       per_channel: bool, min_images: int) -> dict:
    """export.qat: when post-training int8 loses more than export.qat_threshold accuracy to
    float on the val split (or always with `on`), fine-tune a copy of the float model with fake
    quantisation, convert it, and keep whichever int8 model scores better on val as
    model_int8.tflite (the other stays beside it: model_int8_ptq.tflite or _qat.tflite)."""
    import keras

    from tinyvision.models.inference import predict_scores
    from tinyvision.training.qat import qat_fine_tune

    if cfg.export.qat == "off":
        return {"ran": False, "reason": "export.qat: off"}
    val = data.indices("val")
    if len(val) == 0:
        return {"ran": False, "reason": "no val split to compare float and int8 on"}
    images, targets = np.asarray(data.cache.images[val]), data.manifest.label_matrix()
    task, n_classes = data.manifest.task, len(data.manifest.classes)

    def val_score(outputs) -> float:  # accuracy, or a box model's IoU score
        return task_score(targets[val], split_outputs(outputs, task, n_classes),
                          data.cache.boxes[val], task)

    # in batches: the whole split at once held every layer's activations of every image
    float_val = val_score(predict_scores(model, data.cache.images, val))
    ptq_val = val_score(ReferenceRunner(run.int8_model, n_classes).scores(images))
    result = {"float_val": float_val, "ptq_val": ptq_val}
    if cfg.export.qat == "auto" and float_val - ptq_val <= cfg.export.qat_threshold:
        return {**result, "ran": False,
                "reason": f"int8 loses {float_val - ptq_val:.4f} on val, within export.qat_threshold"}
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    boxes = data.cache.boxes if data.manifest.task == "detection" else None
    qat_fine_tune(copy, data.cache.images, data.indices("train"), targets, data.manifest.task,
                  cfg.train, cfg.export.qat_steps, cfg.export.qat_learning_rate,
                  cfg.train.batch_size, cfg.seed, boxes)
    qat_path = run.export_dir / QAT_FILE
    export_int8(copy, calibration, qat_path, per_channel, min_images)
    qat_val = val_score(ReferenceRunner(qat_path, n_classes).scores(images))
    result.update(ran=True, qat_val=qat_val, steps=cfg.export.qat_steps,
                  learning_rate=cfg.export.qat_learning_rate, used="qat" if qat_val > ptq_val
                  else "ptq")
    if result["used"] == "qat":
        run.int8_model.replace(run.export_dir / PTQ_FILE)
        qat_path.replace(run.int8_model)
    log.info("quantisation-aware fine-tuning: val %s float %.4f, post-training int8 %.4f, "
             "QAT int8 %.4f; model_int8.tflite is the %s model",
             "IoU score" if task == "detection" else "accuracy", float_val, ptq_val, qat_val,
             result["used"].upper())
    return result


def side_by_side(run: RunDir, images: np.ndarray, n_classes: int, score) -> dict | None:
    """Test metrics of the post-training and QAT int8 models, when QAT ran."""
    files = {"ptq_int8": run.export_dir / PTQ_FILE, "qat_int8": run.export_dir / QAT_FILE}
    if not any(path.exists() for path in files.values()):
        return None
    out = {}
    for name, path in files.items():
        chosen = path if path.exists() else run.int8_model
        runner = ReferenceRunner(chosen, n_classes)
        values = runner.scores(images)
        out[name] = score(values)
    return out
