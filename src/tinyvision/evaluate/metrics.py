"""Metrics on one split: classification (multi-class, multi-label), single-box detection, tables.

Pure numpy and scikit-learn (where it has the metric), so evaluation never needs TensorFlow. Every
result is a JSON-serialisable dict (plain floats, ints, lists), ready for `metrics.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Table
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix,
                             hamming_loss, multilabel_confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score)

from tinyvision.data.sources.boxes import box_iou
from tinyvision.errors import ConfigError, DataError, check_choice

TASKS = frozenset({"multiclass", "multilabel"})
MULTICLASS_AVERAGES = ("macro", "micro", "weighted")
MULTILABEL_AVERAGES = ("macro", "micro", "weighted", "samples")
# Box AP thresholds 0.50:0.05:0.95 and COCO's 101 recall points, as exact decimals (k / 100).
IOU_THRESHOLDS = np.arange(50, 100, 5) / 100.0
RECALL_POINTS = np.arange(101) / 100.0


# ---- argument checks -------------------------------------------------------------------------
def check_task(task: str) -> str:
    """`task` itself, or a ConfigError naming the allowed values and close matches."""
    return check_choice("task", task, TASKS)


def check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not np.isfinite(beta) \
            or beta <= 0:
        raise ConfigError(f"Expected beta to be a positive number (1 = F1, 2 favours recall, 0.5 "
                          f"favours precision), received beta={beta!r}.")
    return float(beta)


def check_classes(classes: Sequence[str]) -> list[str]:
    classes = [str(c) for c in classes]
    if not classes:
        raise DataError("Expected at least one class name, received classes=[]; pass the "
                        "manifest's class list.")
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        raise DataError(f"Expected unique class names, received repeated names {repeated}.")
    return classes


def check_scores(scores: Any, n_classes: int, name: str = "scores") -> np.ndarray:
    """Scores as a float64 (samples, classes) array of probabilities in [0, 1]."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != n_classes or array.shape[0] == 0:
        raise DataError(f"Expected {name} of shape (samples, {n_classes}) with at least one "
                        f"sample, received shape {array.shape}. Pass one row of model outputs per "
                        "image and one column per class, in the manifest's class order.")
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
        raise DataError(f"Expected {name} to be probabilities in [0, 1], received values from "
                        f"{np.nanmin(array):g} to {np.nanmax(array):g} (or NaN/inf). Apply softmax "
                        "(multiclass) or sigmoid (multilabel) to logits first.")
    return array


def check_targets(y_true: Any, n_samples: int, n_classes: int, task: str) -> np.ndarray:
    """Multiclass: int class indices (samples,). Multilabel: 0/1 int matrix (samples, classes).

    Multiclass targets may also be given one-hot (samples, classes).
    """
    array = np.asarray(y_true)
    if task == "multiclass" and array.ndim == 1:
        if array.shape[0] != n_samples or not _is_integral(array) \
                or (array.size and (array.min() < 0 or array.max() >= n_classes)):
            raise DataError(f"Expected y_true as {n_samples} class indices in [0, {n_classes}), "
                            f"received shape {array.shape} with values {_value_range(array)}.")
        return array.astype(np.int64)
    if array.shape != (n_samples, n_classes) or not np.all(np.isin(array, (0, 1))):
        kind = "one-hot" if task == "multiclass" else "multi-hot"
        raise DataError(f"Expected y_true as a {kind} 0/1 matrix of shape ({n_samples}, "
                        f"{n_classes}) matching scores, received shape {array.shape} with values "
                        f"{_value_range(array)}.")
    array = array.astype(np.int64)
    if task == "multiclass":
        bad = np.flatnonzero(array.sum(axis=1) != 1)
        if bad.size:
            raise DataError(f"Expected exactly one 1 per row of one-hot y_true, received rows "
                            f"{bad[:5].tolist()} with {array[bad[0]].sum()} ones; use task="
                            "'multilabel' for images with several labels.")
        return array.argmax(axis=1)
    return array


def check_thresholds(thresholds: Any, n_classes: int) -> np.ndarray:
    """Per-class decision thresholds (classes,) in [0, 1]; a scalar applies to every class."""
    if thresholds is None:
        return np.full(n_classes, 0.5)
    array = np.asarray(thresholds, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n_classes, float(array))
    if array.shape != (n_classes,) or not np.all((array >= 0) & (array <= 1)):
        raise ConfigError(f"Expected thresholds as one number in [0, 1] per class ({n_classes}), "
                          f"received shape {array.shape} with values {_value_range(array)}. "
                          "Re-run threshold tuning for this model's classes.")
    return array


