"""Per-class decision thresholds for multi-label models, tuned on the validation split.

A crossing camera must not miss a pedestrian: `beta` > 1 weighs recall above precision. The tuned
thresholds are stored beside the model as `thresholds.json` and used by eval, predict and export.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyvision.errors import DataError, RunError
from tinyvision.evaluate.metrics import check_beta, check_classes, check_scores, check_targets
from tinyvision.files import atomic_write_json
from tinyvision.layout import THRESHOLDS_FILE

DEFAULT_THRESHOLD = 0.5
_TIE_TOLERANCE = 1e-12


def tune_thresholds(y_true: Any, scores: Any, beta: float = 1.0) -> np.ndarray:
    """Per-class thresholds (classes,) that maximise F-beta of `score >= threshold` on `y_true`.

    Args:
        y_true: multi-hot labels (samples, classes), usually the validation split.
        scores: sigmoid probabilities (samples, classes) of the same images.
        beta: weight of recall in F-beta (2 favours recall). Defaults to `1.0`.

    The candidates for a class are its distinct scores, so each threshold reproduces its
    validation predictions exactly under `score >= threshold`. Among candidates whose F-beta ties
    the best (within 1e-12), the highest threshold wins: the fewest positives for the same score.
    A class with no positive sample in `y_true` keeps 0.5, since nothing can be learned for it.
    """
    beta = check_beta(beta)
    probs = np.asarray(scores, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise DataError(f"Expected scores of shape (samples, classes), received shape "
                        f"{probs.shape}; pass the sigmoid outputs of the validation images.")
    probs = check_scores(probs, probs.shape[1])
    truth = check_targets(y_true, len(probs), probs.shape[1], "multilabel")
    return np.array([_best_threshold(truth[:, k], probs[:, k], beta)
                     for k in range(probs.shape[1])])


def _best_threshold(truth: np.ndarray, score: np.ndarray, beta: float) -> float:
    """The F-beta-maximising threshold of one class (see `tune_thresholds`)."""
    positives = int(truth.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD
    order = np.argsort(-score, kind="stable")
    ranked, hits = score[order], truth[order]
    # Thresholding at a distinct value predicts everything up to the end of its tie group.
    group_ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    true_pos = np.cumsum(hits)[group_ends].astype(np.float64)
    false_pos = group_ends + 1 - true_pos
    false_neg = positives - true_pos
    weight = beta * beta
    fbeta = (1 + weight) * true_pos / ((1 + weight) * true_pos + weight * false_neg + false_pos)
    best = np.flatnonzero(fbeta >= fbeta.max() - _TIE_TOLERANCE)[0]  # first = highest threshold
    return float(ranked[group_ends[best]])


@dataclass(frozen=True)
class Thresholds:
    """Tuned thresholds with the class order and beta they were tuned for."""

    classes: list[str]
    thresholds: list[float]
    beta: float

    def as_array(self) -> np.ndarray:
        return np.asarray(self.thresholds, dtype=np.float64)


def save_thresholds(path: str | Path, classes: Sequence[str], thresholds: Any,
                    beta: float) -> Path:
    """Write `{"classes", "thresholds", "beta"}` to `path` atomically; return the path.

    A directory `path` gets `thresholds.json` inside it.
    """
    classes = check_classes(classes)
    values = np.asarray(thresholds, dtype=np.float64)
    if values.shape != (len(classes),) or not np.all((values >= 0) & (values <= 1)):
        raise RunError(f"Expected one threshold in [0, 1] per class ({len(classes)}), received "
                       f"shape {values.shape}; pass the output of tune_thresholds.")
    target = Path(path)
    if target.is_dir():
        target = target / THRESHOLDS_FILE
    atomic_write_json(target, {"classes": classes, "thresholds": values.tolist(),
                               "beta": check_beta(beta)})
    return target


def load_thresholds(path: str | Path, classes: Sequence[str] | None = None) -> Thresholds:
    """Read a thresholds file; with `classes`, insist they match the file's class order."""
    target = Path(path)
    if target.is_dir():
        target = target / THRESHOLDS_FILE
    try:
        raw = json.loads(target.read_text())
    except FileNotFoundError:
        raise RunError(f"{target} does not exist; tune thresholds on the validation split first "
                       "(multilabel runs write it during `tinyvision train`).") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{target} is not a readable thresholds JSON file ({exc}); delete it and "
                       "tune thresholds again.") from None
    loaded = _parse(raw, target)
    if classes is not None and list(classes) != loaded.classes:
        raise RunError(f"{target} holds thresholds for classes {loaded.classes}, but the model "
                       f"has classes {list(classes)}; tune thresholds again for this model.")
    return loaded


def _parse(raw: Any, target: Path) -> Thresholds:
    keys = {"classes", "thresholds", "beta"}
    if not isinstance(raw, dict) or not keys <= set(raw):
        received = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise RunError(f"{target} must hold an object with keys {sorted(keys)}, received "
                       f"{received}; tune thresholds again.")
    classes, values = raw["classes"], raw["thresholds"]
    valid = isinstance(classes, list) and isinstance(values, list) and len(classes) == len(values) \
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                for v in values)
    if not valid:
        raise RunError(f"{target} must list one threshold in [0, 1] per class, received "
                       f"{len(classes) if isinstance(classes, list) else classes!r} classes and "
                       f"thresholds={values!r}; tune thresholds again.")
    beta = raw["beta"]
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise RunError(f"{target} must hold a positive beta, received beta={beta!r}; tune "
                       "thresholds again.")
    return Thresholds([str(c) for c in classes], [float(v) for v in values], float(beta))
