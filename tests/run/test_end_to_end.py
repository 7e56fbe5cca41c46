"""One tiny real run (train a few steps -> evaluate -> export -> verify), then checks on its outputs."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from helpers import make_class_folders, tiny_config
from tinyvision.config import validate_config
from tinyvision.deploy.runners import ReferenceRunner, run_tflm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tinyvision.run.run import full_run

    tmp = tmp_path_factory.mktemp("e2e")
    root = make_class_folders(tmp / "images", per_class=15)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cfg = validate_config(tiny_config(root, tmp / "runs"))
    run, summary = full_run(cfg, console=None, progress=False)
    summary = summary.to_json()
    return run, summary


def test_run_directory_holds_every_artifact(tiny_run):
    run, summary = tiny_run
    for path in (run.config, run.manifest, run.bad_images, run.best_weights, run.log, run.metrics,
                 run.float_model, run.int8_model, run.c_header, run.c_source, run.verify,
                 run.summary):
        assert path.is_file(), path
    assert not list(run.root.rglob("*.tmp*")), "a temporary file was left behind"
    from tinyvision.run.stages import STAGES

    for stage in STAGES:  # each stage wrote what it declares
        for name in stage.writes:
            assert getattr(run, name).exists(), (stage.name, name)
    assert "broken.jpg" in run.bad_images.read_text()
    assert summary["bad_images"] == 1
    log_rows = run.log.read_text().splitlines()
    assert log_rows[0].startswith("stage,epoch,learning_rate")
    assert [r.split(",")[0] for r in log_rows[1:]] == ["head", "fine_tune", "fine_tune"]


def test_metrics_are_consistent_with_the_confusion_matrix(tiny_run):
    run, _ = tiny_run
    metrics = json.loads(run.metrics.read_text())["float"]
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == metrics["images"]
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert set(metrics["per_class"]) == {"blue", "green", "red"}


def test_int8_model_has_int8_io_the_normalisation_folded_in_and_tflm_ops(tiny_run):
    """MobileNet's pixel / 127.5 - 1 is in the int8 input quantisation (1/128, zero point 0 in
    normalised units: round(pixel x 256/255) - 128), so the graph starts with a convolution."""
    run, _ = tiny_run
    reference = ReferenceRunner(run.int8_model)
    assert reference.input_shape == (1, 32, 32, 3)
    assert (reference.input_q.scale, reference.input_q.zero_point) == (255 / 256, -128)
    assert reference.interpreter.get_input_details()[0]["quantization"] == (1 / 128, 0)
    verify = json.loads(run.verify.read_text())
    assert set(verify["ops"]) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "RESHAPE", "SOFTMAX",
                                  "PAD"}
    assert verify["tflm_equals_reference"] and verify["tflm_images"] == 5
    assert 1024 < verify["arena_bytes"] < 1_000_000


def test_tflm_equals_litert_reference_on_random_inputs(tiny_run):
    """The parity that makes LiteRT reference kernels a stand-in for TFLM: equal, not close."""
    run, _ = tiny_run
    inputs = np.random.default_rng(7).integers(-128, 128, (8, 32, 32, 3)).astype(np.int8)
    reference = ReferenceRunner(run.int8_model).run_int8(inputs)
    arena = json.loads(run.verify.read_text())["arena_bytes"]
    np.testing.assert_array_equal(run_tflm(run.int8_model, inputs, arena), reference)


def test_found_arena_is_the_smallest_that_works(tiny_run):
    from tinyvision.errors import VerifyError

    run, _ = tiny_run
    arena = json.loads(run.verify.read_text())["arena_bytes"]
    x = np.zeros((1, 32, 32, 3), np.int8)
    run_tflm(run.int8_model, x, arena)
    with pytest.raises(VerifyError, match="cannot run"):
        run_tflm(run.int8_model, x, arena - 16)


def test_int8_scores_track_float_scores(tiny_run):
    import keras

    run, _ = tiny_run
    model = keras.models.load_model(run.float_model)
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    float_scores = model.predict(images.astype(np.float32), verbose=0)
    int8_scores = ReferenceRunner(run.int8_model).scores(images)
    assert np.abs(float_scores - int8_scores).max() < 0.1


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
@pytest.mark.parametrize("language, compiler, std", [("c", "gcc", "-std=c11"),
                                                      ("c++", "g++", "-std=c++17")])
def test_c_source_compiles_and_holds_the_model(tiny_run, tmp_path, language, compiler, std):
    run, _ = tiny_run
    main = tmp_path / "main.c"
    main.write_text(f"""
#include <stdio.h>
#include <stdint.h>
#include "{run.c_header}"
int main(void) {{
  if (((uintptr_t){"g_model"}) % 16 != 0) return 2;
  printf("%u %d %s\\n", g_model_len, G_MODEL_INPUT_ZERO_POINT, g_model_classes[0]);
  for (unsigned i = 0; i < g_model_len; ++i) putchar(g_model[i]);
  return 0;
}}""")
    exe = tmp_path / "main"
    subprocess.run([compiler, "-x", language, std, "-Wall", "-Werror", "-pedantic", "-o", str(exe),
                    str(main), "-x", language, str(run.c_source)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True).stdout
    first_line, model_bytes = out.split(b"\n", 1)
    assert first_line.decode().split() == [str(run.int8_model.stat().st_size), "-128", "blue"]
    assert model_bytes == run.int8_model.read_bytes()


def test_demo_dataset_is_deterministic(tmp_path):
    from tinyvision.data.demo import make_shapes_dataset

    a = make_shapes_dataset(tmp_path / "a", per_class=2, seed=5)
    b = make_shapes_dataset(tmp_path / "b", per_class=2, seed=5)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 6
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_detection_demo_variant_runs_end_to_end(tmp_path):
    """Shapes with boxes -> class + box model -> int8 with two outputs, verified on TFLM."""
    from tinyvision.data.demo import demo_config, make_shapes_dataset
    from tinyvision.deploy.outputs import tensor_quantization
    from tinyvision.run.run import full_run

    root = make_shapes_dataset(tmp_path / "shapes", per_class=12, size=48)
    raw = demo_config(root, tmp_path / "runs", task="detection")
    raw["model"]["input_size"] = 32
    raw["train"].update(batch_size=8, max_steps_per_epoch=2, budget="4 steps",
                        fine_tune={"epochs": 2, "unfreeze_from": 0})
    raw["export"]["representative_samples"] = 16
    raw["verify"]["tflm_samples"] = 4
    run, summary = full_run(validate_config(raw), console=None, progress=False)
    summary = summary.to_json()
    assert summary["task"] == "detection"
    for side in ("float", "int8"):
        assert 0.0 <= summary[side]["mean_iou"] <= 1.0 and "accuracy_iou50" in summary[side]
    quantization = tensor_quantization(run.int8_model.read_bytes(), 3)
    assert [o["shape"] for o in quantization["outputs"]] == [[1, 3], [1, 4]]
    header = run.c_header.read_text()
    assert "G_MODEL_BOX_OUTPUT_INDEX" in header and "G_MODEL_BOX_SCALE" in header
    verify = json.loads(run.verify.read_text())
    assert verify["tflm_equals_reference"]