def _is_integral(array: np.ndarray) -> bool:
    if array.dtype.kind in "iub":
        return True
    return array.dtype.kind == "f" and bool(np.all(np.isfinite(array))) \
        and bool(np.all(array == np.round(array)))


def _value_range(array: np.ndarray) -> str:
    if array.size == 0:
        return "(none)"
    try:
        return f"{array.min()!r}..{array.max()!r}"
    except (TypeError, ValueError):
        return f"of dtype {array.dtype}"


# ---- classification --------------------------------------------------------------------------
def predict_labels(scores: np.ndarray, task: str,
                   thresholds: np.ndarray | None = None) -> np.ndarray:
    """Multiclass: argmax index per sample. Multilabel: 0/1 matrix, score >= class threshold."""
    if task == "multiclass":
        return scores.argmax(axis=1)
    limits = np.full(scores.shape[1], 0.5) if thresholds is None else thresholds
    return (scores >= limits[None, :]).astype(np.int64)


def classification_metrics(y_true: Any, scores: Any, classes: Sequence[str], task: str,
                           thresholds: Any = None, beta: float = 1.0) -> dict:
    """Accuracy, per-class and averaged precision/recall/F1/F-beta, ROC-AUC, PR-AUC, confusion.

    Args:
        y_true: multiclass: class indices (samples,) or one-hot; multilabel: multi-hot (samples,
            classes).
        scores: probabilities (samples, classes): softmax for multiclass (prediction = argmax),
            sigmoid for multilabel (prediction = score >= the class's threshold).
        classes: class names in output-unit order.
        task: "multiclass" or "multilabel".
        thresholds: multilabel only; one per class or one for all. Defaults to `0.5`.
        beta: weight of recall in F-beta (2 favours recall). Defaults to `1.0`.

    Precision, recall and F of a class with no predicted or no true samples are 0 (scikit-learn's
    `zero_division=0`); such classes still count in macro averages. ROC-AUC and PR-AUC (average
    precision) are per class, one-vs-rest, and None where y_true holds only one value for the
    class; `roc_auc_macro`/`pr_auc_macro` average the defined ones. The confusion matrix has rows
    = true class, columns = predicted class; multilabel gives per class [[tn, fp], [fn, tp]].
    """
    task = check_task(task)
    beta = check_beta(beta)
    classes = check_classes(classes)
    probs = check_scores(scores, len(classes))
    truth = check_targets(y_true, len(probs), len(classes), task)
    if task == "multiclass" and thresholds is not None:
        raise ConfigError("thresholds apply only to task='multilabel' (multiclass predicts the "
                          f"argmax); received thresholds={thresholds!r}. Pass thresholds=None.")
    limits = check_thresholds(thresholds, len(classes)) if task == "multilabel" else None
    pred = predict_labels(probs, task, limits)
    indicator = truth if task == "multilabel" else np.eye(len(classes), dtype=np.int64)[truth]

    result: dict[str, Any] = {"task": task, "classes": classes, "n_samples": int(len(probs)),
                              "beta": beta}
    result.update(_accuracies(truth, pred, task))
    per_class, averages = _precision_recall(truth, pred, len(classes), task, beta)
    result["macro_f1"] = averages["macro"]["f1"]
    aucs = _curve_areas(indicator, probs)
    for row, (roc, pr) in zip(per_class, aucs):
        row.update(roc_auc=roc, pr_auc=pr)
    result["per_class"] = dict(zip(classes, per_class))
    result["averages"] = averages
    result["roc_auc_macro"] = _mean_defined([roc for roc, _ in aucs])
    result["pr_auc_macro"] = _mean_defined([pr for _, pr in aucs])
    if task == "multiclass":
        labels = list(range(len(classes)))
        result["confusion_matrix"] = confusion_matrix(truth, pred, labels=labels).tolist()
    else:
        result["thresholds"] = [float(t) for t in limits]
        result["label_confusion"] = dict(zip(classes, multilabel_confusion_matrix(truth, pred)
                                             .tolist()))
    return result


def _accuracies(truth: np.ndarray, pred: np.ndarray, task: str) -> dict[str, float]:
    if task == "multiclass":
        return {"accuracy": float(accuracy_score(truth, pred))}
    subset = float(accuracy_score(truth, pred))  # every label of the image right
    return {"accuracy": subset, "subset_accuracy": subset,
            "hamming_accuracy": float(1.0 - hamming_loss(truth, pred))}


