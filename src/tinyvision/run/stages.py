"""The stages of a run, end to end: data -> train -> evaluate -> export -> verify -> report.

Each stage is a function over a run directory, so `tinyvision train` runs them all and
`tinyvision eval|export|verify RUN` reruns one on an earlier run. The CLI only parses and calls.
`STAGES` declares, in order, what each reads from and writes into the run folder (RunDir
properties); a test holds a finished run to it. The data stage lives in run/prepared.py, export
and verify in run/deploy_stages.py, the scoring they share in run/scoring.py; train, evaluate
and report here, and every stage function is importable from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyvision.config import RunConfig
from tinyvision.evaluate.health import box_warning, collapse_warning
from tinyvision.files import atomic_path
from tinyvision.layout import THRESHOLDS_FILE
from tinyvision.models.outputs import ModelOutputs, class_task
from tinyvision.records import Evaluation
from tinyvision.report.html import save_eval_scores, write_report
from tinyvision.run.deploy_stages import export_formats, export_stage, verify_stage
from tinyvision.run.folder import RunDir
from tinyvision.run.prepared import (PreparedData, decode_spec, eval_split, prepare_data,
                                     prepare_manifest, resolve_settings, train_data)
from tinyvision.run.scoring import float_outputs, model_outputs, output_metrics, run_thresholds

__all__ = ["STAGES", "PreparedData", "Stage", "decode_spec", "evaluate_stage", "export_formats",
           "export_stage", "prepare_data", "prepare_manifest", "report_stage", "resolve_settings",
           "run_thresholds", "train_data", "train_stage", "verify_stage"]

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


# ---- train -----------------------------------------------------------------------------------
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
    outputs = model_outputs(data, predict_scores(model, data.cache.images, val))
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
    split, indices = eval_split(data)
    outputs = float_outputs(model, data, indices, tta)
    metrics = output_metrics(cfg, data, indices, outputs, thresholds)
    metrics = {"split": split, "images": int(len(indices)), "tta": tta, **metrics}
    save_eval_scores(run, split, indices, outputs.scores, outputs.boxes)
    warnings = _health_warnings(cfg, data, model, split, indices, outputs, thresholds)
    Evaluation(float_metrics=metrics, warnings=warnings,
               **_worst(cfg, data, indices, outputs, thresholds)).write(run.metrics)
    return {**metrics, "warnings": warnings}


def _worst(cfg: RunConfig, data: PreparedData, indices: np.ndarray, outputs: ModelOutputs,
           thresholds: np.ndarray | None) -> dict:
    """Evaluation's `worst_predictions` (most confident wrong classes, per class) and, for a box
    model, `worst_boxes` (lowest IoU first), by field name."""
    from tinyvision.evaluate.metrics import worst_boxes, worst_predictions

    manifest = data.manifest
    paths = [manifest.samples[i].path for i in indices]
    out = {}
    if outputs.scores is not None:
        out.update(worst_predictions=worst_predictions(
            manifest.label_matrix()[indices], outputs.scores, paths, manifest.classes,
            class_task(manifest.task), cfg.evaluate.worst_n, thresholds))
    if outputs.boxes is not None:
        out.update(worst_boxes=worst_boxes(data.cache.boxes[indices], outputs.boxes, paths,
                                           cfg.evaluate.worst_n))
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
            val_scores = float_outputs(model, data, val, cfg.evaluate.tta).scores
            collapse = collapse_warning(labels[val], val_scores, classes, task, "val", thresholds)
        found.append(collapse)
    if outputs.boxes is not None:
        found.append(box_warning(data.cache.boxes[data.indices("train")],
                                 data.cache.boxes[indices], outputs.boxes, split))
    found = [warning for warning in found if warning is not None]
    for warning in found:
        log.warning(warning["message"])
    return found


def _tune_thresholds(cfg: RunConfig, run: RunDir, data: PreparedData, model) -> np.ndarray:
    """Multi-label thresholds tuned on the val split, saved in the run and export/ folders."""
    from tinyvision.evaluate.thresholds import (DEFAULT_THRESHOLD, save_thresholds,
                                                tune_thresholds)

    val, classes = data.indices("val"), data.manifest.classes
    if len(val):
        scores = float_outputs(model, data, val, cfg.evaluate.tta).scores
        thresholds = tune_thresholds(data.manifest.label_matrix()[val], scores, cfg.evaluate.beta)
    else:
        log.warning("no validation images to tune multi-label thresholds on; every class keeps "
                    "%g (set data.val_fraction above 0 to tune them)", DEFAULT_THRESHOLD)
        thresholds = np.full(len(classes), DEFAULT_THRESHOLD)
    for folder in (run.root, run.export_dir):
        save_thresholds(folder / THRESHOLDS_FILE, classes, thresholds, cfg.evaluate.beta)
    return thresholds


# ---- report ----------------------------------------------------------------------------------
def report_stage(cfg: RunConfig, run: RunDir, data: PreparedData) -> Path:
    """report.html: a self-contained page on the run (after evaluate; export, verify and
    summary.json add their sections when present). Returns its path."""
    return write_report(cfg, run, data.manifest, data.cache)
