"""Multi-label thresholds: tuned on val by evaluate, stored with the model, used by eval, verify,
export (C array) and predict. The run's model is hand-built (see helpers.handbuilt_run)."""

import json
import logging
import shutil
import subprocess

import numpy as np
import pytest

from helpers import handbuilt_run
from tinyvision.data.manifest import Manifest, Sample
from tinyvision.evaluate.thresholds import load_thresholds, tune_thresholds
from tinyvision.evaluate.tta import keras_scorer, tta_outputs
from tinyvision.deploy.outputs import device_thresholds
from tinyvision.run.folder import RunDir
from tinyvision.run.stages import run_thresholds

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


@pytest.fixture(scope="module")
def on_grid(multilabel_run, expected):
    """(int8, float) thresholds snapped to the int8 model's output grid."""
    from tinyvision.deploy.runners import ReferenceRunner

    q = ReferenceRunner(multilabel_run[1].int8_model).output_q
    ints, floats = device_thresholds(expected, q.scale, q.zero_point)
    return np.array(ints), np.array(floats)


@pytest.mark.slow
def test_evaluate_tunes_and_saves_thresholds_in_run_and_export(multilabel_run, expected):
    _, run, data, _ = multilabel_run
    assert data.manifest.task == "multilabel"
    for folder in (run.root, run.export_dir):
        saved = load_thresholds(folder / "thresholds.json", data.manifest.classes)
        np.testing.assert_allclose(saved.as_array(), expected, rtol=1e-6)
        assert saved.beta == BETA


@pytest.mark.slow
def test_eval_and_verify_metrics_use_the_thresholds(multilabel_run, expected, on_grid):
    from tinyvision.deploy.runners import ReferenceRunner

    _, run, data, _ = multilabel_run
    metrics = json.loads(run.metrics.read_text())
    verify = json.loads(run.verify.read_text())
    np.testing.assert_allclose(metrics["float"]["thresholds"], expected, rtol=1e-6)
    np.testing.assert_allclose(verify["metrics"]["thresholds"], on_grid[1], rtol=1e-6)
    assert metrics["float"]["beta"] == verify["metrics"]["beta"] == BETA
    assert metrics["float"]["tta"] is True and verify["tta"] is True
    # The colour model is near-certain: tuned thresholds sit above the largest int8 score
    # (255/256), and only snapping them to the grid keeps int8 from missing those classes.
    assert max(expected) > 255 / 256
    # int8 accuracy by hand: TTA scores of the int8 model against the snapped thresholds (a
    # score one int8 step below its threshold is a miss, as on the device)
    test = data.indices("test")
    scores = tta_outputs(ReferenceRunner(run.int8_model).scores,
                         np.asarray(data.cache.images[test]))
    truth = data.manifest.label_matrix()[test] >= 0.5
    by_hand = np.mean(np.all((scores >= on_grid[1]) == truth, axis=1))
    assert verify["metrics"]["accuracy"] == pytest.approx(by_hand)
    assert verify["metrics"]["accuracy"] >= metrics["float"]["accuracy"] - 1 / len(test) - 1e-9
    assert set(metrics["worst_predictions"]) == {"blue", "green", "red"}


@pytest.mark.slow
def _c_array(source: str, name: str) -> list[float]:
    listed = source.split(f"{name}[G_MODEL_NUM_CLASSES] = {{")[1].split("}")[0]
    return [float(v.strip().rstrip("f")) for v in listed.split(",")]


def test_export_writes_the_thresholds_as_c_arrays(multilabel_run, on_grid, tmp_path):
    _, run, _, _ = multilabel_run
    header, source = run.c_header.read_text(), run.c_source.read_text()
    assert "#define G_MODEL_HAS_THRESHOLDS 1" in header
    assert "extern const signed char g_model_thresholds_q[G_MODEL_NUM_CLASSES];" in header
    assert "extern const float g_model_thresholds[G_MODEL_NUM_CLASSES];" in header
    np.testing.assert_array_equal(_c_array(source, "g_model_thresholds_q"), on_grid[0])
    np.testing.assert_allclose(_c_array(source, "g_model_thresholds"), on_grid[1], rtol=1e-6)
    if shutil.which("gcc") is None:
        return
    main = tmp_path / "main.c"
    main.write_text(f'#include <stdio.h>\n#include "{run.c_header}"\nint main(void) {{\n'
                    "  for (int i = 0; i < G_MODEL_NUM_CLASSES; ++i) printf(\"%d %.8f\\n\", "
                    "g_model_thresholds_q[i], g_model_thresholds[i]);\n  return 0;\n}\n")
    exe = tmp_path / "main"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-pedantic", "-o", str(exe), str(main),
                    "-x", "c", str(run.c_source)], check=True)
    printed = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    rows = np.array([line.split() for line in printed.splitlines()], dtype=np.float64)
    np.testing.assert_array_equal(rows[:, 0], on_grid[0])
    np.testing.assert_allclose(rows[:, 1], on_grid[1], atol=1e-7)


@pytest.mark.slow
def test_predict_uses_the_thresholds(multilabel_run, expected, on_grid):
    from tinyvision.run.predict import load_predictor

    _, run, data, model = multilabel_run
    paths = [s.path for s in data.manifest.samples[:12]]
    images = np.asarray(data.cache.images[:12])
    for kind, limits in (("float", expected), ("int8", on_grid[1])):
        predictor = load_predictor(run.root, kind)
        np.testing.assert_allclose(predictor.thresholds, limits, rtol=1e-6)
        predictions = predictor.predict(paths, top_k=3)
        scores = predictor.outputs(images).scores
        assert [p.labels for p in predictions] == [
            [c for c, s, t in zip(data.manifest.classes, row, limits) if s >= t] for row in scores]
    # A threshold edited beside the model wins over the run's own copy.
    edited = json.loads((run.export_dir / "thresholds.json").read_text())
    edited["thresholds"] = [0.0] * len(edited["thresholds"])
    (run.export_dir / "thresholds.json").write_text(json.dumps(edited))
    try:
        (prediction,) = load_predictor(run.int8_model).predict(paths[:1])
        assert prediction.labels == data.manifest.classes
    finally:
        shutil.copy(run.root / "thresholds.json", run.export_dir / "thresholds.json")


def test_device_thresholds_snap_to_the_int8_output_grid():
    ints, floats = device_thresholds([0.9998, 0.5, 0.0, 0.123, 1.0], 1 / 256, -128)
    assert ints == [127, 0, -128, -97, 127]
    assert floats == [255 / 256, 0.5, 0.0, 31 / 256, 255 / 256]


def test_missing_thresholds_fall_back_to_half_with_a_warning(tmp_path, caplog):
    run = RunDir(tmp_path)
    manifest = Manifest(["a", "b"], "multilabel", [Sample("x.png", ("a", "b"), "train")])
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        np.testing.assert_array_equal(run_thresholds(run, manifest), [0.5, 0.5])
    assert "thresholds.json does not exist" in caplog.text and "tinyvision eval" in caplog.text
    assert run_thresholds(run, Manifest(["a", "b"], "multiclass")) is None
