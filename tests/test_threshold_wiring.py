"""Multi-label thresholds: tuned on val by evaluate, stored with the model, used by eval, verify,
export (C array) and predict. The run's model is hand-built (see test_predict.handbuilt_run)."""

import json
import logging
import shutil
import subprocess

import numpy as np
import pytest

from test_predict import handbuilt_run
from tinyvision.data.manifest import Manifest, Sample
from tinyvision.evaluate.thresholds import load_thresholds, tune_thresholds
from tinyvision.evaluate.tta import keras_scorer, tta_outputs
from tinyvision.runs import RunDir
from tinyvision.workflow import run_thresholds

BETA = 2.0


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    return handbuilt_run(tmp_path_factory.mktemp("thresholds"), multilabel=True,
                         evaluate={"beta": BETA, "tta": True})


@pytest.fixture(scope="module")
def expected(multilabel_run):
    """Thresholds tuned by hand on the val split's TTA scores."""
    _, _, data, model = multilabel_run
    val = data.indices("val")
    scores = tta_outputs(keras_scorer(model), np.asarray(data.cache.images[val]))
    return tune_thresholds(data.manifest.label_matrix()[val], scores, BETA)


@pytest.mark.slow
def test_evaluate_tunes_and_saves_thresholds_in_run_and_export(multilabel_run, expected):
    _, run, data, _ = multilabel_run
    assert data.manifest.task == "multilabel"
    for folder in (run.root, run.export_dir):
        saved = load_thresholds(folder / "thresholds.json", data.manifest.classes)
        np.testing.assert_allclose(saved.as_array(), expected, rtol=1e-6)
        assert saved.beta == BETA


@pytest.mark.slow
def test_eval_and_verify_metrics_use_the_thresholds(multilabel_run, expected):
    _, run, _, _ = multilabel_run
    metrics = json.loads(run.metrics.read_text())
    verify = json.loads(run.verify.read_text())
    for result in (metrics["float"], verify["metrics"]):
        np.testing.assert_allclose(result["thresholds"], expected, rtol=1e-6)
        assert result["beta"] == BETA
    assert metrics["float"]["tta"] is True and verify["tta"] is True
    assert set(metrics["worst_predictions"]) == {"blue", "green", "red"}


@pytest.mark.slow
def test_export_writes_the_thresholds_as_a_c_array(multilabel_run, expected, tmp_path):
    _, run, _, _ = multilabel_run
    header, source = run.c_header.read_text(), run.c_source.read_text()
    assert "#define G_MODEL_HAS_THRESHOLDS 1" in header
    assert "extern const float g_model_thresholds[G_MODEL_NUM_CLASSES];" in header
    listed = source.split("g_model_thresholds[G_MODEL_NUM_CLASSES] = {")[1].split("}")[0]
    np.testing.assert_allclose([float(v.strip().rstrip("f")) for v in listed.split(",")], expected,
                               rtol=1e-6)
    if shutil.which("gcc") is None:
        return
    main = tmp_path / "main.c"
    main.write_text(f'#include <stdio.h>\n#include "{run.c_header}"\nint main(void) {{\n'
                    "  for (int i = 0; i < G_MODEL_NUM_CLASSES; ++i) "
                    'printf("%.6f\\n", g_model_thresholds[i]);\n  return 0;\n}\n')
    exe = tmp_path / "main"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-pedantic", "-o", str(exe), str(main),
                    "-x", "c", str(run.c_source)], check=True)
    printed = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    np.testing.assert_allclose([float(v) for v in printed.split()], expected, atol=1e-6)


@pytest.mark.slow
def test_predict_uses_the_thresholds(multilabel_run, expected):
    from tinyvision.predict import load_predictor

    _, run, data, model = multilabel_run
    paths = [s.path for s in data.manifest.samples[:12]]
    images = np.asarray(data.cache.images[:12])
    for kind in ("float", "int8"):
        predictor = load_predictor(run.root, kind)
        np.testing.assert_allclose(predictor.thresholds, expected, rtol=1e-6)
        predictions = predictor.predict(paths, top_k=3)
        scores, _ = predictor.outputs(images)
        assert [p.labels for p in predictions] == [
            [c for c, s, t in zip(data.manifest.classes, row, expected) if s >= t] for row in scores]
    # A threshold edited beside the model wins over the run's own copy.
    edited = json.loads((run.export_dir / "thresholds.json").read_text())
    edited["thresholds"] = [0.0] * len(edited["thresholds"])
    (run.export_dir / "thresholds.json").write_text(json.dumps(edited))
    try:
        (prediction,) = load_predictor(run.int8_model).predict(paths[:1])
        assert prediction.labels == data.manifest.classes
    finally:
        shutil.copy(run.root / "thresholds.json", run.export_dir / "thresholds.json")


def test_missing_thresholds_fall_back_to_half_with_a_warning(tmp_path, caplog):
    run = RunDir(tmp_path)
    manifest = Manifest(["a", "b"], "multilabel", [Sample("x.png", ("a", "b"), "train")])
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        np.testing.assert_array_equal(run_thresholds(run, manifest), [0.5, 0.5])
    assert "thresholds.json does not exist" in caplog.text and "tinyvision eval" in caplog.text
    assert run_thresholds(run, Manifest(["a", "b"], "multiclass")) is None
