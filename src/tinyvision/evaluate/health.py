"""Did the model learn anything? Flags a model that answers one class for almost every image or
scores no better than always answering the most common class, so that such a run never ends with
a silent exit status 0 (the warning goes to the console, summary.json, report.html and the
registry).
"""

from __future__ import annotations

import numpy as np

ONE_CLASS_SHARE = 0.95  # one answer for at least this share of the images is a collapse...
MIXED_LABELS = 0.90  # ...when the true labels are not themselves this one-sided
MAJORITY_MARGIN = 0.01  # accuracy within this of the majority-class rate learnt nothing
MIN_IMAGES = 10  # fewer images say too little to warn on
COLLAPSE_FIXES = (
    "Likely causes: a model trained from random weights for too few steps or at a fine-tuning "
    "learning rate, a head stage on a random backbone, or a learning rate so high that training "
    "diverged. Fixes: let train.recipe pick the settings (remove train.head/fine_tune overrides), "
    "give it more time (train.budget, e.g. '60 epochs'), try `tinyvision lr-find`, or use "
    "pretrained weights (model.weights: imagenet or a file).")


def collapse_warning(y_true: np.ndarray, scores: np.ndarray, classes: list[str], task: str,
                     split: str, thresholds: np.ndarray | None = None) -> dict | None:
    """A warning ({"code": "collapse", "message": ...}) when the predictions on `split` show the
    model learnt nothing; None otherwise. `task`: the class output's ("multiclass"/"multilabel").
    """
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
        return None
    predicted, truth = scores.argmax(axis=1), y_true.argmax(axis=1)
    counts = np.bincount(predicted, minlength=len(classes))
    share, majority = counts.max() / len(predicted), np.bincount(truth).max() / len(truth)
    if share >= ONE_CLASS_SHARE and majority < MIXED_LABELS:
        return _warning(f"the model answers '{classes[int(counts.argmax())]}' for {share:.0%} of "
                        f"the {len(predicted)} {split} images")
    accuracy = float(np.mean(predicted == truth))
    if majority < 1.0 - MAJORITY_MARGIN and accuracy <= majority + MAJORITY_MARGIN:
        return _warning(f"{split} accuracy {accuracy:.3f} is no better than always answering the "
                        f"most common class ({majority:.3f})")
    return None


def _most_common_row(rows: np.ndarray) -> tuple[np.ndarray, float]:
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    return unique[counts.argmax()], counts.max() / len(rows)


def _warning(finding: str) -> dict:
    return {"code": "collapse", "message": f"The model learnt nothing useful: {finding}. "
            f"{COLLAPSE_FIXES}"}
