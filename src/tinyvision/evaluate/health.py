"""Did the model learn anything? Flags a model that answers one class for almost every image or
whose answers are barely better than chance class by class, and a box that is no better than a
constant answer (the mean training box, or the whole image), so that such a run never ends with
a silent exit status 0 (the warning goes to the console, summary.json, report.html and the
registry).

Classes are judged by informedness: balanced accuracy (the mean of the per-class recalls; 1/K for
any answer that ignores the image, the majority class included) rescaled so that chance is 0 and
perfect is 1. Accuracy against the majority class is fooled by a skewed split: 64.6 % on a set with
63.4 % of one class passed that check while the model answered little but the majority.
"""

from __future__ import annotations

import numpy as np

from tinyvision.evaluate.metrics import iou

ONE_CLASS_SHARE = 0.95  # one answer for at least this share of the images is a collapse...
MIXED_LABELS = 0.90  # ...when the true labels are not themselves this one-sided
USEFUL_INFORMEDNESS = 0.2  # below: no more than "slight" agreement beyond chance (Landis & Koch)
CONFIDENCE_Z = 1.645  # one-sided 95 %: the bar rises with the test split's uncertainty
# A pretrained start kept as it is (short fine-tuning of the top, BatchNorm frozen) must already
# tell the classes apart this well with a head alone. Below it, features that partly suit the task
# (a shapes-trained file on raccoon crops: head 0.71-0.78) ended 5-10 points under the scratch
# recipe; fine-tuning the whole network from them did not (docs/training.md, start check).
GOOD_START_INFORMEDNESS = 0.9
MIN_IMAGES = 10  # fewer images say too little to warn on
COLLAPSE_FIXES = (
    "Likely causes: a model trained from random weights for too few steps or at a fine-tuning "
    "learning rate, a head stage on a random backbone, pretrained features that do not suit the "
    "task, or a learning rate so high that training diverged. Fixes: let train.recipe pick the "
    "settings (remove train.head/fine_tune overrides), give it more time (train.budget, e.g. '60 "
    "epochs'), try `tinyvision lr-find`, train from scratch (model.weights: none) or from other "
    "pretrained weights.")


