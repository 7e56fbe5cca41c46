"""Class imbalance, training side: class weights (`train.class_weights`) and oversampling
(`train.oversample`). Both are computed from the training split only.

Multi-class (and the class of a detection): a sample's weight is its class's weight; balanced
weights are n / (classes x n_class), as scikit-learn's `compute_class_weight`. Multi-label: each
label's positives are weighted; balanced is n_negative / n_positive per label.
"""

from __future__ import annotations


import numpy as np

from tinyvision.errors import ConfigError, did_you_mean


def class_weight_vector(setting: str | dict[str, float], classes: list[str], targets: np.ndarray,
                        task: str) -> np.ndarray | None:
    """One weight per class (multi-label: per label's positives) from `train.class_weights`, or
    None for "none". `targets` are the training rows (multi-hot / one-hot)."""
    if isinstance(setting, dict):
        _check_class_names(setting, classes)
        return np.array([float(setting.get(c, 1.0)) for c in classes], np.float32)
    if setting == "none":
        return None
    if setting != "balanced":
        raise ConfigError(f"train.class_weights={setting!r}; expected 'none', 'balanced' or a "
                          "mapping {class: weight}.")
    targets = np.asarray(targets, np.float32)
    n = len(targets)
    positives = targets.sum(axis=0)
    weights = np.ones(len(classes), np.float32)
    present = positives > 0  # a class absent from the training split keeps weight 1 (unused)
    if task == "multilabel":
        weights[present] = (n - positives[present]) / positives[present]
    else:
        weights[present] = n / (int(present.sum()) * positives[present])
    return weights


def _check_class_names(mapping: dict[str, float], classes: list[str]) -> None:
    for name in mapping:
        if name not in classes:
            raise ConfigError(f"train.class_weights names {name!r}, which is not a class of this "
                              f"dataset.{did_you_mean(name, classes)} Known classes: "
                              f"{', '.join(classes)}.")


def oversample_indices(indices: np.ndarray, targets: np.ndarray, task: str,
                       seed: int) -> np.ndarray:
    """`indices` with rarer-class samples repeated (seeded) so that each class appears about as
    often as the most frequent one; sorted (the training dataset shuffles).

    Multi-class: every class gets exactly n_max rows (whole repeats plus a random remainder).
    Multi-label: a sample is repeated n_max / n_rarest-of-its-labels times on average (random
    rounding); samples without labels appear once. Every label then appears about n_max times
    or more: repeating an image repeats all its labels, so co-occurring labels grow as well.
    """
    indices = np.asarray(indices, np.int64)
    rows = np.asarray(targets, np.float32)
    if len(indices) == 0:
        return indices
    rng = np.random.default_rng(seed)
    if task == "multilabel":
        return np.sort(_oversample_multilabel(indices, rows, rng))
    labels = rows.argmax(axis=1)
    counts = np.bincount(labels, minlength=rows.shape[1])
    target = counts.max()
    parts = []
    for c in np.flatnonzero(counts):
        members = indices[labels == c]
        whole, rest = divmod(int(target), len(members))
        parts += [np.tile(members, whole), rng.choice(members, rest, replace=False)]
    return np.sort(np.concatenate(parts))


def _oversample_multilabel(indices: np.ndarray, rows: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
    counts = rows.sum(axis=0)
    target = counts.max()
    ratio = np.where(counts > 0, target / np.maximum(counts, 1), 1.0)
    factors = np.where(rows.any(axis=1), (rows * ratio).max(axis=1), 1.0)
    copies = np.floor(factors).astype(np.int64)
    copies += rng.random(len(factors)) < (factors - copies)
    return np.repeat(indices, copies)


def balance_training_data(cfg, data):
    """(data with the training indices oversampled if `train.oversample`, class weights or None)
    for a `TrainData`; the weights come from the training split before oversampling."""
    from dataclasses import replace

    rows = data.targets[data.train]
    weights = class_weight_vector(cfg.train.class_weights, data.classes, rows, data.task)
    if cfg.train.oversample:
        data = replace(data, train=oversample_indices(data.train, rows, data.task, cfg.seed))
    return data, weights
