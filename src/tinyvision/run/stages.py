"""The stages of a run, end to end: data -> train -> evaluate -> export -> verify -> report.

Each stage is a function over a run directory, so `tinyvision train` runs them all and
`tinyvision eval|export|verify RUN` reruns one on an earlier run. The CLI only parses and calls.
`STAGES` declares, in order, what each reads from and writes into the run folder (RunDir
properties); a test holds a finished run to it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyvision.config import RGB_ONLY_AUGMENT_OPS, RunConfig
from tinyvision.data.cache import DecodeSpec, ImageCache, build_cache
from tinyvision.data.color import resolve_color_mode
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources import build_manifest
from tinyvision.deploy.c_source import write_c_source
from tinyvision.deploy.formats import check_formats
from tinyvision.deploy.litert import balanced_draw, export_int8
from tinyvision.deploy.outputs import dequantize, snap_thresholds, tensor_quantization
from tinyvision.deploy.runners import ReferenceRunner
from tinyvision.deploy.verify import verify_int8
from tinyvision.errors import DataError
from tinyvision.evaluate.health import BOX_WARNING, box_baselines, box_warning, collapse_warning
from tinyvision.evaluate.tta import keras_scorer, tta_outputs
from tinyvision.files import atomic_path, atomic_write_json, atomic_write_text
from tinyvision.layout import FORMAT_FILES, THRESHOLDS_FILE
from tinyvision.models.outputs import ModelOutputs, class_task, output_kinds, split_outputs
from tinyvision.report.html import save_eval_scores, write_report
from tinyvision.run.device import (camera_boxes, camera_format, camera_inputs, export_device,
                                  verify_device)
from tinyvision.run.formats import (class_drops, export_format, quantisation_aware, side_by_side,
                                    verify_formats)
from tinyvision.run.folder import RunDir
from tinyvision.run.summary import headline, metric_delta, read_json
from tinyvision.training.recipes import apply_recipe

log = logging.getLogger("tinyvision")


@dataclass(frozen=True)
class Stage:
    """One stage: its function here, the RunDir paths it reads and those it writes (always; a
    stage may write more, e.g. export/ formats or thresholds, as the config asks)."""

    name: str
    function: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]


STAGES = (
    Stage("data", "prepare_data", ("config",), ("manifest", "bad_images", "config")),
    Stage("train", "train_stage", ("config", "manifest"),
          ("checkpoints", "best_weights", "log", "float_model")),
    Stage("evaluate", "evaluate_stage", ("float_model", "manifest"), ("metrics", "eval_scores")),
    Stage("export", "export_stage", ("float_model", "manifest"),
          ("int8_model", "c_header", "c_source", "app_dir")),
    Stage("verify", "verify_stage", ("int8_model", "metrics", "manifest"),
          ("verify", "int8_scores")),
    Stage("report", "report_stage", ("metrics", "verify", "log"), ("report",)),
)


@dataclass
class PreparedData:
    manifest: Manifest
    cache: ImageCache

    def indices(self, split: str) -> np.ndarray:
        """Sample indices of `split` whose image decoded."""
        return np.array([i for i, s in enumerate(self.manifest.samples)
                         if s.split == split and self.cache.valid[i]], np.int64)


def decode_spec(cfg: RunConfig) -> DecodeSpec:
    """How the run's images are decoded. An unresolved color_mode "auto" (a config used without
    `resolve_settings`) decodes as rgb, as the model is then built with three channels."""
    color_mode = "grayscale" if cfg.model.channels == 1 else "rgb"
    return DecodeSpec(tuple(cfg.model.input_size), color_mode, cfg.data.resize,
                      cfg.data.crop_to_box, cfg.data.crop_margin)


# ---- data ------------------------------------------------------------------------------------
def prepare_manifest(cfg: RunConfig, run: RunDir) -> Manifest:
    """Build the manifest from `data.source` and save it in the run."""
    manifest = build_manifest(cfg.data, cfg.seed, cfg.model.task)
    manifest.save(run.manifest)
    return manifest


def prepare_data(cfg: RunConfig, run: RunDir, manifest: Manifest | None = None,
                 progress: bool = True) -> PreparedData:
    """Build (or load) the manifest, save it in the run, and open or build the image cache."""
    if manifest is None:
        manifest = prepare_manifest(cfg, run)
    cache = build_cache(manifest, decode_spec(cfg), cfg.cache_dir, cfg.data.workers, progress)
    atomic_write_text(run.bad_images, "".join(f"{path}\t{reason}\n" for path, reason in cache.bad))
    data = PreparedData(manifest, cache)
    if len(data.indices("train")) == 0:
        raise DataError("No decodable training images; see bad_images.txt in the run directory.")
    return data


def resolve_settings(cfg: RunConfig, manifest: Manifest) -> tuple[RunConfig, list[str]]:
    """The config with `model.color_mode: auto` and `train.recipe` resolved from the training
    images, and one line on each choice for the console."""
    extra, lines = {}, []
    if cfg.model.color_mode == "auto":
        rgb_only = [op.op for op in cfg.train.augment if op.op in RGB_ONLY_AUGMENT_OPS]
        mode, reason = resolve_color_mode(manifest, cfg.seed, rgb_only)
        extra["model.color_mode"] = mode
        lines.append(f"color_mode: {mode} ({reason})")
    n_train = sum(1 for s in manifest.samples if s.split == "train")
    cfg, recipe = apply_recipe(cfg, n_train, manifest.task, extra)
    return cfg, [*lines, recipe.describe()]


# ---- train -----------------------------------------------------------------------------------
def train_data(data: PreparedData):
    """What the trainer (and lr-find) take: cached images, targets, splits, boxes for detection."""
    from tinyvision.training.trainer import TrainData

    boxes = data.cache.boxes if data.manifest.task == "detection" else None
    return TrainData(data.cache.images, data.manifest.label_matrix(), data.indices("train"),
                     data.indices("val"), data.indices("test"), data.manifest.classes,
                     data.manifest.task, boxes)


def train_stage(cfg: RunConfig, run: RunDir, data: PreparedData, console=None,
                resume: bool = False, callbacks=()):
    """Two-stage training (continuing from the last saved epoch with `resume`); saves the float
    model as export/model_float.keras."""
    from tinyvision.training.trainer import train_model

    result = train_model(cfg, train_data(data), run, console, resume=resume, callbacks=callbacks,
                         judge_start=lambda model, _: _judge_start(data, model))
    with atomic_path(run.float_model, suffix=".keras") as tmp:
        result.model.save(tmp)
    return result


def _judge_start(data: PreparedData, model) -> dict:
    """The start check (train.start_check): the model after its head stage, on the val split."""
    from tinyvision.evaluate.health import start_verdict
    from tinyvision.models.inference import predict_scores

    val = data.indices("val")
    if not len(val):
        return {"useful": True, "good": True, "message": "no val split to judge the start on"}
    outputs = _split(data, predict_scores(model, data.cache.images, val))
    boxes = data.cache.boxes
    return start_verdict(data.manifest.label_matrix()[val], outputs, data.manifest.task,
                         boxes[data.indices("train")], boxes[val])


# ---- evaluate --------------------------------------------------------------------------------
def evaluate_stage(cfg: RunConfig, run: RunDir, data: PreparedData, model=None,
                   trust_model_code: bool = False) -> dict:
    """Float model metrics on the test split (val when there is no test split) -> metrics.json.

    Multi-label runs first tune per-class thresholds on the val split (F-beta, `evaluate.beta`)
    and save them as thresholds.json in the run and in export/. `evaluate.tta` averages each
    image's scores with its mirror image's. Detection runs add box metrics under "boxes", with
    the constant answers the box must beat. metrics.json also lists the worst predictions (and
    the worst boxes); eval_scores.npz keeps the outputs for the report.
    """
    if model is None:
        model = run.load_float_model(trust_model_code)
    manifest, tta = data.manifest, cfg.evaluate.tta
    thresholds = _tune_thresholds(cfg, run, data, model) if manifest.task == "multilabel" else None
    split, indices = _eval_split(data)
    outputs = _float_outputs(model, data, indices, tta)
    metrics = _output_metrics(cfg, data, indices, outputs, thresholds)
    metrics = {"split": split, "images": int(len(indices)), "tta": tta, **metrics}
    save_eval_scores(run, split, indices, outputs.scores, outputs.boxes)
    warnings = _health_warnings(cfg, data, model, split, indices, outputs, thresholds)
    atomic_write_json(run.metrics, {"float": metrics,
                                    **_worst(cfg, data, indices, outputs, thresholds),
                                    "warnings": warnings})
    return {**metrics, "warnings": warnings}


def _worst(cfg: RunConfig, data: PreparedData, indices: np.ndarray, outputs: ModelOutputs,
           thresholds: np.ndarray | None) -> dict:
    """metrics.json's `worst_predictions` (most confident wrong classes, per class) and, for a box
    model, `worst_boxes` (lowest IoU first)."""
    from tinyvision.evaluate.metrics import worst_boxes, worst_predictions

    manifest = data.manifest
    paths = [manifest.samples[i].path for i in indices]
    out = {}
    if outputs.scores is not None:
        out["worst_predictions"] = worst_predictions(
            manifest.label_matrix()[indices], outputs.scores, paths, manifest.classes,
            class_task(manifest.task), cfg.evaluate.worst_n, thresholds)
    if outputs.boxes is not None:
        out["worst_boxes"] = worst_boxes(data.cache.boxes[indices], outputs.boxes, paths,
                                         cfg.evaluate.worst_n)
    return out


def _health_warnings(cfg: RunConfig, data: PreparedData, model, split: str,
                     indices: np.ndarray, outputs: ModelOutputs,
                     thresholds: np.ndarray | None) -> list[dict]:
    """The "learnt nothing" checks (evaluate/health.py), each logged as it is found: the class
    collapse on the evaluation split or else the val split, and the box against the constant
    answers on the evaluation split."""
    labels, classes = data.manifest.label_matrix(), data.manifest.classes
    task = class_task(data.manifest.task)
    found = []
    if outputs.scores is not None:
        collapse = collapse_warning(labels[indices], outputs.scores, classes, task, split,
                                    thresholds)
        val = data.indices("val")
        if collapse is None and split != "val" and len(val):
            val_scores = _float_outputs(model, data, val, cfg.evaluate.tta).scores
            collapse = collapse_warning(labels[val], val_scores, classes, task, "val", thresholds)
        found.append(collapse)
    if outputs.boxes is not None:
        found.append(box_warning(data.cache.boxes[data.indices("train")],
                                 data.cache.boxes[indices], outputs.boxes, split))
    found = [warning for warning in found if warning is not None]
    for warning in found:
        log.warning(warning["message"])
    return found


def _output_metrics(cfg: RunConfig, data: PreparedData, indices: np.ndarray, outputs,
                    thresholds: np.ndarray | None, true_boxes: np.ndarray | None = None) -> dict:
    """Metrics of a model's outputs on `indices`: classification metrics of the class output,
    and box metrics ("boxes", with the constant answers as "baselines") of the box output
    against the cached boxes (or `true_boxes`, e.g. the boxes as a camera frame shows them)."""
    from tinyvision.evaluate.metrics import box_metrics, classification_metrics

    outputs = _split(data, outputs)
    y_true = data.manifest.label_matrix()[indices]
    metrics = {}
    if outputs.scores is not None:
        metrics = classification_metrics(y_true, outputs.scores, data.manifest.classes,
                                         class_task(data.manifest.task), thresholds=thresholds,
                                         beta=cfg.evaluate.beta)
    if outputs.boxes is not None:
        truth = data.cache.boxes[indices] if true_boxes is None else np.asarray(true_boxes)
        has = np.isfinite(truth).all(axis=1)  # images of a class without a box have none
        if has.any():
            scores = None if outputs.scores is None else outputs.scores[has]
            metrics["boxes"] = box_metrics(
                truth[has], outputs.boxes[has],
                *((None, None, None) if scores is None else
                  (y_true[has].argmax(axis=1), scores.argmax(axis=1), scores.max(axis=1))))
            metrics["boxes"]["baselines"] = box_baselines(
                data.cache.boxes[data.indices("train")], truth[has])
    return metrics


def _split(data: PreparedData, outputs) -> ModelOutputs:
    return split_outputs(outputs, data.manifest.task, len(data.manifest.classes))


def _float_outputs(model, data: PreparedData, indices: np.ndarray, tta: bool) -> ModelOutputs:
    """Float model outputs on `data`'s images `indices`; with `tta`, averaged with the mirror
    images."""
    from tinyvision.models.inference import predict_scores

    images = data.cache.images
    if not tta:
        return _split(data, predict_scores(model, images, indices))
    kinds = output_kinds(data.manifest.task, len(data.manifest.classes))
    return _split(data, tta_outputs(keras_scorer(model), np.asarray(images[indices]),
                                    kinds=kinds))


def _tune_thresholds(cfg: RunConfig, run: RunDir, data: PreparedData, model) -> np.ndarray:
    """Multi-label thresholds tuned on the val split, saved in the run and export/ folders."""
    from tinyvision.evaluate.thresholds import (DEFAULT_THRESHOLD, save_thresholds,
                                                tune_thresholds)

    val, classes = data.indices("val"), data.manifest.classes
    if len(val):
        scores = _float_outputs(model, data, val, cfg.evaluate.tta).scores
        thresholds = tune_thresholds(data.manifest.label_matrix()[val], scores, cfg.evaluate.beta)
    else:
        log.warning("no validation images to tune multi-label thresholds on; every class keeps "
                    "%g (set data.val_fraction above 0 to tune them)", DEFAULT_THRESHOLD)
        thresholds = np.full(len(classes), DEFAULT_THRESHOLD)
    for folder in (run.root, run.export_dir):
        save_thresholds(folder / THRESHOLDS_FILE, classes, thresholds, cfg.evaluate.beta)
    return thresholds


def run_thresholds(run: RunDir, manifest: Manifest) -> np.ndarray | None:
    """The run's tuned multi-label thresholds (None for multi-class); 0.5 with a warning when
    the run has no thresholds.json yet."""
    from tinyvision.evaluate.thresholds import DEFAULT_THRESHOLD, load_thresholds

    if manifest.task != "multilabel":
        return None
    path = run.root / THRESHOLDS_FILE
    if not path.exists():
        log.warning("%s does not exist; every class keeps threshold %g. Run `tinyvision eval %s` "
                    "to tune them.", path, DEFAULT_THRESHOLD, run.root)
        return np.full(len(manifest.classes), DEFAULT_THRESHOLD)
    return load_thresholds(path, manifest.classes).as_array()


def _eval_split(data: PreparedData) -> tuple[str, np.ndarray]:
    for split in ("test", "val"):
        indices = data.indices(split)
        if len(indices):
            return split, indices
    raise DataError("Neither a test nor a val split has images to evaluate on; set "
                    "data.test_fraction above 0 or add a test/ folder.")


# ---- export ----------------------------------------------------------------------------------
def export_stage(cfg: RunConfig, run: RunDir, data: PreparedData, model=None,
                 trust_model_code: bool = False) -> dict:
    """int8 LiteRT model calibrated on training images, plus its C source/header pair."""
    if model is None:
        model = run.load_float_model(trust_model_code)
    train = data.indices("train")
    chosen, calibration = _calibration_images(cfg, data)
    start = time.perf_counter()
    per_channel = cfg.export.weight_quantization == "per_channel"
    min_images = min(cfg.train.batch_size, len(train))
    model_bytes = export_int8(model, calibration, run.int8_model, per_channel, min_images)
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
    return {"int8_bytes": len(model_bytes), "float_bytes": run.float_model.stat().st_size,
            "calibration_images": int(len(chosen)), "quantization": quantization,
            "weight_quantization": cfg.export.weight_quantization, "formats": formats, "qat": qat,
            **device,
            "seconds": round(time.perf_counter() - start, 1)}


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
    split, indices = _eval_split(data)
    thresholds = run_thresholds(run, data.manifest)
    checked = verify_formats(cfg.model_copy(update={"export": wanted}), run,
                             np.asarray(data.cache.images[indices]), model,
                             _headline_scorer(cfg, data, indices, thresholds))
    return cfg.model_copy(update={"export": listed}), {"split": split, "formats": checked}


def _calibration_images(cfg: RunConfig, data: PreparedData) -> tuple[np.ndarray, np.ndarray]:
    """(indices, uint8 images) of the int8 calibration draw: class-balanced from train."""
    chosen = balanced_draw(data.manifest.label_matrix(), data.indices("train"),
                           cfg.export.representative_samples, cfg.seed)
    if len(chosen) < cfg.export.representative_samples:
        log.warning("export.representative_samples=%d but the training split has %d images; "
                    "calibrating on all of them", cfg.export.representative_samples, len(chosen))
    return chosen, np.asarray(data.cache.images[chosen])


def _headline_scorer(cfg: RunConfig, data: PreparedData, indices: np.ndarray, thresholds):
    """outputs of a model on `indices` -> their headline metrics (other formats, QAT)."""
    return lambda outputs: headline(_output_metrics(cfg, data, indices, outputs, thresholds))


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
                 trust_model_code: bool = False) -> dict:
    """int8 model on TFLM (sample) and LiteRT reference kernels (whole split): metrics, arena;
    the device side (run/device.py) and every other export format on its runtime.

    Metrics use the run's multi-label thresholds (snapped to the int8 output grid, as the
    exported C arrays are) and, with `evaluate.tta`, flip averaging on the reference kernels;
    a box model adds box metrics and the check against the constant boxes. `model`: the float
    Keras model, the reference of the other formats (loaded from the run when needed and not
    given)."""
    model_path = run.require(run.int8_model, "tinyvision export")
    split, indices = _eval_split(data)
    images = np.asarray(data.cache.images[indices])
    task, n_classes = data.manifest.task, len(data.manifest.classes)
    result = verify_int8(model_path, images, cfg.verify.tflm_samples, cfg.verify.max_arena_bytes,
                         cfg.seed, n_classes=n_classes)
    outputs, thresholds = result.pop("scores"), run_thresholds(run, data.manifest)
    c_thresholds = None if thresholds is None else thresholds.tolist()  # as export wrote them
    # verify_int8 scored the split already; a runner of our own only for flips or the output grid
    runner = (ReferenceRunner(model_path, n_classes)
              if cfg.evaluate.tta or thresholds is not None else None)
    if cfg.evaluate.tta:
        outputs = tta_outputs(runner.scores, images, ("horizontal",),
                              kinds=output_kinds(task, n_classes))
    outputs = _split(data, outputs)
    if thresholds is not None:
        thresholds = snap_thresholds(thresholds, runner.output_q)
    metrics = _output_metrics(cfg, data, indices, outputs, thresholds)
    save_eval_scores(run, split, indices, outputs.scores, outputs.boxes, kind="int8")
    report = {"split": split, "tta": cfg.evaluate.tta, **result, "metrics": metrics}
    float_metrics = _read_float_metrics(run)
    if float_metrics:
        report["delta"] = metric_delta(float_metrics, metrics)
    warnings = []
    float_flagged = any(w["code"] == BOX_WARNING for w in (read_json(run.metrics) or {}).get(
        "warnings", []))
    if outputs.boxes is not None and not float_flagged:  # said once: int8 lost what float had
        warnings.append(box_warning(data.cache.boxes[data.indices("train")],
                                    data.cache.boxes[indices], outputs.boxes, split,
                                    "int8 model"))
    report["class_drops"] = class_drops(float_metrics, metrics, cfg.export.max_class_drop)
    if report["class_drops"]:
        listed = ", ".join(f"{d['class']} {d['float_f1']:.3f} -> {d['int8_f1']:.3f}"
                           for d in report["class_drops"])
        warnings.append({"code": "int8_class_drop", "message": (
            f"int8 loses more than {cfg.export.max_class_drop:g} F1 on: {listed}. Try "
            "export.weight_quantization: per_channel, more export.representative_samples, or "
            "a longer training")})
    report["warnings"] = [w for w in warnings if w is not None]
    for warning in report["warnings"]:
        log.warning("%s", warning["message"])
    if len(cfg.export.formats) > 1:
        if model is None:
            model = run.load_float_model(trust_model_code)
        report["formats"] = verify_formats(
            cfg, run, images, model,
            _headline_scorer(cfg, data, indices, thresholds))
    both = side_by_side(run, images, n_classes, _headline_scorer(cfg, data, indices, thresholds))
    if both is not None:
        report["qat"] = {"float": headline(float_metrics or {}), **both}
    samples = [data.manifest.samples[i] for i in indices]
    report.update(verify_device(cfg, run, [s.path for s in samples], data.manifest.classes,
                                task, result["arena_bytes"], c_thresholds))
    if cfg.deploy.camera is not None:
        report["camera"] = _camera_skew(cfg, data, indices, samples, model_path, thresholds,
                                        metrics)
    atomic_write_json(run.verify, report)
    return report


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
    metrics = _output_metrics(cfg, data, indices[usable], outputs, thresholds, true_boxes)
    skew = {"camera": camera_format(cfg).describe(), "images": int(usable.sum()),
            "metrics": headline(metrics), "training_path": headline(training_path)}
    skew["delta"] = metric_delta(training_path, metrics)
    return skew


def _read_float_metrics(run: RunDir) -> dict | None:
    return (read_json(run.metrics) or {}).get("float")


# ---- report ----------------------------------------------------------------------------------
def report_stage(cfg: RunConfig, run: RunDir, data: PreparedData) -> Path:
    """report.html: a self-contained page on the run (after evaluate; export, verify and
    summary.json add their sections when present). Returns its path."""
    return write_report(cfg, run, data.manifest, data.cache)
