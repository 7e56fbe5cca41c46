"""No silent failure: a model that learnt nothing is flagged (console, summary.json, report,
registry), and a model the int8 export refuses keeps its evaluation, report and registry row."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import make_class_folders, tiny_config
from helpers import settle_batchnorm
from tinyvision.config import validate_config
from tinyvision.evaluate.health import (box_baselines, box_warning, collapse_warning,
                                        informedness)

CLASSES = ["cat", "dog", "owl"]


def _one_hot(labels) -> np.ndarray:
    return np.eye(len(CLASSES))[np.asarray(labels)]


def test_one_answer_for_every_image_is_a_collapse():
    truth = _one_hot([0, 1, 2] * 10)
    scores = np.tile([0.2, 0.7, 0.1], (30, 1))
    warning = collapse_warning(truth, scores, CLASSES, "multiclass", "val")
    assert warning["code"] == "collapse"
    assert "answers 'dog' for 100% of the 30 val images" in warning["message"]
    assert "Fixes:" in warning["message"] and "train.budget" in warning["message"]


def test_majority_rate_accuracy_is_a_collapse_and_a_good_model_is_not():
    labels = np.array([0] * 16 + [1] * 2 + [2] * 2)  # 80 % cat
    truth = _one_hot(labels)
    mostly_right = labels.copy()
    mostly_right[16:18] = 0  # 90 % right
    assert collapse_warning(truth, _one_hot(mostly_right), CLASSES, "multiclass", "test") is None
    # answers vary (80 % cat), yet accuracy 0.7 is below always answering cat (0.8)
    muddled = np.array([1, 2] + [0] * 14 + [0, 0, 0, 0])
    warning = collapse_warning(truth, _one_hot(muddled), CLASSES, "multiclass", "test")
    assert "barely better than chance class by class" in warning["message"]
    assert "accuracy 0.700, always the most common class 0.800" in warning["message"]
    all_cat = collapse_warning(truth, _one_hot([0] * 20), CLASSES, "multiclass", "test")
    assert "answers 'cat' for 100% of the 20 test images" in all_cat["message"]
    assert collapse_warning(truth, truth, CLASSES, "multiclass", "test") is None
    # a one-sided set answered right is not a collapse; too few images say nothing
    sided = _one_hot([0] * 19 + [1])
    assert collapse_warning(sided, sided, CLASSES, "multiclass", "test") is None
    assert collapse_warning(truth[:5], _one_hot([0] * 5), CLASSES, "multiclass", "test") is None


def _predictions(truth: np.ndarray, recalls: dict[int, float], rng) -> np.ndarray:
    """Class predictions right with the given recall per class, else the other class."""
    predicted = truth.copy()
    for k, recall in recalls.items():
        rows = np.flatnonzero(truth == k)
        wrong = rng.choice(rows, int(round(len(rows) * (1 - recall))), replace=False)
        predicted[wrong] = 1 - k
    return predicted


def test_a_skewed_split_cannot_hide_a_model_that_learnt_nothing():
    """A 63/37 split: predictions that are 98 % the majority class, and the issue's real run
    (64.6 % accuracy against 63.4 % for the majority, macro F1 0.55), are flagged; the 99 % run
    on the same split is not. Accuracy against the majority class missed the second."""
    rng = np.random.default_rng(0)
    truth = np.array([0] * 634 + [1] * 366)
    classes = ["ok", "defect"]
    mostly_majority = np.where(rng.random(1000) < 0.98, 0, 1)
    warning = collapse_warning(np.eye(2)[truth], np.eye(2)[mostly_majority], classes,
                               "multiclass", "test")
    assert "answers 'ok' for 98%" in warning["message"]
    weak = _predictions(truth, {0: 0.9, 1: 0.206}, rng)  # the run, from its figures
    assert np.mean(weak == truth) == pytest.approx(0.646, abs=0.002)
    warning = collapse_warning(np.eye(2)[truth], np.eye(2)[weak], classes, "multiclass", "test")
    assert warning is not None and "barely better than chance class by class" in \
        warning["message"] and "informedness 0.10" in warning["message"]
    good = _predictions(truth, {0: 0.99, 1: 0.99}, rng)
    assert collapse_warning(np.eye(2)[truth], np.eye(2)[good], classes, "multiclass",
                            "test") is None


def test_the_bar_rises_on_a_small_test_split():
    """The same recalls (0.8 and 0.6: informedness 0.4) are useful on 400 images and cannot be
    told from chance on 12."""
    rng = np.random.default_rng(1)
    for n, flagged in ((400, False), (12, True)):
        truth = np.array([0, 1] * (n // 2))
        predicted = _predictions(truth, {0: 0.8, 1: 0.6}, rng)
        found = collapse_warning(np.eye(2)[truth], np.eye(2)[predicted], ["a", "b"],
                                 "multiclass", "test")
        assert (found is not None) == flagged, (n, found)


def test_informedness_by_hand():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2, 2])  # recalls 0.75, 0.5, 1.0
    value, se = informedness(truth, predicted, 3)
    balanced = (0.75 + 0.5 + 1.0) / 3
    assert value == pytest.approx((balanced - 1 / 3) / (2 / 3))
    assert se == pytest.approx(np.sqrt(0.75 * 0.25 / 4 + 0.25 / 2) / 3 / (2 / 3))


def test_multilabel_collapse():
    truth = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]] * 5, float)
    nothing = np.full(truth.shape, 0.1)
    warning = collapse_warning(truth, nothing, CLASSES, "multilabel", "val")
    assert "answers no class for 100%" in warning["message"]
    assert collapse_warning(truth, truth * 0.9, CLASSES, "multilabel", "val") is None


def _fake_training(head_kernel_scale: float, head_bias):
    """A train_stage that builds the config's model, settles its BatchNorm statistics, sets the
    class head's kernel and bias, and saves it as a trained run would."""
    from tinyvision.models.build import build_model
    from tinyvision.files import atomic_path
    from tinyvision.training.trainer import TrainResult

    def train_stage(cfg, run, data, console=None, resume=False):
        model = build_model(cfg.model, len(data.manifest.classes), data.manifest.task)
        settle_batchnorm(model, np.asarray(data.cache.images[data.indices("train")]))
        layer = model.get_layer("head_logits")
        kernel, _ = layer.get_weights()
        layer.set_weights([kernel * head_kernel_scale, np.asarray(head_bias, np.float32)])
        with atomic_path(run.float_model, suffix=".keras") as tmp:
            model.save(tmp)
        return TrainResult(model, 1, 0.5, "val_accuracy", [], [], 1.0, [])

    return train_stage