def _precision_recall(truth: np.ndarray, pred: np.ndarray, n_classes: int, task: str,
                      beta: float) -> tuple[list[dict], dict[str, dict]]:
    """Per-class rows and averages of precision, recall, F1 and F-beta (scikit-learn)."""
    labels = list(range(n_classes))

    def prfs(average: str | None, b: float) -> tuple:
        return precision_recall_fscore_support(truth, pred, beta=b, labels=labels, average=average,
                                               zero_division=0)

    precision, recall, f1, support = prfs(None, 1.0)
    fbeta = prfs(None, beta)[2]
    per_class = [{"precision": float(p), "recall": float(r), "f1": float(f), "fbeta": float(fb),
                  "support": int(s)}
                 for p, r, f, fb, s in zip(precision, recall, f1, fbeta, support)]
    averages = {}
    for average in (MULTILABEL_AVERAGES if task == "multilabel" else MULTICLASS_AVERAGES):
        p, r, f, _ = prfs(average, 1.0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f),
                             "fbeta": float(prfs(average, beta)[2])}
    return per_class, averages


def _curve_areas(indicator: np.ndarray, probs: np.ndarray) -> list[tuple[float | None, ...]]:
    """(ROC-AUC, average precision) per class, one-vs-rest; None where only one label value."""
    areas = []
    for k in range(indicator.shape[1]):
        column = indicator[:, k]
        if column.min() == column.max():
            areas.append((None, None))
            continue
        areas.append((float(roc_auc_score(column, probs[:, k])),
                      float(average_precision_score(column, probs[:, k]))))
    return areas


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def task_score(y_true: Any, outputs, true_boxes: Any = None, task: str = "multiclass") -> float:
    """One number per model for "which is better" (QAT's choice, a search's objective): the box's
    IoU score for a box model (mean IoU over the images with a box, 0 where the class is
    wrong), else the accuracy (multi-label: every label right at 0.5). `outputs`: a
    models.outputs.ModelOutputs."""
    truth = np.asarray(y_true)
    if outputs.boxes is not None:
        boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
        has = np.isfinite(boxes).all(axis=1)
        overlap = box_iou(boxes[has], np.asarray(outputs.boxes)[has])
        if outputs.scores is not None:
            overlap = overlap * (np.argmax(outputs.scores[has], 1) == np.argmax(truth[has], 1))
        return float(overlap.mean()) if len(overlap) else 0.0
    scores = np.asarray(outputs.scores)
    if task == "multilabel":
        return float(np.mean(np.all((scores >= 0.5) == (truth >= 0.5), axis=1)))
    return float(np.mean(np.argmax(scores, axis=1) == np.argmax(truth, axis=1)))


# ---- worst predictions -----------------------------------------------------------------------
def worst_predictions(y_true: Any, scores: Any, paths: Sequence[str | PathLike],
                      classes: Sequence[str], task: str, n: int = 5,
                      thresholds: Any = None) -> dict[str, list[dict]]:
    """The `n` most confident wrong predictions per class, most confident first.

    Multiclass: a wrong image is listed under its true class; `score` is the probability of the
    (wrong) predicted class; `true`/`pred` are class names. Multilabel: a class lists its false
    positives and false negatives, ranked by how far the class score lies on the wrong side of
    its threshold; `score` is that class's score, `true`/`pred` are the image's label lists and
    `error` is "false_positive" or "false_negative". Every class has a (possibly empty) list; ties
    keep input order.
    """
    task = check_task(task)
    classes = check_classes(classes)
    probs = check_scores(scores, len(classes))
    truth = check_targets(y_true, len(probs), len(classes), task)
    paths = [str(p) for p in paths]
    if len(paths) != len(probs):
        raise DataError(f"Expected one path per row of scores ({len(probs)}), received "
                        f"{len(paths)} paths.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"Expected n to be a positive integer, received n={n!r}.")
    if task == "multiclass":
        return _worst_multiclass(truth, probs, paths, classes, n)
    limits = check_thresholds(thresholds, len(classes))
    return _worst_multilabel(truth, probs, paths, classes, n, limits)


def _worst_multiclass(truth: np.ndarray, probs: np.ndarray, paths: list[str], classes: list[str],
                      n: int) -> dict[str, list[dict]]:
    pred = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), pred]
    worst: dict[str, list[dict]] = {}
    for k, name in enumerate(classes):
        wrong = np.flatnonzero((truth == k) & (pred != k))
        ranked = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
        worst[name] = [{"path": paths[i], "score": float(confidence[i]), "true": name,
                        "pred": classes[pred[i]]} for i in ranked]
    return worst


