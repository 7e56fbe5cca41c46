"""Class imbalance, training side: class weights, oversampling, and both wired into training."""

from collections import Counter

import numpy as np
import pytest

from helpers import make_class_folders, tiny_config
from tinyvision.config import validate_config
from tinyvision.errors import ConfigError
from tinyvision.training.imbalance import class_weight_vector, oversample_indices

CLASSES = ["cat", "dog", "fox"]


def one_hot(labels: list[int], classes: int = 3) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels]


def test_balanced_multiclass_weights_are_inverse_frequency():
    targets = one_hot([0] * 6 + [1] * 2 + [2] * 4)
    weights = class_weight_vector("balanced", CLASSES, targets, "multiclass")
    np.testing.assert_allclose(weights, [12 / (3 * 6), 12 / (3 * 2), 12 / (3 * 4)])
    # the average sample weight stays 1, so the loss keeps its scale
    assert weights[targets.argmax(1)].mean() == pytest.approx(1.0)


def test_balanced_ignores_a_class_absent_from_training():
    weights = class_weight_vector("balanced", CLASSES, one_hot([0] * 3 + [1]), "multiclass")
    np.testing.assert_allclose(weights, [4 / (2 * 3), 4 / (2 * 1), 1.0])


def test_balanced_multilabel_weights_positives_by_negative_to_positive_ratio():
    targets = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], np.float32)
    weights = class_weight_vector("balanced", CLASSES, targets, "multilabel")
    np.testing.assert_allclose(weights, [1 / 3, 3 / 1, 3 / 1])


def test_given_weights_and_none():
    targets = one_hot([0, 1, 2])
    np.testing.assert_allclose(class_weight_vector({"dog": 4.0}, CLASSES, targets, "multiclass"),
                               [1.0, 4.0, 1.0])
    assert class_weight_vector("none", CLASSES, targets, "multiclass") is None


def test_unknown_class_name_is_an_error_listing_the_classes():
    with pytest.raises(ConfigError, match=r"names 'dgo'.*Did you mean 'dog'\?.*cat, dog, fox"):
        class_weight_vector({"dgo": 2.0}, CLASSES, one_hot([0, 1]), "multiclass")


def test_config_rejects_bad_class_weights():
    raw = {"data": {"source": {"format": "folder", "root": "x"}}, "train": {}}
    for bad, message in (("balance", "Did you mean 'balanced'"), ({"cat": 0}, "numbers > 0")):
        raw["train"]["class_weights"] = bad
        with pytest.raises(ConfigError, match=message):
            validate_config(raw)


def test_oversampling_multiclass_equalises_classes_and_is_seeded():
    indices = np.arange(100, 113)
    targets = one_hot([0] * 7 + [1] * 2 + [2] * 4)
    out = oversample_indices(indices, targets, "multiclass", seed=3)
    label_of = dict(zip(indices, targets.argmax(1)))
    assert Counter(label_of[i] for i in out) == {0: 7, 1: 7, 2: 7}
    assert set(out) == set(indices)  # every sample is kept
    counts = Counter(out)
    assert all(counts[i] == 1 for i in indices[:7])  # the largest class is not repeated
    assert all(counts[i] in (1, 2) for i in indices[9:])  # 4 -> 7: once each plus 3 repeats
    np.testing.assert_array_equal(out, oversample_indices(indices, targets, "multiclass", seed=3))
    assert not np.array_equal(out, oversample_indices(indices, targets, "multiclass", seed=4))


def test_oversampling_multilabel_about_equalises_labels():
    rng = np.random.default_rng(0)
    targets = np.zeros((400, 3), np.float32)
    targets[:, 0] = rng.random(400) < 0.5
    targets[:, 1] = rng.random(400) < 0.1
    targets[:, 2] = rng.random(400) < 0.05
    out = oversample_indices(np.arange(400), targets, "multilabel", seed=0)
    seen = targets[out].sum(axis=0)
    before = targets.sum(axis=0)
    assert before.max() / before.min() > 5
    # every label now appears about as often as the most common one did; repeats of rare-label
    # images also repeat their other labels, so the common label grows too (co-occurrence)
    assert seen.min() >= 0.85 * before.max()
    assert seen.max() / seen.min() < 2.5


@pytest.mark.slow
def test_training_with_class_weights_oversampling_and_configured_optimisation(tmp_path):
    """Wiring: an imbalanced folder set trains with balanced weights, oversampling, focal loss,
    SGD + one-cycle, and per-group rates in the fine-tune stage, each logged per epoch."""
    from tinyvision.config import load_config
    from tinyvision.training.trainer import TrainData, train_model
    from tinyvision.run.stages import prepare_data
    from tinyvision.run.run import make_run_folder

    root = make_class_folders(tmp_path / "images", per_class=12, classes=("red",))
    make_class_folders(root, per_class=4, classes=("green",))
    raw = tiny_config(root, tmp_path / "runs", train={
        "loss": "focal", "class_weights": "balanced", "oversample": True, "optimizer": "sgd",
        "max_steps_per_epoch": 2, "batch_size": 4,
        "head": {"epochs": 1, "learning_rate": 0.01, "schedule": "one_cycle",
                 "cache_features": False},
        "fine_tune": {"epochs": 1, "learning_rate": 0.01, "unfreeze_from": "block_12",
                      "schedule": {"name": "plateau", "patience": 1},
                      "lr_multipliers": {"early": 0.1, "late": 0.5}}})
    cfg, run = make_run_folder(load_config(base=raw))
    prepared = prepare_data(cfg, run, progress=False)
    data = TrainData(prepared.cache.images, prepared.manifest.label_matrix(),
                     prepared.indices("train"), prepared.indices("val"),
                     prepared.indices("test"), prepared.manifest.classes, prepared.manifest.task)
    result = train_model(cfg, data, run)
    assert [row["stage"] for row in result.history] == ["head", "fine_tune"]
    assert all(np.isfinite(row["loss"]) for row in result.history)
    assert result.model.optimizer.__class__.__name__ == "ScaledSGD"
    assert result.model.loss.__class__.__name__ == "ClassWeighted"
