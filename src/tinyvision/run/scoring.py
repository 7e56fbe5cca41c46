"""Scoring a model's outputs on a run's images, shared by the evaluate, export and verify stages:
the metrics of the class and box outputs (with the constant boxes a box must beat), the float
model's outputs (with flip averaging), the run's multi-label thresholds."""

from __future__ import annotations

import logging

import numpy as np

from tinyvision.config import RunConfig
from tinyvision.data.manifest import Manifest
from tinyvision.evaluate.health import box_baselines
from tinyvision.evaluate.tta import keras_scorer, tta_outputs
from tinyvision.layout import THRESHOLDS_FILE
from tinyvision.models.outputs import ModelOutputs, class_task, output_kinds, split_outputs
from tinyvision.run.folder import RunDir
from tinyvision.run.prepared import PreparedData
from tinyvision.run.summary import headline

log = logging.getLogger("tinyvision")


def output_metrics(cfg: RunConfig, data: PreparedData, indices: np.ndarray, outputs,
                    thresholds: np.ndarray | None, true_boxes: np.ndarray | None = None) -> dict:
    """Metrics of a model's outputs on `indices`: classification metrics of the class output,
    and box metrics ("boxes", with the constant answers as "baselines") of the box output
    against the cached boxes (or `true_boxes`, e.g. the boxes as a camera frame shows them)."""
    from tinyvision.evaluate.metrics import box_metrics, classification_metrics

    outputs = model_outputs(data, outputs)
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


def model_outputs(data: PreparedData, outputs) -> ModelOutputs:
    """A model's raw outputs (an array or a tuple) as class scores and boxes."""
    return split_outputs(outputs, data.manifest.task, len(data.manifest.classes))


def float_outputs(model, data: PreparedData, indices: np.ndarray, tta: bool) -> ModelOutputs:
    """Float model outputs on `data`'s images `indices`; with `tta`, averaged with the mirror
    images."""
    from tinyvision.models.inference import predict_scores

    images = data.cache.images
    if not tta:
        return model_outputs(data, predict_scores(model, images, indices))
    kinds = output_kinds(data.manifest.task, len(data.manifest.classes))
    return model_outputs(data, tta_outputs(keras_scorer(model), np.asarray(images[indices]),
                                    kinds=kinds))


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


def headline_scorer(cfg: RunConfig, data: PreparedData, indices: np.ndarray, thresholds):
    """outputs of a model on `indices` -> their headline metrics (other formats, QAT)."""
    return lambda outputs: headline(output_metrics(cfg, data, indices, outputs, thresholds))
