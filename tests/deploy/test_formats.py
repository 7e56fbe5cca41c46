"""Export formats beyond int8 (float16 LiteRT, ONNX float and QDQ int8, Core ML), each verified in
its runtime; quantisation controls: per-channel vs per-tensor weights, calibration counts and a
class-balanced draw, and the per-class float vs int8 comparison."""

from __future__ import annotations

import importlib.util
import json
import logging
import platform

import keras
import numpy as np
import pytest
from helpers import handbuilt_run

from tinyvision.deploy import formats as formats_module
from tinyvision.deploy.litert import balanced_draw, export_int8
from tinyvision.errors import ExportError
from tinyvision.run.formats import class_drops


@pytest.fixture(scope="module")
def formats_run(tmp_path_factory):
    # the hand-built colour model: trained-like (a random deep net's float16 rounding moves its
    # probabilities by several hundredths; the demo model's by 0.002)
    return handbuilt_run(tmp_path_factory.mktemp("formats"),
                         export={"formats": ["onnx_int8", "float16", "onnx", "coreml"]})


@pytest.mark.slow
def test_every_format_is_exported_and_verified_in_its_runtime(formats_run):
    cfg, run, data, model = formats_run
    assert cfg.export.formats == ["int8", "onnx_int8", "float16", "onnx", "coreml"]
    verified = json.loads(run.verify.read_text())["formats"]
    for fmt, file in (("float16", "model_float16.tflite"), ("onnx", "model.onnx"),
                      ("onnx_int8", "model_int8.onnx"), ("coreml", "model.mlpackage")):
        assert (run.export_dir / file).exists() and verified[fmt]["file"] == file
        assert verified[fmt]["bytes"] > 0
    assert verified["float16"]["verified"] and verified["float16"]["max_abs_diff"] <= 1e-2
    assert verified["onnx"]["verified"] and verified["onnx"]["max_abs_diff"] <= 1e-4
    assert verified["onnx_int8"]["verified"] and "accuracy" in verified["onnx_int8"]["metrics"]
    import onnx  # the int8 ONNX model is in QDQ form: QuantizeLinear/DequantizeLinear pairs

    ops = {node.op_type for node in onnx.load(str(run.export_dir / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    if platform.system() != "Darwin":
        assert verified["coreml"]["verified"] is False and "macOS" in verified["coreml"]["note"]


@pytest.mark.slow
def test_the_float_formats_score_what_keras_scores(formats_run):
    """ONNX float outputs equal Keras's, so its metrics equal the float evaluation's."""
    cfg, run, data, model = formats_run
    metrics = json.loads(run.metrics.read_text())["float"]
    onnx = json.loads(run.verify.read_text())["formats"]["onnx"]["metrics"]
    assert onnx["accuracy"] == pytest.approx(metrics["accuracy"])


def _conv_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1)(inputs)
    x = keras.layers.Conv2D(8, 3, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


def _conv_weight_scales(path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    for op in interpreter._get_ops_details():
        if op["op_name"] == "CONV_2D":
            return len(tensors[int(op["inputs"][1])]["quantization_parameters"]["scales"])
    raise AssertionError("no CONV_2D")


def test_per_channel_and_per_tensor_weight_scales(tmp_path):
    model = _conv_model()
    export_int8(model, _images(16), tmp_path / "channel.tflite", per_channel=True)
    export_int8(model, _images(16), tmp_path / "tensor.tflite", per_channel=False)
    assert _conv_weight_scales(tmp_path / "channel.tflite") == 8  # one per output channel
    assert _conv_weight_scales(tmp_path / "tensor.tflite") == 1


def test_calibration_counts_are_checked(tmp_path, caplog):
    model = _conv_model()
    with pytest.raises(ExportError, match=r"at least one training batch \(32 images\), got 16"):
        export_int8(model, _images(16), tmp_path / "m.tflite", min_images=32)
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        export_int8(model, _images(40), tmp_path / "m.tflite", min_images=32)
    assert "calibrating int8 ranges on only 40 images" in caplog.text


def test_the_calibration_draw_is_class_balanced():
    labels = np.zeros((100, 3), np.float32)
    labels[:80, 0] = 1  # 80 of class 0, 15 of class 1, 5 of class 2
    labels[80:95, 1] = 1
    labels[95:, 2] = 1
    chosen = balanced_draw(labels, np.arange(100), 30, seed=0)
    counts = np.bincount(np.argmax(labels[chosen], axis=1), minlength=3)
    # class 2 gives all it has, the others share the rest
    assert counts[2] == 5 and sorted(counts[:2].tolist()) == [12, 13]
    assert len(set(chosen.tolist())) == 30 and (np.diff(chosen) > 0).all()
    assert len(balanced_draw(labels, np.arange(100), 500, seed=0)) == 100


def test_classes_that_int8_hurts_are_listed_worst_first():
    float_metrics = {"per_class": {"a": {"f1": 0.95}, "b": {"f1": 0.90}, "c": {"f1": 0.80}}}
    int8_metrics = {"per_class": {"a": {"f1": 0.94}, "b": {"f1": 0.70}, "c": {"f1": 0.70}}}
    drops = class_drops(float_metrics, int8_metrics, 0.05)
    assert [d["class"] for d in drops] == ["b", "c"]
    assert drops[0]["drop"] == pytest.approx(0.20)
    assert class_drops(None, int8_metrics, 0.05) == []


def test_a_missing_converter_names_the_pip_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(ExportError, match=r"ONNX export needs tf2onnx: pip install "
                                          r"'tinyvision\[onnx\]'"):
        formats_module.export_onnx(_conv_model(), tmp_path / "model.onnx")


@pytest.mark.slow
def test_the_demo_model_exports_every_format_each_verified(tmp_path):
    """The demo config (MobileNet V1 0.25 from scratch) on a few shapes, briefly trained, through
    `train`: every format is exported and checked in its runtime (Core ML off macOS: noted)."""
    from tinyvision.data.demo import demo_config, make_shapes_dataset
    from tinyvision.run.run import train

    raw = demo_config(make_shapes_dataset(tmp_path / "shapes", per_class=40, size=64),
                      tmp_path / "runs", name="formats")
    raw["model"]["input_size"] = 48
    raw["train"].update(budget="300 steps", batch_size=32)
    raw["export"] = {"representative_samples": 32, "formats": ["onnx", "float16", "onnx_int8",
                                                              "coreml"]}
    raw.pop("deploy")
    run = train(raw)
    formats = run.summary.formats
    assert list(formats) == ["int8", "onnx", "float16", "onnx_int8", "coreml"]
    assert all(formats[f]["verified"] for f in ("int8", "onnx", "float16", "onnx_int8"))
    assert formats["onnx"]["max_abs_diff"] <= 1e-4 and formats["float16"]["max_abs_diff"] <= 0.05
    assert formats["onnx"]["metrics"]["accuracy"] == pytest.approx(run.summary.float_metrics["accuracy"])
    assert formats["float16"]["bytes"] < 0.6 * run.summary.float_bytes
    assert formats["coreml"]["verified"] is (platform.system() == "Darwin")
    row = tinyvision_runs(tmp_path / "runs")[0]
    assert set(json.loads(row["formats"])) == set(formats)


def tinyvision_runs(runs_dir):
    from tinyvision.run.run import runs

    return runs(runs_dir)


@pytest.mark.slow
def test_a_finished_run_exports_another_format_without_training_or_editing_its_config(tmp_path):
    """`tinyvision export RUN --format onnx` on a run made with int8 only: the ONNX file is
    written and checked against Keras on its runtime, the run's config lists it, and a later
    verify checks it again; the int8 model is untouched. An unknown name is one line."""
    from typer.testing import CliRunner

    from tinyvision.cli import app
    from tinyvision.config import load_config

    cfg, run, data, model = handbuilt_run(tmp_path)
    assert cfg.export.formats == ["int8"]
    int8_before = run.int8_model.read_bytes()
    result = CliRunner().invoke(app, ["export", str(run.root), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert "onnx:" in result.output and "checked on its runtime" in result.output
    assert (run.export_dir / "model.onnx").stat().st_size > 0
    assert load_config(run.config).export.formats == ["int8", "onnx"]
    assert run.int8_model.read_bytes() == int8_before
    result = CliRunner().invoke(app, ["verify", str(run.root)])
    assert result.exit_code == 0, result.output
    onnx = json.loads(run.verify.read_text())["formats"]["onnx"]
    assert onnx["verified"] and onnx["max_abs_diff"] <= 1e-4
    bad = CliRunner().invoke(app, ["export", str(run.root), "--format", "tflite"])
    assert bad.exit_code != 0 and "unknown; choose from int8, float16, onnx" in bad.output
    assert "Traceback" not in bad.output


def test_one_format_table_drives_the_config_the_export_and_the_check():
    """The config's names are the table's (int8 apart), each with its file, writer, runtime
    check and the extra that installs it."""
    from typing import get_args

    from tinyvision.config.run import ExportFormat
    from tinyvision.layout import FORMAT_FILES

    assert set(get_args(ExportFormat)) == {"int8", *formats_module.FORMATS}
    assert set(FORMAT_FILES) == {"int8", *formats_module.FORMATS}
    assert formats_module.FORMATS["onnx"].tolerance == 1e-4
    assert formats_module.FORMATS["onnx_int8"].tolerance is None  # judged by its metrics
    assert {spec.extra for spec in formats_module.FORMATS.values()} == {None, "onnx", "coreml"}


def test_a_missing_converter_is_named_before_any_work(tmp_path, monkeypatch):
    """export.formats with a converter that is not installed fails before training, naming the
    pip command, not after the training as an export failure."""
    from helpers import make_class_folders, tiny_config

    from tinyvision.config import validate_config
    from tinyvision.run.run import full_run

    monkeypatch.setattr(formats_module, "missing_modules",
                        lambda extra: ["coremltools"] if extra == "coreml" else [])
    raw = tiny_config(make_class_folders(tmp_path / "images", per_class=4), tmp_path / "runs",
                      export={"formats": ["int8", "coreml"]})
    with pytest.raises(ExportError, match=r"pip install 'tinyvision\[coreml\]'"):
        full_run(validate_config(raw), progress=False)
    assert not list((tmp_path / "runs").glob("*/checkpoints/*"))  # nothing trained
    formats_module.check_formats(["int8", "onnx"])  # installed: no error
    with pytest.raises(ExportError, match="unknown; choose from int8, float16"):
        formats_module.check_formats(["tflite"])
