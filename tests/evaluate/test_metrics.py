"""Metrics against hand-computed values on tiny cases, and scikit-learn where it has them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console
from sklearn import metrics as skm

from tinyvision.errors import ConfigError, DataError
from tinyvision.evaluate.metrics import (
    box_metrics,
    classification_metrics,
    format_metrics_table,
    iou,
    worst_predictions,
)

# ---- multiclass hand case --------------------------------------------------------------------
# true: a a b b b c;  predicted (argmax): a b b b c a
MC_CLASSES = ["a", "b", "c"]
MC_TRUE = np.array([0, 0, 1, 1, 1, 2])
MC_SCORES = np.array([
    [0.6, 0.3, 0.1],  # a -> a
    [0.3, 0.5, 0.2],  # a -> b
    [0.1, 0.8, 0.1],  # b -> b
    [0.2, 0.7, 0.1],  # b -> b
    [0.1, 0.4, 0.5],  # b -> c
    [0.5, 0.2, 0.3],  # c -> a
])


def test_multiclass_by_hand():
    m = classification_metrics(MC_TRUE, MC_SCORES, MC_CLASSES, "multiclass", beta=2.0)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]
    # a: TP 1, FP 1 (c->a), FN 1. b: TP 2, FP 1 (a->b), FN 1. c: TP 0, FP 1, FN 1.
    expected = {"a": (1 / 2, 1 / 2, 1 / 2, 2), "b": (2 / 3, 2 / 3, 2 / 3, 3), "c": (0, 0, 0, 1)}
    for name, (precision, recall, f1, support) in expected.items():
        row = m["per_class"][name]
        assert [row["precision"], row["recall"], row["f1"]] == \
            pytest.approx([precision, recall, f1])
        assert row["fbeta"] == pytest.approx(f1)  # precision == recall, so every F-beta equals F1
        assert row["support"] == support
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert m["averages"]["macro"]["precision"] == pytest.approx(7 / 18)
    assert m["averages"]["weighted"]["f1"] == pytest.approx((2 * 1 / 2 + 3 * 2 / 3 + 0) / 6)
    assert m["averages"]["micro"]["f1"] == pytest.approx(m["accuracy"])
    # ROC-AUC = share of (positive, negative) pairs ranked right; AP = mean precision at each hit.
    assert m["per_class"]["a"]["roc_auc"] == pytest.approx(7 / 8)
    assert m["per_class"]["b"]["roc_auc"] == pytest.approx(8 / 9)
    assert m["per_class"]["c"]["roc_auc"] == pytest.approx(4 / 5)
    assert m["per_class"]["a"]["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["per_class"]["b"]["pr_auc"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert m["per_class"]["c"]["pr_auc"] == pytest.approx(1 / 2)
    assert m["roc_auc_macro"] == pytest.approx((7 / 8 + 8 / 9 + 4 / 5) / 3)
    assert json.loads(json.dumps(m)) == m


def test_multiclass_one_hot_equals_indices():
    by_index = classification_metrics(MC_TRUE, MC_SCORES, MC_CLASSES, "multiclass")
    one_hot = classification_metrics(np.eye(3)[MC_TRUE], MC_SCORES, MC_CLASSES, "multiclass")
    assert by_index == one_hot


def test_fbeta_differs_from_f1_when_precision_and_recall_differ():
    # b: P = 2/3, R = 1 -> F2 = 5 P R / (4 P + R) = 10/11; F0.5 = 1.25 P R / (0.25 P + R) = 5/7
    y, s = np.array([0, 1, 1]), np.array([[0.4, 0.6], [0.1, 0.9], [0.2, 0.8]])
    assert classification_metrics(y, s, ["a", "b"], "multiclass", beta=2)["per_class"]["b"][
        "fbeta"] == pytest.approx(10 / 11)
    assert classification_metrics(y, s, ["a", "b"], "multiclass", beta=0.5)["per_class"]["b"][
        "fbeta"] == pytest.approx(5 / 7)


# ---- multilabel hand case --------------------------------------------------------------------
ML_CLASSES = ["x", "y"]
ML_TRUE = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
ML_SCORES = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.1], [0.2, 0.3]])
# predicted at 0.5: [1, 0], [0, 1], [1, 0], [0, 0]


def test_multilabel_by_hand():
    m = classification_metrics(ML_TRUE, ML_SCORES, ML_CLASSES, "multilabel")
    assert m["subset_accuracy"] == m["accuracy"] == pytest.approx(1 / 4)
    assert m["hamming_accuracy"] == pytest.approx(5 / 8)
    assert m["thresholds"] == [0.5, 0.5]
    x, y = m["per_class"]["x"], m["per_class"]["y"]
    assert (x["precision"], x["recall"], x["f1"], x["support"]) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (y["precision"], y["recall"], y["f1"], y["support"]) == pytest.approx((1, 0.5, 2 / 3, 2))
    micro = m["averages"]["micro"]  # TP 2, FP 1, FN 2
    assert [micro["precision"], micro["recall"], micro["f1"]] == \
        pytest.approx([2 / 3, 1 / 2, 4 / 7])
    samples = m["averages"]["samples"]  # per image F1: 1, 2/3, 0, 0
    assert samples["f1"] == pytest.approx((1 + 2 / 3) / 4)
    assert samples["precision"] == pytest.approx((1 + 1) / 4)
    assert samples["recall"] == pytest.approx((1 + 1 / 2) / 4)
    assert m["label_confusion"] == {"x": [[1, 1], [1, 1]], "y": [[2, 0], [1, 1]]}
    assert x["roc_auc"] == pytest.approx(3 / 4) and y["roc_auc"] == pytest.approx(1.0)
    assert "confusion_matrix" not in m
    assert json.loads(json.dumps(m)) == m


def test_multilabel_per_class_thresholds():
    m = classification_metrics(ML_TRUE, ML_SCORES, ML_CLASSES, "multilabel", thresholds=[0.5, 0.25])
    assert m["per_class"]["y"]["f1"] == pytest.approx(1.0)  # 0.3 now counts as a hit
    assert m["per_class"]["x"]["f1"] == pytest.approx(0.5)
    assert m["thresholds"] == [0.5, 0.25]


def test_auc_is_none_for_a_class_with_one_label_value():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    m = classification_metrics(y, np.full((3, 2), 0.4), ["p", "q"], "multilabel")
    assert m["per_class"]["q"]["roc_auc"] is None and m["per_class"]["q"]["pr_auc"] is None
    assert m["per_class"]["p"]["roc_auc"] == pytest.approx(0.5)
    assert m["roc_auc_macro"] == pytest.approx(0.5)


# ---- against scikit-learn on random data -----------------------------------------------------
def _random_case(task: str, seed: int = 0, n: int = 60, k: int = 4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    if task == "multiclass":
        y = rng.integers(0, k, n)
        logits[np.arange(n), y] += 1.0  # better than chance
        scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    else:
        y = (rng.random((n, k)) < 0.4).astype(int)
        scores = 1 / (1 + np.exp(-(logits + 1.5 * (2 * y - 1))))
    return y, scores, [f"c{i}" for i in range(k)]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_agrees_with_sklearn(task):
    y, scores, classes = _random_case(task)
    thresholds = [0.3, 0.5, 0.6, 0.45] if task == "multilabel" else None
    m = classification_metrics(y, scores, classes, task, thresholds=thresholds, beta=2.0)
    pred = (scores.argmax(1) if task == "multiclass"
            else (scores >= np.array(thresholds)).astype(int))
    indicator = np.eye(len(classes), dtype=int)[y] if task == "multiclass" else y
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, zero_division=0)
    fb = skm.fbeta_score(y, pred, beta=2.0, average=None, zero_division=0)
    for i, name in enumerate(classes):
        row = m["per_class"][name]
        assert [row["precision"], row["recall"], row["f1"], row["fbeta"], row["support"]] == \
            pytest.approx([p[i], r[i], f[i], fb[i], s[i]])
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(indicator[:, i], scores[:, i]))
        assert row["pr_auc"] == pytest.approx(
            skm.average_precision_score(indicator[:, i], scores[:, i]))
    for average, values in m["averages"].items():
        assert values["f1"] == pytest.approx(
            skm.f1_score(y, pred, average=average, zero_division=0))
        assert values["fbeta"] == pytest.approx(
            skm.fbeta_score(y, pred, beta=2.0, average=average, zero_division=0))
        assert values["precision"] == pytest.approx(
            skm.precision_score(y, pred, average=average, zero_division=0))
        assert values["recall"] == pytest.approx(
            skm.recall_score(y, pred, average=average, zero_division=0))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    if task == "multiclass":
        assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
        assert m["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, scores, multi_class="ovr"))
        assert set(m["averages"]) == {"macro", "micro", "weighted"}
    else:
        assert m["hamming_accuracy"] == pytest.approx(1 - skm.hamming_loss(y, pred))
        assert m["label_confusion"] == dict(zip(classes,
                                                skm.multilabel_confusion_matrix(y, pred).tolist()))
        assert m["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, scores, average="macro"))


# ---- argument checks -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    ({"task": "multi-class"}, ConfigError, "Did you mean 'multiclass'"),
    ({"beta": 0}, ConfigError, "beta=0"),
    ({"thresholds": [0.5, 0.5, 0.5]}, ConfigError, "only to task='multilabel'"),
    ({"scores": MC_SCORES[:, :2]}, DataError, r"shape \(samples, 3\)"),
    ({"scores": MC_SCORES * 3}, DataError, "Apply softmax"),
    ({"y_true": [0, 1, 2, 3, 0, 0]}, DataError, r"class indices in \[0, 3\)"),
    ({"y_true": np.ones((6, 3))}, DataError, "exactly one 1 per row"),
    ({"classes": ["a", "a", "b"]}, DataError, "repeated names"),
])
def test_invalid_arguments(kwargs, error, match):
    arguments = {"y_true": MC_TRUE, "scores": MC_SCORES, "classes": MC_CLASSES,
                 "task": "multiclass", **kwargs}
    with pytest.raises(error, match=match):
        classification_metrics(**arguments)


def test_multilabel_threshold_checks():
    with pytest.raises(ConfigError, match=r"one number in \[0, 1\] per class \(2\)"):
        classification_metrics(ML_TRUE, ML_SCORES, ML_CLASSES, "multilabel", thresholds=[0.5])
    with pytest.raises(DataError, match="multi-hot"):
        classification_metrics(ML_TRUE * 2, ML_SCORES, ML_CLASSES, "multilabel")


# ---- worst predictions -----------------------------------------------------------------------
def test_worst_predictions_multiclass():
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.7, 0.3], [0.1, 0.9]])
    paths = [f"img{i}.jpg" for i in range(5)]
    worst = worst_predictions(y, scores, paths, ["a", "b"], "multiclass", n=2)
    assert worst["a"] == [{"path": "img2.jpg", "score": 0.9, "true": "a", "pred": "b"},
                          {"path": "img0.jpg", "score": 0.8, "true": "a", "pred": "b"}]
    assert worst["b"] == [{"path": "img3.jpg", "score": 0.7, "true": "b", "pred": "a"}]


def test_worst_predictions_multilabel():
    paths = [f"img{i}.jpg" for i in range(4)]
    worst = worst_predictions(ML_TRUE, ML_SCORES, paths, ML_CLASSES, "multilabel", n=5)
    # x: img1 missed (0.4, 0.1 below 0.5), img2 false alarm (0.6, 0.1 above): a tie keeps order.
    assert [(w["path"], w["error"], w["score"]) for w in worst["x"]] == [
        ("img1.jpg", "false_negative", 0.4), ("img2.jpg", "false_positive", 0.6)]
    assert worst["x"][0]["true"] == ["x", "y"] and worst["x"][0]["pred"] == ["y"]
    assert [w["path"] for w in worst["y"]] == ["img3.jpg"]
    tuned = worst_predictions(ML_TRUE, ML_SCORES, paths, ML_CLASSES, "multilabel",
                              thresholds=[0.5, 0.25])
    assert tuned["y"] == []


def test_worst_predictions_checks():
    with pytest.raises(DataError, match="one path per row"):
        worst_predictions(MC_TRUE, MC_SCORES, ["a.jpg"], MC_CLASSES, "multiclass")
    with pytest.raises(ConfigError, match="n=0"):
        worst_predictions(MC_TRUE, MC_SCORES, ["p"] * 6, MC_CLASSES, "multiclass", n=0)


# ---- boxes -----------------------------------------------------------------------------------
def test_iou_by_hand():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 4, 4], [0, 0, 1, 1], [1, 1, 1, 1]])
    b = np.array([[1, 1, 3, 3], [2, 2, 3, 3], [1, 1, 2, 2], [0, 0, 1, 1], [1, 1, 1, 1]])
    assert iou(a, b) == pytest.approx([1 / 7, 0.0, 1 / 16, 1.0, 0.0])
    pairwise = iou(a[:, None], b[None])
    assert pairwise.shape == (5, 5)
    assert np.diag(pairwise) == pytest.approx(iou(a, b))
    assert iou([0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(1 / 3)
    with pytest.raises(DataError, match=r"\(\.\.\., 4\)"):
        iou(np.zeros((2, 3)), np.zeros((2, 3)))


# Ground truth [0, 0, .5, .5]; a prediction [0, 0, .5, .5 w] has IoU w.
GT = np.tile([0.0, 0.0, 0.5, 0.5], (4, 1))
PRED = np.array([[0, 0, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9], [0, 0, 0.5, 0.36], [0, 0, 0.5, 0.31]])
CONF = np.array([0.9, 0.8, 0.7, 0.6])  # IoUs 1.0, 0.0, 0.72, 0.62 in rank order


def test_box_metrics_by_hand():
    m = box_metrics(GT, PRED, scores=CONF)
    assert m["mean_iou"] == pytest.approx((1 + 0 + 0.72 + 0.62) / 4)
    assert m["accuracy_iou50"] == pytest.approx(3 / 4)
    # t <= 0.60: hits T F T T -> precision 1, 1/2, 2/3, 3/4 at recall 1/4, 1/4, 1/2, 3/4;
    # envelope 1 for r <= 1/4 (26 of 101 points), 3/4 for 1/4 < r <= 3/4 (50 points), then 0.
    ap_low = (26 * 1 + 50 * 0.75) / 101
    # t in {0.65, 0.70}: T F T F -> envelope 1 (26 points), 2/3 for 1/4 < r <= 1/2 (25 points).
    ap_mid = (26 + 25 * 2 / 3) / 101
    ap_high = 26 / 101  # t >= 0.75: only the first prediction hits
    assert m["ap50"] == pytest.approx(ap_low)
    assert m["ap75"] == pytest.approx(ap_high)
    assert m["ap_per_iou"]["0.65"] == pytest.approx(ap_mid)
    assert m["ap50_95"] == pytest.approx((3 * ap_low + 2 * ap_mid + 5 * ap_high) / 10)
    assert json.loads(json.dumps(m)) == m


def test_box_metrics_labels_and_ties():
    m = box_metrics(GT, PRED, true_labels=[0, 1, 1, 1], pred_labels=[1, 1, 1, 1], scores=CONF)
    assert m["class_accuracy"] == pytest.approx(3 / 4)
    assert m["accuracy_iou50"] == pytest.approx(2 / 4)  # the IoU 1.0 box has the wrong class
    # Without scores all predictions tie: one point, precision = recall = hits / 4.
    tied = box_metrics(GT, PRED)
    assert tied["ap50"] == pytest.approx(0.75 * 76 / 101)  # r = 0 .. 0.75: 76 points
    assert tied["ap75"] == pytest.approx(0.25 * 26 / 101)
    order = [3, 1, 0, 2]
    assert box_metrics(GT[order], PRED[order]) == tied
    perfect = box_metrics(GT, GT, scores=CONF)
    assert perfect["ap50_95"] == pytest.approx(1.0) and perfect["mean_iou"] == pytest.approx(1.0)


def test_box_metrics_checks():
    with pytest.raises(DataError, match="not xywh"):
        box_metrics([[0.5, 0.5, 0.1, 0.1]], [[0, 0, 1, 1]])
    with pytest.raises(DataError, match="one predicted box per true box"):
        box_metrics(GT, PRED[:3])
    with pytest.raises(DataError, match="both true_labels and pred_labels"):
        box_metrics(GT, PRED, true_labels=[0, 0, 0, 0])
    with pytest.raises(DataError, match=r"shape \(N, 4\)"):
        box_metrics(np.zeros((0, 4)), np.zeros((0, 4)))


# ---- table -----------------------------------------------------------------------------------
def test_format_metrics_table_shows_fbeta_when_beta_is_not_1():
    m = classification_metrics(MC_TRUE, MC_SCORES, MC_CLASSES, "multiclass", beta=2.0)
    console = Console(record=True, width=120)
    console.print(format_metrics_table(m))
    assert "F2" in console.export_text()


def test_format_metrics_table():
    m = classification_metrics(ML_TRUE, ML_SCORES, ML_CLASSES, "multilabel", thresholds=[0.5, 0.25])
    table = format_metrics_table(m)
    assert table.row_count == len(ML_CLASSES) + 2
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    assert "macro avg" in text and "threshold" in text and "0.250" in text
    with pytest.raises(DataError, match="classification_metrics"):
        format_metrics_table({"accuracy": 1.0})