@pytest.fixture
def three_class_config(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=20)  # 12 test images: enough to judge
    return validate_config(tiny_config(root, tmp_path / "runs"))


@pytest.mark.slow
def test_a_one_class_model_is_flagged_everywhere(three_class_config, monkeypatch, caplog):
    from tinyvision.run.registry import Registry
    from tinyvision.run.run import full_run

    monkeypatch.setattr("tinyvision.run.run.train_stage", _fake_training(0.01, [8.0, 0.0, 0.0]))
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        run, summary = full_run(three_class_config, progress=False)
    summary = summary.to_json()  # as summary.json keeps it
    assert [w["code"] for w in summary["warnings"]] == ["collapse"]
    assert "answers 'blue' for 100%" in summary["warnings"][0]["message"]
    assert any("learnt nothing useful" in r.getMessage() for r in caplog.records)
    assert json.loads(run.summary.read_text())["warnings"] == summary["warnings"]
    report = (run.root / "report.html").read_text()
    assert 'class="banner"' in report and "learnt nothing useful" in report
    row = Registry(three_class_config.runs_dir).get(run.name)
    assert row["status"] == "finished" and row["warnings"] == "collapse"


@pytest.mark.slow
def test_an_export_refusal_keeps_evaluation_report_and_registry_row(three_class_config,
                                                                      monkeypatch):
    """A head whose logits are all 0 gives a softmax input the int8 checks refuse: the run exits
    non-zero with one message, and everything computed before is kept."""
    import yaml

    from tinyvision.cli import app
    from tinyvision.run.registry import Registry

    monkeypatch.setattr("tinyvision.run.run.train_stage", _fake_training(0.0, [0.0, 0.0, 0.0]))
    config = three_class_config.runs_dir.parent / "run.yaml"
    config.write_text(yaml.safe_dump(three_class_config.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "report.html" in result.output and "export_failed" in result.output
    run_dir = three_class_config.runs_dir / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "export_failed" and summary["error"]
    assert summary["float"]["accuracy"] == pytest.approx(1 / 3, abs=0.2)
    assert json.loads((run_dir / "metrics.json").read_text())["float"]["images"] > 0
    assert (run_dir / "report.html").is_file()
    row = Registry(three_class_config.runs_dir).get("tiny")
    assert row["status"] == "export_failed" and "quantisation" in row["error"]
    assert row["float_accuracy"] == summary["float"]["accuracy"] and row["int8_accuracy"] is None
    assert row["recipe"] == "scratch" and row["color_mode"] == "rgb"  # the resolved config


# ---- boxes -----------------------------------------------------------------------------------
def _boxes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.uniform(0.0, 0.6, (n, 2))
    return np.concatenate([low, low + rng.uniform(0.1, 0.4, (n, 2))], axis=1)


def test_constant_boxes_and_their_scores_by_hand():
    train = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [np.nan] * 4])
    truth = np.array([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]])
    baselines = box_baselines(train, truth)
    assert baselines["mean_box"]["box"] == [0.25, 0.25, 0.75, 0.75]  # the NaN row is left out
    # the mean box: IoU 1 with the first, 0.25 with the whole image; the whole image: 0.25 and 1
    assert baselines["mean_box"]["mean_iou"] == pytest.approx(0.625)
    assert baselines["whole_image"]["mean_iou"] == pytest.approx(0.625)
    assert baselines["mean_box"]["accuracy_iou50"] == 0.5


