"""The export and verify stages of a run: the int8 model (and other formats) from the float model,
then the int8 model proved on TFLM and scored, with the device side (run/device.py).

    export:  calibration draw -> int8 LiteRT (or the QAT model) -> C source -> other formats
             -> ops, arena, export/app/, board fit                        => ExportResult
    verify:  int8 on TFLM (sample) == reference kernels (whole split) -> metrics, delta, warnings
             -> other formats on their runtimes -> app, firmware, fit -> camera skew
                                                                          => VerifyReport (verify.json)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from tinyvision.config import RunConfig
from tinyvision.data.manifest import Manifest
from tinyvision.deploy.c_source import write_c_source
from tinyvision.deploy.formats import check_formats
from tinyvision.deploy.litert import balanced_draw, export_int8
from tinyvision.deploy.outputs import dequantize, snap_thresholds, tensor_quantization
from tinyvision.deploy.runners import ReferenceRunner
from tinyvision.deploy.verify import verify_int8
from tinyvision.evaluate.health import BOX_WARNING, box_warning
from tinyvision.evaluate.tta import tta_outputs
from tinyvision.files import atomic_write_text
from tinyvision.layout import FORMAT_FILES, THRESHOLDS_FILE
from tinyvision.models.outputs import ModelOutputs, output_kinds
from tinyvision.records import Evaluation, ExportResult, VerifyReport
from tinyvision.report.html import save_eval_scores
from tinyvision.run.device import camera_boxes, camera_format, camera_inputs, export_device, \
    verify_device
from tinyvision.run.folder import RunDir
from tinyvision.run.formats import (class_drops, export_format, quantisation_aware, side_by_side,
                                    verify_formats)
from tinyvision.run.prepared import PreparedData, eval_split
from tinyvision.run.scoring import (headline_scorer, model_outputs,
                                    output_metrics, run_thresholds)
from tinyvision.run.summary import headline, metric_delta

log = logging.getLogger("tinyvision")


# ---- export ----------------------------------------------------------------------------------
def export_stage(cfg: RunConfig, run: RunDir, data: PreparedData, model=None,
                 trust_model_code: bool = False) -> ExportResult:
    """int8 LiteRT model calibrated on training images, its C source/header pair, the other
    formats of export.formats, and the device side (ops, arena, export/app/, board fit)."""
    if model is None:
        model = run.load_float_model(trust_model_code)
    train = data.indices("train")
    chosen, calibration = _calibration_images(cfg, data)
    start = time.perf_counter()
    per_channel = cfg.export.weight_quantization == "per_channel"
    min_images = min(cfg.train.batch_size, len(train))
    # a training split smaller than the draw was said already (_calibration_images)
    model_bytes = export_int8(model, calibration, run.int8_model, per_channel, min_images,
                              warn_few=len(chosen) >= cfg.export.representative_samples)
    qat = quantisation_aware(cfg, run, data, model, calibration, per_channel, min_images)
    if qat.get("used") == "qat":
        model_bytes = run.int8_model.read_bytes()
    n_classes = len(data.manifest.classes)
    quantization = tensor_quantization(model_bytes, n_classes,
                                       output_kinds(data.manifest.task, n_classes))
    thresholds = _export_thresholds(run, data.manifest)
    write_c_source(model_bytes, run.c_header, run.c_source, cfg.export.c_array_name, quantization,
                   data.manifest.classes, thresholds)
    formats = {"int8": {"file": FORMAT_FILES["int8"], "bytes": len(model_bytes)}}
    for fmt in cfg.export.formats[1:]:
        formats[fmt] = {"file": FORMAT_FILES[fmt],
                        "bytes": export_format(fmt, model, run.export_dir, calibration,
                                               per_channel)}
    device = export_device(cfg, run, model, model_bytes, quantization,
                           np.asarray(data.cache.images[chosen[0]]))
    return ExportResult(
        int8_bytes=len(model_bytes), float_bytes=run.float_model.stat().st_size,
        calibration_images=int(len(chosen)), quantization=quantization,
        weight_quantization=cfg.export.weight_quantization, formats=formats, qat=qat,
        ops=device.ops, macs=device.macs, arena_bytes=device.arena_bytes, fit=device.fit,
        seconds=round(time.perf_counter() - start, 1))


def export_formats(cfg: RunConfig, run: RunDir, data: PreparedData, model,
                   formats: list[str]) -> tuple[RunConfig, dict]:
    """More export formats for a finished run, without training again: each written into export/
    and checked on its runtime (outputs vs the Keras model, metrics on the evaluation split). The
    returned config lists them in export.formats (the caller saves it, so that `verify` checks
    them again); the int8 model is left as it is."""
    check_formats(formats)
    # the config's own validator: int8 first, each format once
    wanted = type(cfg.export).model_validate({**cfg.export.model_dump(), "formats": formats})
    listed = type(cfg.export).model_validate({**cfg.export.model_dump(),
                                              "formats": [*cfg.export.formats, *formats]})
    _, calibration = _calibration_images(cfg, data)
    per_channel = cfg.export.weight_quantization == "per_channel"
    for fmt in wanted.formats[1:]:
        export_format(fmt, model, run.export_dir, calibration, per_channel)
    split, indices = eval_split(data)
    thresholds = run_thresholds(run, data.manifest)
    checked = verify_formats(cfg.model_copy(update={"export": wanted}), run,
                             np.asarray(data.cache.images[indices]), model,
                             headline_scorer(cfg, data, indices, thresholds))
    return cfg.model_copy(update={"export": listed}), {"split": split, "formats": checked}


def _calibration_images(cfg: RunConfig, data: PreparedData) -> tuple[np.ndarray, np.ndarray]:
    """(indices, uint8 images) of the int8 calibration draw: class-balanced from train."""
    chosen = balanced_draw(data.manifest.label_matrix(), data.indices("train"),
                           cfg.export.representative_samples, cfg.seed)
    if len(chosen) < cfg.export.representative_samples:
        log.warning("export.representative_samples=%d but the training split has %d images; "
                    "calibrating on all of them", cfg.export.representative_samples, len(chosen))
    return chosen, np.asarray(data.cache.images[chosen])


def _export_thresholds(run: RunDir, manifest: Manifest) -> list[float] | None:
    """Multi-label: the run's thresholds, copied to export/thresholds.json; None for multi-class."""
    thresholds = run_thresholds(run, manifest)
    if thresholds is None:
        return None
    if (run.root / THRESHOLDS_FILE).exists():
        atomic_write_text(run.export_dir / THRESHOLDS_FILE, (run.root / THRESHOLDS_FILE).read_text())
    return thresholds.tolist()


