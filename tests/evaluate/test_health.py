"""No silent failure: a model that learnt nothing is flagged (console, summary.json, report,
registry), and a model the int8 export refuses keeps its evaluation, report and registry row."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import make_class_folders, tiny_config
from helpers import settle_batchnorm
from tinyvision.config import validate_config
from tinyvision.evaluate.health import collapse_warning

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
    assert "test accuracy 0.700 is no better than always answering the most common class " \
        "(0.800)" in warning["message"]
    all_cat = collapse_warning(truth, _one_hot([0] * 20), CLASSES, "multiclass", "test")
    assert "answers 'cat' for 100% of the 20 test images" in all_cat["message"]
    assert collapse_warning(truth, truth, CLASSES, "multiclass", "test") is None
    # a one-sided set answered right is not a collapse; too few images say nothing
    sided = _one_hot([0] * 19 + [1])
    assert collapse_warning(sided, sided, CLASSES, "multiclass", "test") is None
    assert collapse_warning(truth[:5], _one_hot([0] * 5), CLASSES, "multiclass", "test") is None


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