def test_a_box_no_better_than_a_constant_is_flagged_and_a_good_one_is_not():
    train, truth = _boxes(200, seed=1), _boxes(30, seed=2)
    mean = np.tile(np.nanmean(train, axis=0), (30, 1))
    warning = box_warning(train, truth, mean + 0.001, "test")
    assert warning["code"] == "box_no_better_than_constant"
    assert "30 test images" in warning["message"] and "mean box" in warning["message"]
    assert "Fixes:" in warning["message"] and "train.budget" in warning["message"]
    assert box_warning(train, truth, truth, "test") is None
    rng = np.random.default_rng(3)
    assert box_warning(train, truth, truth + rng.normal(0, 0.02, truth.shape), "test") is None
    # barely better than the constant, on a few images: not told apart from it
    nudged = mean + 0.3 * (truth - mean)
    assert box_warning(train, truth[:12], nudged[:12] + rng.normal(0, 0.1, (12, 4)),
                       "test") is not None
    assert box_warning(train, truth[:5], mean[:5], "test") is None  # too few to judge
    whole = np.tile([0.0, 0.0, 1.0, 1.0], (30, 1))
    big = np.tile([0.02, 0.01, 0.99, 1.0], (30, 1))
    assert "whole image" in box_warning(train, whole, big, "val")["message"]


def _spot_images(root, n: int, shuffled: bool, size: int = 48) -> dict:
    """One class: a bright square on a dark noisy background, its box in a CSV; with `shuffled`,
    every image gets another image's box (nothing to learn but where boxes usually are)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    boxes = []
    for i in range(n):
        side = int(rng.integers(10, 22))
        x1, y1 = (int(v) for v in rng.integers(0, size - side, 2))
        pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        pixels[y1:y1 + side, x1:x1 + side] = (230, 220, 90)
        Image.fromarray(pixels).save(root / f"spot_{i}.png")
        boxes.append((x1, y1, x1 + side, y1 + side))
    order = rng.permutation(n) if shuffled else np.arange(n)
    rows = [f"spot_{i}.png,{','.join(map(str, boxes[j]))},spot" for i, j in enumerate(order)]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return {"source": {"format": "csv", "path": str(root / "boxes.csv")}, "val_fraction": 0.2,
            "test_fraction": 0.25, "workers": 2}


@pytest.mark.slow
@pytest.mark.parametrize("shuffled", [True, False])
def test_a_box_trained_on_shuffled_boxes_is_flagged_everywhere(tmp_path, shuffled):
    """Shuffled boxes leave a box head nothing to learn but the usual place: the run ends
    flagged (console, summary.json, report, registry); the same images with their own boxes
    learn and are not flagged."""
    from tinyvision.run.registry import Registry
    from tinyvision.run.run import full_run

    raw = {"name": "spots", "seed": 0, "runs_dir": str(tmp_path / "runs"),
           "data": _spot_images(tmp_path / "spots", 80, shuffled),
           "model": {"backbone": "plain_cnn", "plain_cnn": {"filters": [16, 32, 32]},
                     "input_size": 48, "weights": "none"},
           "train": {"budget": "400 steps"},
           "export": {"representative_samples": 32}, "verify": {"tflm_samples": 3}}
    run, summary = full_run(validate_config(raw), progress=False)
    summary = summary.to_json()
    codes = [w["code"] for w in summary["warnings"]]
    row = Registry(tmp_path / "runs").get(run.name)
    report = (run.root / "report.html").read_text()
    baseline = summary["box_baselines"]["mean_box"]["mean_iou"]
    if shuffled:
        assert "box_no_better_than_constant" in codes
        assert "box_no_better_than_constant" in row["warnings"]
        assert 'class="banner"' in report and "The box learnt nothing useful" in report
    else:
        assert "box_no_better_than_constant" not in codes, summary["warnings"]
        assert summary["int8"]["mean_iou"] > baseline + 0.1
        assert row["int8_mean_iou"] == summary["int8"]["mean_iou"]
    assert "accuracy" not in summary["float"]  # one class: the box alone
    assert "IoU distribution" in report and "Lowest IoU, int8 model" in report