# ---- verify ----------------------------------------------------------------------------------
def verify_stage(cfg: RunConfig, run: RunDir, data: PreparedData, model=None,
                 trust_model_code: bool = False) -> VerifyReport:
    """int8 model on TFLM (sample) and LiteRT reference kernels (whole split): metrics, arena;
    the device side (run/device.py) and every other export format on its runtime; written as
    verify.json.

    Metrics use the run's multi-label thresholds (snapped to the int8 output grid, as the
    exported C arrays are) and, with `evaluate.tta`, flip averaging on the reference kernels;
    a box model adds box metrics and the check against the constant boxes. `model`: the float
    Keras model, the reference of the other formats (loaded from the run when needed and not
    given)."""
    model_path = run.require(run.int8_model, "tinyvision export")
    split, indices = eval_split(data)
    images = np.asarray(data.cache.images[indices])
    raw, report = verify_int8(model_path, images, cfg.verify.tflm_samples,
                              cfg.verify.max_arena_bytes, cfg.seed,
                              n_classes=len(data.manifest.classes))
    thresholds = run_thresholds(run, data.manifest)
    c_thresholds = None if thresholds is None else thresholds.tolist()  # as export wrote them
    outputs, thresholds = _int8_outputs(cfg, data, model_path, images, raw, thresholds)
    metrics = output_metrics(cfg, data, indices, outputs, thresholds)
    save_eval_scores(run, split, indices, outputs.scores, outputs.boxes, kind="int8")
    evaluation = Evaluation.read(run.metrics)  # the float model's: read once
    float_metrics = evaluation.float_metrics if evaluation else None
    report.split, report.tta, report.metrics = split, cfg.evaluate.tta, metrics
    if float_metrics:
        report.delta = metric_delta(float_metrics, metrics)
    report.class_drops = class_drops(float_metrics, metrics, cfg.export.max_class_drop)
    report.warnings = _int8_warnings(cfg, data, split, indices, outputs, report.class_drops,
                                     evaluation.warnings if evaluation else [])
    scorer = headline_scorer(cfg, data, indices, thresholds)
    if len(cfg.export.formats) > 1:
        if model is None:
            model = run.load_float_model(trust_model_code)
        report.formats = verify_formats(cfg, run, images, model, scorer)
    both = side_by_side(run, images, len(data.manifest.classes), scorer)
    if both is not None:
        report.qat = {"float": headline(float_metrics or {}), **both}
    samples = [data.manifest.samples[i] for i in indices]
    verify_device(cfg, run, report, [s.path for s in samples], data.manifest.classes,
                  data.manifest.task, c_thresholds)
    if cfg.deploy.camera is not None:
        report.camera = _camera_skew(cfg, data, indices, samples, model_path, thresholds, metrics)
    report.write(run.verify)
    return report