def informedness(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[float, float]:
    """(informedness, its standard error) of class predictions against the truth (indices).

    Informedness = (balanced accuracy - 1/K) / (1 - 1/K) over the K classes present in the
    truth: 0 for any answer independent of the image, 1 when every class is always right. Its
    standard error comes from the binomial variance of each class's recall."""
    present = [k for k in range(n_classes) if np.any(truth == k)]
    recalls = np.array([np.mean(predicted[truth == k] == k) for k in present])
    counts = np.array([np.sum(truth == k) for k in present])
    k = len(present)
    if k < 2:
        return 1.0, 0.0  # one class in the truth: nothing to tell apart
    balanced = recalls.mean()
    se = np.sqrt(np.sum(recalls * (1 - recalls) / counts)) / k
    chance = 1.0 / k
    return float((balanced - chance) / (1 - chance)), float(se / (1 - chance))


def collapse_warning(y_true: np.ndarray, scores: np.ndarray, classes: list[str], task: str,
                     split: str, thresholds: np.ndarray | None = None) -> dict | None:
    """A warning ({"code": "collapse", "message": ...}) when the predictions on `split` show the
    model learnt nothing useful: one answer for almost every image, or an informedness whose
    one-sided 95 % lower bound does not reach USEFUL_INFORMEDNESS (multi-label: the mean over
    labels of TPR + TNR - 1). None otherwise. `task`: the class output's ("multiclass" /
    "multilabel")."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    if len(y_true) < MIN_IMAGES:
        return None
    if task == "multilabel":
        limit = 0.5 if thresholds is None else np.asarray(thresholds)
        predicted = (scores >= limit).astype(np.int8)
        truth = (y_true >= 0.5).astype(np.int8)
        answer, share = _most_common_row(predicted)
        _, true_share = _most_common_row(truth)
        if share >= ONE_CLASS_SHARE and true_share < MIXED_LABELS:
            labels = [c for c, on in zip(classes, answer) if on] or ["no class"]
            return _warning(f"the model answers {'+'.join(labels)} for {share:.0%} of the "
                            f"{len(y_true)} {split} images, whose labels vary")
        per_label = [informedness(truth[:, j], predicted[:, j], 2) for j in range(truth.shape[1])
                     if 0 < truth[:, j].sum() < len(truth)]
        if not per_label:
            return None
        value = float(np.mean([v for v, _ in per_label]))
        se = float(np.sqrt(np.sum([e * e for _, e in per_label])) / len(per_label))
        return _informedness_warning(value, se, len(y_true), split, "label")
    predicted, truth = scores.argmax(axis=1), y_true.argmax(axis=1)
    counts = np.bincount(predicted, minlength=len(classes))
    share, majority = counts.max() / len(predicted), np.bincount(truth).max() / len(truth)
    if share >= ONE_CLASS_SHARE and majority < MIXED_LABELS:
        return _warning(f"the model answers '{classes[int(counts.argmax())]}' for {share:.0%} of "
                        f"the {len(predicted)} {split} images")
    value, se = informedness(truth, predicted, len(classes))
    accuracy = float(np.mean(predicted == truth))
    return _informedness_warning(value, se, len(truth), split, "class",
                                 f"; accuracy {accuracy:.3f}, always the most common class "
                                 f"{majority:.3f}")


def _informedness_warning(value: float, se: float, n: int, split: str, what: str,
                          detail: str = "") -> dict | None:
    bar = USEFUL_INFORMEDNESS + CONFIDENCE_Z * se
    if value >= bar:
        return None
    return _warning(f"on the {n} {split} images its answers are barely better than chance "
                    f"{what} by {what}: informedness "
                    f"{value:.3f} (balanced accuracy rescaled: 0 is chance, 1 perfect{detail}), "
                    f"where {bar:.3f} is needed to call it useful on this many images")


def _most_common_row(rows: np.ndarray) -> tuple[np.ndarray, float]:
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    return unique[counts.argmax()], counts.max() / len(rows)


def _warning(finding: str) -> dict:
    return {"code": "collapse", "message": f"The model learnt nothing useful: {finding}. "
            f"{COLLAPSE_FIXES}"}


# ---- boxes -----------------------------------------------------------------------------------
BOX_WARNING = "box_no_better_than_constant"  # the warning's code
BOX_MIN_GAIN = 0.03  # a model's mean IoU must beat the better constant box by at least this...
BOX_CONFIDENCE_Z = 1.645  # ...and by this many standard errors of the paired gain (one-sided 95 %)
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
BOX_FIXES = (
    "Likely causes: too few training images for the box to learn where the object is rather than "
    "where it usually is, too little box-aware augmentation (the box overfits), a run too short, "
    "or a checkpoint chosen by a metric that ignores the box. Fixes: let train.recipe pick the "
    "detection settings (remove train.augment, train.monitor and box loss overrides), give it "
    "more time (train.budget), more images, or a pretrained backbone (model.weights).")


def constant_boxes(train_boxes: np.ndarray) -> dict[str, np.ndarray]:
    """The constant answers a box model must beat: the mean training box and the whole image.
    `train_boxes`: normalised xyxy of the training images (NaN rows: no box, left out)."""
    boxes = np.asarray(train_boxes, np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(axis=1)]
    mean = boxes.mean(axis=0) if len(boxes) else np.array(WHOLE_IMAGE)
    return {"mean_box": mean, "whole_image": np.array(WHOLE_IMAGE)}


def box_baselines(train_boxes: np.ndarray, true_boxes: np.ndarray) -> dict[str, dict]:
    """Mean IoU and share at IoU >= 0.5 of each constant answer on `true_boxes` (rows with a
    box), e.g. {"mean_box": {"box": [...], "mean_iou": 0.53, "accuracy_iou50": 0.63}, ...}."""
    truth = _with_boxes(true_boxes)
    out = {}
    for name, box in constant_boxes(train_boxes).items():
        overlap = iou(truth, box[None]) if len(truth) else np.zeros(0)
        out[name] = {"box": [round(float(v), 4) for v in box],
                     "mean_iou": float(overlap.mean()) if len(overlap) else 0.0,
                     "accuracy_iou50": float(np.mean(overlap >= 0.5)) if len(overlap) else 0.0}
    return out


def box_warning(train_boxes: np.ndarray, true_boxes: np.ndarray, pred_boxes: np.ndarray,
                split: str, what: str = "model") -> dict | None:
    """A warning ({"code": "box_no_better_than_constant", ...}) when the predicted boxes on
    `split` do not beat the better constant answer clearly: the paired gain in mean IoU must
    reach BOX_MIN_GAIN and BOX_CONFIDENCE_Z standard errors. None otherwise, or with fewer than
    MIN_IMAGES boxes (too few to judge)."""
    true_boxes, pred_boxes = (np.asarray(b, np.float64).reshape(-1, 4)
                              for b in (true_boxes, pred_boxes))
    has = np.isfinite(true_boxes).all(axis=1)
    truth, pred = true_boxes[has], pred_boxes[has]
    if len(truth) < MIN_IMAGES:
        return None
    model_iou = iou(truth, pred)
    best_name, best_iou = max(((name, iou(truth, box[None]))
                               for name, box in constant_boxes(train_boxes).items()),
                              key=lambda pair: pair[1].mean())
    gain = model_iou - best_iou
    needed = max(BOX_MIN_GAIN, BOX_CONFIDENCE_Z * float(gain.std(ddof=1)) / np.sqrt(len(gain)))
    if gain.mean() >= needed:
        return None
    label = best_name.replace("_", " ")
    finding = (f"the {what}'s boxes on the {len(truth)} {split} images reach a mean IoU of "
               f"{model_iou.mean():.3f} ({np.mean(model_iou >= 0.5):.0%} at IoU >= 0.5), against "
               f"{best_iou.mean():.3f} ({np.mean(best_iou >= 0.5):.0%}) for always answering the "
               f"{label}: a gain of {gain.mean():+.3f}, where {needed:.3f} is needed to tell it "
               "from the constant")
    return {"code": BOX_WARNING,
            "message": f"The box learnt nothing useful: {finding}. {BOX_FIXES}"}


def _with_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return boxes[np.isfinite(boxes).all(axis=1)]


# ---- is a pretrained start useful? -----------------------------------------------------------
def start_verdict(y_true: np.ndarray, outputs, task: str, train_boxes: np.ndarray | None = None,
                  true_boxes: np.ndarray | None = None) -> dict:
    """Whether a head trained on frozen pretrained features is useful on the val split: its
    classes must clear the bar of `collapse_warning` (informedness), its box that of
    `box_warning` (the better constant box). `outputs`: models.outputs.ModelOutputs. Returns
    {"useful": bool, "good": bool, "message": what was measured, "informedness" and/or
    "box_gain"}. `good`: useful, and a class head at GOOD_START_INFORMEDNESS or above, a start to
    keep as it is."""
    verdict: dict = {"useful": True, "good": True}
    parts = []
    if outputs.scores is not None:
        truth = np.asarray(y_true)
        class_task = "multilabel" if task == "multilabel" else "multiclass"
        if class_task == "multilabel":
            predicted = (np.asarray(outputs.scores) >= 0.5).astype(np.int8)
            values = [informedness(truth[:, j] >= 0.5, predicted[:, j], 2)
                      for j in range(truth.shape[1]) if 0 < (truth[:, j] >= 0.5).sum() < len(truth)]
            value = float(np.mean([v for v, _ in values])) if values else 1.0
            se = float(np.sqrt(sum(e * e for _, e in values)) / len(values)) if values else 0.0
        else:
            value, se = informedness(truth.argmax(axis=1), np.asarray(outputs.scores).argmax(axis=1),
                                     truth.shape[1])
        bar = USEFUL_INFORMEDNESS + CONFIDENCE_Z * se
        verdict["informedness"] = round(value, 4)
        verdict["useful"] = value >= bar
        verdict["good"] = value >= max(bar, GOOD_START_INFORMEDNESS)
        verdict["good_bar"] = GOOD_START_INFORMEDNESS
        parts.append(f"a head on the frozen features reaches val informedness {value:.3f} "
                     f"(useful from {bar:.3f})")
    if outputs.boxes is not None and true_boxes is not None:
        baselines = box_baselines(train_boxes, true_boxes)
        best = max(base["mean_iou"] for base in baselines.values())
        truth = _with_boxes(true_boxes)
        has = np.isfinite(np.asarray(true_boxes, np.float64).reshape(-1, 4)).all(axis=1)
        model_iou = float(iou(truth, np.asarray(outputs.boxes)[has]).mean()) if len(truth) else 0.0
        verdict["box_gain"] = round(model_iou - best, 4)
        flagged = box_warning(train_boxes, true_boxes, outputs.boxes, "val") is not None
        verdict["useful"] = verdict["useful"] and not flagged
        verdict["good"] = verdict["good"] and not flagged
        parts.append(f"its box a val mean IoU of {model_iou:.3f} against {best:.3f} for the "
                     "better constant box")
    verdict["message"] = "; ".join(parts) or "nothing to judge on"
    return verdict
