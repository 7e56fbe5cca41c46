"""Threshold tuning on constructed cases with a known optimum, and the thresholds file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import fbeta_score

from tinyvision.errors import ConfigError, DataError, RunError
from tinyvision.evaluate.metrics import classification_metrics
from tinyvision.evaluate.thresholds import load_thresholds, save_thresholds, tune_thresholds

# One class: scores 0.9 0.8 0.7 0.4 0.3 0.2 with truth 1 1 0 1 0 0.
# F1 at each threshold: 0.9 -> 1/2, 0.8 -> 4/5, 0.7 -> 2/3, 0.4 -> 6/7, 0.3 -> 3/4, 0.2 -> 2/3.
# F0.5 = 1.25 TP / (1.25 TP + 0.25 FN + FP): 0.8 -> 10/11 beats 0.4 -> 15/19.
KNOWN_SCORES = np.array([[0.9, 0.8, 0.7, 0.4, 0.3, 0.2]]).T
KNOWN_TRUTH = np.array([[1, 1, 0, 1, 0, 0]]).T


def test_known_optimum_depends_on_beta():
    assert tune_thresholds(KNOWN_TRUTH, KNOWN_SCORES).tolist() == [0.4]
    assert tune_thresholds(KNOWN_TRUTH, KNOWN_SCORES, beta=0.5).tolist() == [0.8]
    assert tune_thresholds(KNOWN_TRUTH, KNOWN_SCORES, beta=2.0).tolist() == [0.4]


def test_tie_goes_to_the_higher_threshold():
    # truth 1 0 0 1 at scores 0.9 0.7 0.6 0.4: F1 is 2/3 at both 0.9 and 0.4.
    scores, truth = np.array([[0.9, 0.7, 0.6, 0.4]]).T, np.array([[1, 0, 0, 1]]).T
    assert tune_thresholds(truth, scores).tolist() == [0.9]


def test_tied_scores_are_one_candidate():
    # 0.5 appears for a positive and a negative: thresholding can only take both or neither.
    scores, truth = np.array([[0.9, 0.5, 0.5, 0.1]]).T, np.array([[1, 1, 0, 0]]).T
    # 0.9: F1 2/3; 0.5: TP 2, FP 1 -> 4/5; 0.1: 4/6. So 0.5.
    assert tune_thresholds(truth, scores).tolist() == [0.5]


def test_columns_are_tuned_independently_and_edge_classes():
    scores = np.hstack([KNOWN_SCORES, KNOWN_SCORES[::-1], KNOWN_SCORES])
    truth = np.hstack([KNOWN_TRUTH, np.zeros_like(KNOWN_TRUTH), np.ones_like(KNOWN_TRUTH)])
    # no positives -> 0.5; all positives -> the lowest score (recall 1 at precision 1)
    assert tune_thresholds(truth, scores).tolist() == [0.4, 0.5, 0.2]


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_optimum_matches_brute_force_with_sklearn(beta):
    rng = np.random.default_rng(3)
    truth = (rng.random((80, 3)) < 0.3).astype(int)
    scores = np.round(np.clip(0.35 * truth + rng.random((80, 3)) * 0.65, 0, 1), 2)  # with ties
    tuned = tune_thresholds(truth, scores, beta=beta)
    for k in range(3):
        candidates = np.unique(scores[:, k])
        values = [fbeta_score(truth[:, k], scores[:, k] >= t, beta=beta) for t in candidates]
        best = max(values)
        chosen = fbeta_score(truth[:, k], scores[:, k] >= tuned[k], beta=beta)
        assert chosen == pytest.approx(best)
        assert tuned[k] == max(t for t, v in zip(candidates, values) if v >= best - 1e-12)
    applied = classification_metrics(truth, scores, ["a", "b", "c"], "multilabel",
                                     thresholds=tuned, beta=beta)
    for k, name in enumerate("abc"):
        assert applied["per_class"][name]["fbeta"] == pytest.approx(
            fbeta_score(truth[:, k], scores[:, k] >= tuned[k], beta=beta))


def test_tune_checks():
    with pytest.raises(DataError, match=r"shape \(samples, classes\)"):
        tune_thresholds([1, 0], [0.2, 0.8])
    with pytest.raises(DataError, match="multi-hot"):
        tune_thresholds([[2], [0]], [[0.2], [0.8]])
    with pytest.raises(ConfigError, match="beta=-1"):
        tune_thresholds(KNOWN_TRUTH, KNOWN_SCORES, beta=-1)


def test_save_and_load(tmp_path):
    path = save_thresholds(tmp_path, ["cat", "dog"], np.array([0.25, 0.7]), beta=2.0)
    assert path == tmp_path / "thresholds.json"
    assert json.loads(path.read_text()) == {"classes": ["cat", "dog"], "thresholds": [0.25, 0.7],
                                            "beta": 2.0}
    loaded = load_thresholds(path, classes=["cat", "dog"])
    assert loaded.classes == ["cat", "dog"] and loaded.beta == 2.0
    assert loaded.as_array().tolist() == [0.25, 0.7]
    assert load_thresholds(tmp_path).thresholds == [0.25, 0.7]
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_load_errors(tmp_path):
    with pytest.raises(RunError, match="does not exist; tune thresholds"):
        load_thresholds(tmp_path / "thresholds.json")
    path = save_thresholds(tmp_path / "t.json", ["cat", "dog"], [0.25, 0.7], beta=1.0)
    with pytest.raises(RunError, match=r"classes \['cat', 'dog'\], but the model has classes"):
        load_thresholds(path, classes=["dog", "cat"])
    path.write_text("{not json")
    with pytest.raises(RunError, match="not a readable thresholds JSON"):
        load_thresholds(path)
    path.write_text(json.dumps({"classes": ["a"], "thresholds": [1.5], "beta": 1}))
    with pytest.raises(RunError, match=r"one threshold in \[0, 1\] per class"):
        load_thresholds(path)
    with pytest.raises(RunError, match="one threshold in"):
        save_thresholds(tmp_path / "u.json", ["a", "b"], [0.5], beta=1.0)