def _int8_outputs(cfg: RunConfig, data: PreparedData, model_path: Path, images: np.ndarray, raw,
                  thresholds: np.ndarray | None) -> tuple[ModelOutputs, np.ndarray | None]:
    """The int8 model's outputs on the split (flip-averaged with `evaluate.tta`) and the
    multi-label thresholds snapped to its output grid, as the exported C arrays hold them."""
    task, n_classes = data.manifest.task, len(data.manifest.classes)
    # verify_int8 scored the split already; a runner of our own only for flips or the output grid
    runner = (ReferenceRunner(model_path, n_classes)
              if cfg.evaluate.tta or thresholds is not None else None)
    if cfg.evaluate.tta:
        raw = tta_outputs(runner.scores, images, ("horizontal",),
                          kinds=output_kinds(task, n_classes))
    if thresholds is not None:
        thresholds = snap_thresholds(thresholds, runner.output_q)
    return model_outputs(data, raw), thresholds


def _int8_warnings(cfg: RunConfig, data: PreparedData, split: str, indices: np.ndarray,
                   outputs: ModelOutputs, drops: list[dict], float_warnings: list[dict]
                   ) -> list[dict]:
    """What the int8 model lost, each logged: a box no better than the constant (unless the
    float model was already flagged, in `float_warnings`: said once), classes whose F1 fell by
    more than export.max_class_drop."""
    warnings = []
    float_flagged = any(w["code"] == BOX_WARNING for w in float_warnings)
    if outputs.boxes is not None and not float_flagged:
        warnings.append(box_warning(data.cache.boxes[data.indices("train")],
                                    data.cache.boxes[indices], outputs.boxes, split,
                                    "int8 model"))
    if drops:
        listed = ", ".join(f"{d['class']} {d['float_f1']:.3f} -> {d['int8_f1']:.3f}"
                           for d in drops)
        warnings.append({"code": "int8_class_drop", "message": (
            f"int8 loses more than {cfg.export.max_class_drop:g} F1 on: {listed}. Try "
            "export.weight_quantization: per_channel, more export.representative_samples, or "
            "a longer training")})
    warnings = [w for w in warnings if w is not None]
    for warning in warnings:
        log.warning("%s", warning["message"])
    return warnings


def _camera_skew(cfg: RunConfig, data: PreparedData, indices: np.ndarray, samples: list,
                 model_path: Path, thresholds, training_path: dict) -> dict:
    """Train/serve skew: the int8 model on the test images seen through deploy.camera (rendered
    into frames, then the camera preprocessing) vs on the training path's images. Boxes are
    judged against the true boxes as the frame shows them (the camera's geometry)."""
    n_classes = len(data.manifest.classes)
    runner = ReferenceRunner(model_path, n_classes)
    paths = [s.path for s in samples]
    inputs, usable = camera_inputs(cfg, tensor_quantization(model_path, n_classes), paths)
    outputs = [dequantize(o, q) for o, q in zip(runner.run_all(inputs[usable]), runner.output_qs)]
    true_boxes = None
    if "box" in output_kinds(data.manifest.task, n_classes):
        true_boxes = camera_boxes(cfg, [s for s, ok in zip(samples, usable) if ok])
    metrics = output_metrics(cfg, data, indices[usable], outputs, thresholds, true_boxes)
    skew = {"camera": camera_format(cfg).describe(), "images": int(usable.sum()),
            "metrics": headline(metrics), "training_path": headline(training_path)}
    skew["delta"] = metric_delta(training_path, metrics)
    return skew