def _worst_multilabel(truth: np.ndarray, probs: np.ndarray, paths: list[str], classes: list[str],
                      n: int, limits: np.ndarray) -> dict[str, list[dict]]:
    pred = predict_labels(probs, "multilabel", limits)
    names = np.asarray(classes, dtype=object)
    worst: dict[str, list[dict]] = {}
    for k, name in enumerate(classes):
        wrong = np.flatnonzero(truth[:, k] != pred[:, k])
        margin = np.abs(probs[wrong, k] - limits[k])
        ranked = wrong[np.argsort(-margin, kind="stable")][:n]
        worst[name] = [{"path": paths[i], "score": float(probs[i, k]),
                        "true": names[truth[i] == 1].tolist(), "pred": names[pred[i] == 1].tolist(),
                        "error": "false_positive" if pred[i, k] else "false_negative"}
                       for i in ranked]
    return worst


def worst_boxes(true_boxes: Any, pred_boxes: Any, paths: Sequence[str | PathLike],
                n: int = 5) -> list[dict]:
    """The `n` images whose predicted box overlaps the true one least (lowest IoU first; images
    without a true box are left out): `path`, `iou`, `true` and `pred` (normalised xyxy)."""
    truth = np.asarray(true_boxes, np.float64).reshape(-1, 4)
    pred = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    paths = [str(p) for p in paths]
    if not len(truth) == len(pred) == len(paths):
        raise DataError(f"Expected one predicted box and one path per true box, received "
                        f"{len(truth)} true boxes, {len(pred)} predicted and {len(paths)} paths.")
    has = np.flatnonzero(np.isfinite(truth).all(axis=1))
    overlap = box_iou(truth[has], pred[has])
    ranked = has[np.argsort(overlap, kind="stable")][:n]
    by_row = dict(zip(has.tolist(), overlap.tolist()))
    return [{"path": paths[i], "iou": float(by_row[i]),
             "true": [round(float(v), 4) for v in truth[i]],
             "pred": [round(float(v), 4) for v in pred[i]]} for i in ranked]


# ---- boxes -----------------------------------------------------------------------------------
def iou(a: Any, b: Any) -> np.ndarray:
    """Intersection over union of xyxy boxes, element-wise with numpy broadcasting.

    `iou(a, b)` with a, b of shape (N, 4) gives (N,); `iou(a[:, None], b[None])` gives the (N, M)
    pairwise matrix. Boxes with x2 < x1 or y2 < y1 have zero area; a zero union gives IoU 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1:] != (4,) or b.shape[-1:] != (4,):
        raise DataError(f"Expected boxes as (..., 4) arrays of x1, y1, x2, y2, received shapes "
                        f"{a.shape} and {b.shape}.")
    return box_iou(a, b)


def box_metrics(true_boxes: Any, pred_boxes: Any, true_labels: Any = None, pred_labels: Any = None,
                scores: Any = None) -> dict:
    """Single-box-per-image detection: mean IoU, accuracy at IoU >= 0.5, AP at IoU 0.50:0.95.

    Boxes are normalised xyxy, one true and one predicted box per image (N, 4). With labels, a
    prediction is right only if its class is right too: `mean_iou` is the box's alone,
    `iou_score` the mean IoU with an image of the wrong class counted 0 (what training monitors
    as `val_iou`; equal to `mean_iou` without labels), `accuracy_iou50` the share of images
    with the right class and IoU >= 0.5.

    AP: for each IoU threshold t in 0.50, 0.55, ..., 0.95, predictions are ranked by `scores`
    (descending; without scores all tie); a prediction is a true positive iff IoU >= t (and its
    class is right), and there are N ground-truth boxes. Tied scores form one step of the
    precision/recall curve (evaluated after the whole tie group), so the result does not depend
    on input order. The precision envelope (max precision at recall >= r) is sampled at COCO's 101
    recall points r = 0, 0.01, ..., 1 (0 past the highest recall) and averaged; AP is the mean over
    the ten thresholds. Unlike COCO mAP it ranks all images together rather than per class.
    """
    truth, pred = _check_boxes(true_boxes, "true_boxes"), _check_boxes(pred_boxes, "pred_boxes")
    if len(truth) != len(pred):
        raise DataError(f"Expected one predicted box per true box, received {len(truth)} true and "
                        f"{len(pred)} predicted boxes.")
    n = len(truth)
    correct_class = _check_box_labels(true_labels, pred_labels, n)
    confidence = np.zeros(n) if scores is None else _check_box_scores(scores, n)
    overlap = iou(truth, pred)
    ap = {f"{t:.2f}": _ranked_ap((overlap >= t) & correct_class, confidence)
          for t in IOU_THRESHOLDS}
    result = {"n_samples": n, "mean_iou": float(overlap.mean()),
              "iou_score": float(np.mean(overlap * correct_class)),
              "accuracy_iou50": float(np.mean((overlap >= 0.5) & correct_class)),
              "ap50_95": float(np.mean(list(ap.values()))), "ap50": ap["0.50"], "ap75": ap["0.75"],
              "ap_per_iou": ap}
    if true_labels is not None:
        result["class_accuracy"] = float(correct_class.mean())
    return result


def _ranked_ap(hits: np.ndarray, confidence: np.ndarray) -> float:
    """COCO 101-point interpolated AP of predictions ranked by confidence; one box per image."""
    order = np.argsort(-confidence, kind="stable")
    hits, ranked = hits[order], confidence[order]
    group_ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    true_pos = np.cumsum(hits)[group_ends]
    precision = true_pos / (group_ends + 1)
    recall = true_pos / len(hits)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)
    return float(sampled.mean())


def _check_boxes(boxes: Any, name: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4 or len(array) == 0:
        raise DataError(f"Expected {name} of shape (N, 4) as normalised x1, y1, x2, y2 with "
                        f"N >= 1, received shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise DataError(f"Expected finite {name}, received NaN or inf in rows "
                        f"{np.flatnonzero(~np.isfinite(array).all(axis=1))[:5].tolist()}.")
    if name == "true_boxes":
        flipped = np.flatnonzero((array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1]))
        if flipped.size:
            raise DataError(f"Expected true_boxes with x2 >= x1 and y2 >= y1, received "
                            f"{array[flipped[0]].tolist()} (row {flipped[0]}); boxes are xyxy, "
                            "not xywh.")
    return array


def _check_box_labels(true_labels: Any, pred_labels: Any, n: int) -> np.ndarray:
    """True where the class is right (all True without labels)."""
    if (true_labels is None) != (pred_labels is None):
        raise DataError("Expected both true_labels and pred_labels or neither, received only "
                        f"{'true_labels' if pred_labels is None else 'pred_labels'}.")
    if true_labels is None:
        return np.ones(n, dtype=bool)
    truth, pred = np.asarray(true_labels), np.asarray(pred_labels)
    if truth.shape != (n,) or pred.shape != (n,):
        raise DataError(f"Expected true_labels and pred_labels of shape ({n},), received "
                        f"{truth.shape} and {pred.shape}.")
    return truth == pred


def _check_box_scores(scores: Any, n: int) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.shape != (n,) or not np.all(np.isfinite(array)):
        raise DataError(f"Expected scores as {n} finite confidences (one per image), received "
                        f"shape {array.shape}.")
    return array


# ---- tables ----------------------------------------------------------------------------------
def format_metrics_table(metrics: dict, title: str | None = None) -> Table:
    """A rich Table of per-class precision, recall, F1 and support, with macro/weighted footers.

    An F-beta column is added when beta is not 1, a threshold column for multilabel metrics.
    """
    if not isinstance(metrics, dict) or "per_class" not in metrics or "averages" not in metrics:
        received = sorted(metrics)[:8] if isinstance(metrics, dict) else type(metrics).__name__
        raise DataError("Expected the dict returned by classification_metrics (with 'per_class' "
                        f"and 'averages'), received {received}.")
    show_thresholds = "thresholds" in metrics
    beta = metrics.get("beta", 1.0)
    scores = ("precision", "recall", "f1") + (("fbeta",) if beta != 1.0 else ())
    caption = f"accuracy {metrics['accuracy']:.4f} · macro F1 {metrics['macro_f1']:.4f}"
    if "hamming_accuracy" in metrics:
        caption += f" · hamming accuracy {metrics['hamming_accuracy']:.4f}"
    table = Table(title=title or f"Per-class metrics ({metrics['n_samples']} samples)",
                  caption=caption)
    headers = {"precision": "precision", "recall": "recall", "f1": "F1", "fbeta": f"F{beta:g}"}
    table.add_column("class")
    for column in [headers[s] for s in scores] + ["support"] + ["threshold"] * show_thresholds:
        table.add_column(column, justify="right")
    for index, (name, row) in enumerate(metrics["per_class"].items()):
        cells = [escape(name), *(f"{row[s]:.3f}" for s in scores), str(row["support"])]
        table.add_row(*cells, *([f"{metrics['thresholds'][index]:.3f}"] if show_thresholds else []))
    table.add_section()
    total = sum(row["support"] for row in metrics["per_class"].values())
    for average in ("macro", "weighted"):
        row = metrics["averages"][average]
        cells = [f"{average} avg", *(f"{row[s]:.3f}" for s in scores), str(total)]
        table.add_row(*cells, *([""] if show_thresholds else []), style="bold")
    return table
