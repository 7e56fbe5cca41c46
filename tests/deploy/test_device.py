"""Onto the board: board profiles and the fit check, the TFLM op check, MACs from the .tflite, the
TFLM library cache, and the generated application built on the host against a TFLM tree, whose
input tensors and output bytes must equal the Python path's."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import handbuilt_run, settle_batchnorm
from typer.testing import CliRunner

from tinyvision.cli import app
from tinyvision.config import validate_config
from tinyvision.deploy import tflm_build
from tinyvision.deploy.boards import Board, board_names, load_board
from tinyvision.deploy.camera import CameraFormat
from tinyvision.deploy.firmware import INSTALL, missing_tools
from tinyvision.deploy.fit import (APPLICATION_FLASH_BYTES, STACK_HEAP_BYTES,
                                   TFLM_CORE_FLASH_BYTES, fit_check, fit_table)
from tinyvision.deploy.litert import export_int8
from tinyvision.deploy.ops import check_tflm_ops, model_macs, model_ops
from tinyvision.deploy.tflm_ops import TFLM_OPS
from tinyvision.errors import ExportError, VerifyError
from tinyvision.records import BoardFit
from tinyvision.models.cost import count_macs

SHIPPED = ["esp32s3", "nicla_vision", "nrf52840", "rp2040", "stm32h743", "stm32h747", "stm32l4r5"]


def tflm_tree() -> Path | None:
    """The TFLM source tree named by $TINYVISION_TFLM_SOURCE (.ci/run sets it when the tree is
    there), or None: tests do not look for one themselves."""
    candidate = os.environ.get(tflm_build.SOURCE_ENV)
    return Path(candidate) if candidate and (Path(candidate) / "build.sh").exists() else None


needs_tflm = pytest.mark.skipif(tflm_tree() is None, reason="no TFLM source tree (set "
                                "TINYVISION_TFLM_SOURCE); .ci/run points it at ../shared/tflm")


# ---- boards and the fit ----------------------------------------------------------------------
def test_every_shipped_board_loads_with_sources():
    assert board_names() == SHIPPED
    for name in SHIPPED:
        board = load_board(name)
        assert board.flash_bytes > 0 and board.ram_bytes > 0 and board.cycles_per_mac > 0
        assert {"memory", "clock", "cycles_per_mac"} <= set(board.sources)
    h743 = load_board("STM32H743")  # names are case-insensitive
    assert (h743.flash_bytes, h743.ram_bytes, h743.clock_mhz) == (2 * 1024 * 1024, 1024 * 1024, 480)


def test_unknown_boards_and_bad_board_files_say_what_to_fix(tmp_path):
    with pytest.raises(ExportError, match=r"unknown board 'stm32h74'\. Did you mean 'stm32h74[37]'"):
        load_board("stm32h74")
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ncore: M4\nclock_mhz: 0\nflash_bytes: 1\nram_bytes: 1\n"
                   "cycles_per_mac: 2\n")
    with pytest.raises(ExportError, match=r"mine.yaml: clock_mhz: Input should be greater than 0"):
        load_board(bad)
    good = tmp_path / "tiny.yaml"
    good.write_text("name: tiny\ncore: Cortex-M0+\nclock_mhz: 48\nflash_bytes: 262144\n"
                    "ram_bytes: 32768\ncycles_per_mac: 12\n")
    assert load_board(good).ram_bytes == 32768


def _board(**changes) -> Board:
    values = dict(name="b", core="Cortex-M7", clock_mhz=480, flash_bytes=2 * 1024 * 1024,
                  ram_bytes=1024 * 1024, largest_ram_block_bytes=512 * 1024, cycles_per_mac=2.0)
    return Board(**{**values, **changes})


def test_fit_adds_up_and_fails_where_it_should():
    camera = CameraFormat("rgb565", 320, 240, "big")
    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "RESHAPE", "SOFTMAX"]
    fit = fit_check(_board(), 300_000, ops, 90_000, "compiled application", 7_489_664, camera)
    runtime = TFLM_CORE_FLASH_BYTES + 10 * 1024 + 10 * 1024 + 4 * 1024 + 1024 + 4 * 1024
    assert fit.flash["runtime"] == runtime
    assert fit.flash["total"] == 300_000 + runtime + APPLICATION_FLASH_BYTES
    assert fit.ram["frame_buffer"] == 320 * 240 * 2
    assert fit.ram["total"] == 90_000 + 153_600 + STACK_HEAP_BYTES
    assert fit.latency_ms == pytest.approx(7_489_664 * 2.0 / 480e3, rel=1e-3)  # 31.2 ms
    assert fit.fits and "fits" == fit_table(fit).splitlines()[-1]
    # flash: a 2.1 MB model; RAM: a 300 KB-block board; each fails alone, with the table
    too_big = fit_check(_board(), 2_100_000, ops, 90_000, "x", 1, camera)
    assert not too_big.fits and not too_big.flash["fits"] and too_big.ram["fits"]
    table = fit_table(too_big)
    assert "OVER" in table and "does NOT fit: flash is" in table and "model.alpha" in table
    small_block = fit_check(_board(largest_ram_block_bytes=128 * 1024), 300_000, ops, 140_000,
                            "x", 1, camera)
    assert not small_block.fits and "largest RAM block holds 131,072 bytes" in \
        fit_table(small_block)
    no_ram = fit_check(_board(ram_bytes=200_000, largest_ram_block_bytes=None), 300_000, ops,
                       90_000, "x", 1, camera)
    assert not no_ram.ram["fits"] and "input_size" in fit_table(no_ram)


# ---- ops and MACs ----------------------------------------------------------------------------
def _calibration(shape, count=16):
    return np.random.default_rng(0).integers(0, 256, (count, *shape), dtype=np.uint8)


def test_an_op_tflm_lacks_is_refused_and_named_with_its_layer(tmp_path):
    from tflite_micro import runtime

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1)(inputs)
    x = keras.layers.Conv2D(8, 3, name="stem_conv")(x)
    x = keras.layers.Activation("gelu", name="odd_gelu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))
    path = tmp_path / "gelu.tflite"
    export_int8(model, _calibration((16, 16, 3)), path)
    uses = model_ops(path, [layer.name for layer in model.layers])
    assert [u.op for u in uses][:2] == ["CONV_2D", "GELU"] and uses[1].layer == "odd_gelu"
    with pytest.raises(ExportError, match=r"GELU \(from layer\(s\) 'odd_gelu'\)"):
        check_tflm_ops(uses, path.name)
    # the op list is the truth: the TFLM interpreter itself cannot run this model
    with pytest.raises(RuntimeError):
        runtime.Interpreter.from_file(str(path), arena_size=1 << 20)
    check_tflm_ops([u for u in uses if u.op != "GELU"])  # the rest is fine


def test_macs_counted_from_the_tflite_equal_the_keras_count(tmp_path):
    from tinyvision.models.backbones import mobilenet_v1

    inputs = keras.Input((32, 32, 3))
    x = mobilenet_v1(keras.layers.Rescaling(1 / 127.5, -1)(inputs), 0.25)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    settle_batchnorm(model, _calibration((32, 32, 3)).astype("float32"))
    path = tmp_path / "m.tflite"
    export_int8(model, _calibration((32, 32, 3)), path)
    assert model_macs(path) == count_macs(model) > 100_000


@needs_tflm
def test_the_op_table_is_the_tflm_trees_resolver():
    """TFLM_OPS lists exactly the builtin ops the tree's all-ops resolver registers."""
    resolver = (tflm_tree() / "example" / "ops_resolver.h").read_text()
    registered = set(re.findall(r"r\.(Add[A-Za-z0-9]+)\(\)", resolver))
    assert set(TFLM_OPS.values()) <= registered
    assert len(registered - set(TFLM_OPS.values())) == 17  # the signal-processing ops


# ---- the library cache -----------------------------------------------------------------------
def test_the_library_is_built_once_per_tree_content(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "tensorflow").mkdir(parents=True)
    (tree / "tflm_flags.mk").write_text("")
    (tree / "tensorflow" / "a.cc").write_text("int a;")
    (tree / "build.sh").write_text('mkdir -p "$1" && echo x >> "$(dirname "$0")/../count" && '
                                   'echo lib > "$1/libtflm.a"\n')
    monkeypatch.setenv(tflm_build.CACHE_ENV, str(tmp_path / "cache"))
    root = tflm_build.find_tflm_source(tree)
    first = tflm_build.build_library(root)
    assert first.read_text() == "lib\n" and first.is_relative_to(tmp_path / "cache")
    assert tflm_build.build_library(root) == first  # cached: build.sh not run again
    assert (tmp_path / "count").read_text() == "x\n"
    (tree / "tensorflow" / "a.cc").write_text("int a = 1;")  # the tree changed: a new library
    assert tflm_build.build_library(root) != first
    assert (tmp_path / "count").read_text() == "x\nx\n"
    with pytest.raises(VerifyError, match=r"not a TFLM source tree .*\(missing build.sh"):
        tflm_build.find_tflm_source(tmp_path / "cache")


# ---- the generated application, built and run on the host -----------------------------------
def _small_mobilenet(cfg, data):
    from tinyvision.models.build import build_model

    model = build_model(cfg.model, len(data.manifest.classes), data.manifest.task)
    settle_batchnorm(model, np.asarray(data.cache.images[:16], dtype="float32"))
    return model


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    tree = tflm_tree()
    if tree is None:
        pytest.skip("no TFLM source tree")
    tmp = tmp_path_factory.mktemp("device")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(tflm_build.SOURCE_ENV, str(tree))
        yield handbuilt_run(tmp, make_model=_small_mobilenet, export={"board": "stm32h743"},
                            deploy={"camera": {"format": "yuv422", "width": 64, "height": 48,
                                               "interpolation": "bilinear"}},
                            data={"resize": "letterbox"}, verify={"app_frames": 5})


@pytest.mark.slow
@needs_tflm
def test_the_compiled_application_equals_the_python_path(device_run):
    cfg, run, data, model = device_run
    app_dir = run.export_dir / "app"
    assert sorted(p.name for p in app_dir.iterdir() if p.is_file()) == [
        "Makefile", "camera_preprocess.c", "camera_preprocess.h", "main.cc", "model_ops.h"]
    ops_header = (app_dir / "model_ops.h").read_text()
    verified = json.loads(run.verify.read_text())
    assert f"kModelOpCount = {len(verified['ops'])}" in ops_header
    # exactly the model's ops, with TFLM's int8-only kernels where every tensor is int8
    assert all(f"r.{TFLM_OPS[op]}(" in ops_header for op in verified["ops"])
    assert "r.AddConv2D(TV_INT8(tflite::Register_CONV_2D_INT8()))" in ops_header
    app_check = verified["app"]
    assert app_check["checked"] and app_check["inputs_equal"] and app_check["outputs_equal"]
    assert app_check["frames"] == 5
    # the compiled interpreter needs a little less than the Python one (its bookkeeping)
    assert 0 < verified["arena_bytes"] - app_check["arena_used_bytes"] <= 512
    fit = BoardFit.from_json(verified["fit"])
    if not verified["firmware"]["checked"]:  # no Arm toolchain here: estimates, and why
        assert fit.basis == "estimate" and verified["firmware"]["reason"]
        assert fit.ram["arena"] == app_check["arena_used_bytes"]
        assert fit.ram["arena_source"] == "compiled application"
    assert fit.ram["frame_buffer"] == 64 * 48 * 2 and fit.fits
    assert json.loads((run.export_dir / "fit.json").read_text()) == fit.to_json()
    camera = verified["camera"]
    assert camera["camera"] == "64x48 yuv422 yuyv" and camera["images"] == len(
        data.indices("test"))


needs_arm = pytest.mark.skipif(bool(missing_tools()), reason="no Arm toolchain or QEMU ("
                               f"{INSTALL}); .ci/run installs them")


@pytest.mark.slow
@needs_tflm
@needs_arm
def test_the_firmware_runs_on_the_emulated_cortex_m7_and_its_figures_replace_estimates(
        device_run):
    """The application built for the STM32H743's Cortex-M7 (CMSIS-NN, the cached library) and
    run under QEMU on the same frames: inputs and output bytes equal the Python path's; flash and
    RAM from the linked firmware, split by component; instructions counted per op."""
    cfg, run, data, model = device_run
    verified = json.loads(run.verify.read_text())
    firmware, fit = verified["firmware"], BoardFit.from_json(verified["fit"])
    assert firmware["checked"] and firmware["core"] == "cortex-m7" and firmware["frames"] == 5
    assert firmware["inputs_equal"] and firmware["outputs_equal"]
    assert firmware["emulated"] == "QEMU mps2-an500"
    size = firmware["size"]
    assert size["flash"]["model"] >= run.int8_model.stat().st_size
    assert min(size["flash"][k] for k in ("tflm", "cmsis_nn", "application", "c_library")) > 0
    assert sum(v for k, v in size["flash"].items() if k != "total") == size["flash"]["total"]
    assert size["frame_buffer"] == 64 * 48 * 2 and size["arena"] >= firmware["arena_used_bytes"]
    counts = firmware["instructions"]
    assert counts["per_inference"] > fit.macs and counts["preprocess"] > 0
    assert abs(sum(o["instructions"] for o in counts["ops"]) - counts["per_inference"]) \
        < 0.01 * counts["per_inference"]  # the ops are (almost) all of Invoke()
    assert counts["by_op"]["CONV_2D"]["kernel"] == "cmsis-nn"
    assert fit.basis == "measured" and fit.flash["measured"] and fit.ram["measured"]
    assert fit.ram["arena"] == firmware["arena_used_bytes"]
    assert fit.firmware["instructions"] == counts["per_inference"]
    assert fit.latency_basis == "instructions" and fit.estimate is not None
    assert "byte-identical on the emulated Cortex-M7 (5 frames)" in fit_table(fit)


@pytest.mark.slow
@needs_tflm
@needs_arm
def test_cli_fit_reuses_the_firmware_of_the_same_core_and_estimates_on_request(device_run):
    cfg, run, data, model = device_run
    result = CliRunner().invoke(app, ["fit", str(run.root), "--board", "stm32h747"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "stm32h747 (Cortex-M7, 480 MHz)" in output and "byte-identical" in output
    assert "flash (measured, linked Cortex-M7 firmware" in output
    result = CliRunner().invoke(app, ["fit", str(run.root), "--board", "nrf52840",
                                      "--no-firmware"])
    output = " ".join(result.output.split())
    assert result.exit_code == 0 and "ops (estimate)" in output
    assert "latency (estimate)" in output


@pytest.mark.slow
@needs_tflm
def test_a_changed_preprocessing_is_caught_byte_for_byte(device_run, monkeypatch):
    """Break the generated C (a rounding constant): verify names the mismatch. (verify writes
    the C afresh, never compiling the run folder's copy, so the generator is what breaks.)"""
    from tinyvision.deploy import camera_c
    from tinyvision.errors import VerifyError
    from tinyvision.run.stages import prepare_data, verify_stage

    cfg, run, data, model = device_run
    generate = camera_c.camera_source
    monkeypatch.setattr(camera_c, "camera_source", lambda plan: generate(plan).replace(
        "(1 << 15)) >> 16]", "(1 << 14)) >> 16]"))
    with pytest.raises(VerifyError, match="application's input tensor differ from the "
                                          "Python path's"):
        verify_stage(cfg, run, prepare_data(cfg, run, progress=False))


@pytest.mark.slow
@needs_tflm
def test_cli_fit_on_other_boards_and_a_board_that_is_too_small(device_run, tmp_path):
    cfg, run, data, model = device_run
    # --no-firmware: estimates (a Cortex-M0+ library would take minutes to build here)
    result = CliRunner().invoke(app, ["fit", str(run.root), "--board", "rp2040", "--no-firmware"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "rp2040 (Cortex-M0+, 133 MHz)" in output and "300,568 bytes" in output
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("name: tiny\ncore: Cortex-M0+\nclock_mhz: 48\nflash_bytes: 65536\n"
                    "ram_bytes: 16384\ncycles_per_mac: 12\n")
    result = CliRunner().invoke(app, ["fit", str(run.root), "--board", str(tiny),
                                      "--no-firmware"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "does NOT fit" in output
    assert "flash is" in output and "RAM is" in output


@pytest.mark.slow
def test_an_export_that_does_not_fit_fails_with_the_table(tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("name: tiny\ncore: Cortex-M0+\nclock_mhz: 48\nflash_bytes: 65536\n"
                    "ram_bytes: 8192\ncycles_per_mac: 12\n")
    with pytest.raises(ExportError, match=r"(?s)does not fit tiny:.*RAM.*OVER.*does NOT fit"):
        handbuilt_run(tmp_path, export={"board": str(tiny)})
    fits = list((tmp_path / "runs").glob("*/export/fit.json"))
    assert len(fits) == 1 and json.loads(fits[0].read_text())["fits"] is False


@pytest.mark.slow
@needs_tflm
def test_predict_camera_scores_frames_as_the_device_does(device_run, tmp_path):
    """`predict --camera`: an image and the raw frame it renders to get the same scores, equal
    to the TFLM interpreter's output on the camera path's tensor."""
    from tinyvision.deploy.camera import frame_from_file, preprocess
    from tinyvision.deploy.outputs import Quantization, dequantize, tensor_quantization
    from tinyvision.deploy.runners import run_tflm
    from tinyvision.run.device import camera_plan

    cfg, run, data, model = device_run
    image = Path(data.manifest.samples[int(data.indices("test")[0])].path)
    quantization = tensor_quantization(run.int8_model, len(data.manifest.classes))
    plan = camera_plan(cfg, quantization)
    frame = frame_from_file(image, plan.camera)
    raw = tmp_path / "frame.raw"
    raw.write_bytes(frame)
    result = CliRunner().invoke(app, ["predict", str(run.root), str(image), str(raw), "--camera",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["camera"] == "64x48 yuv422 yuyv" and printed["kind"] == "int8"
    scores = [row["scores"] for row in printed["predictions"]]
    assert scores[0] == scores[1]
    out = run_tflm(run.int8_model, preprocess(plan, frame)[None], 1 << 20)
    q = quantization["output"]
    expected = dequantize(out[0], Quantization(q["scale"], q["zero_point"]))
    for k, name in enumerate(data.manifest.classes):
        assert scores[0][name] == pytest.approx(float(expected[k]), abs=1e-6)
    bad = tmp_path / "short.raw"
    bad.write_bytes(b"12345")
    result = CliRunner().invoke(app, ["predict", str(run.root), str(bad), "--camera"])
    assert result.exit_code == 1 and "frame has 6144 bytes, the file has 5" in " ".join(
        result.output.split())


def test_a_wrong_board_or_tflm_tree_fails_before_any_training(tmp_path, monkeypatch):
    from helpers import make_class_folders, tiny_config

    from tinyvision.config import validate_config
    from tinyvision.run.run import check_before_work

    root = make_class_folders(tmp_path / "images", per_class=4)
    cfg = validate_config(tiny_config(root, tmp_path / "runs", export={"board": "stm32h7433"}))
    with pytest.raises(ExportError, match="unknown board 'stm32h7433'"):
        check_before_work(cfg)
    cfg = validate_config(tiny_config(root, tmp_path / "runs",
                                      verify={"tflm_source": str(tmp_path)}))
    with pytest.raises(VerifyError, match="is not a TFLM source tree"):
        check_before_work(cfg)
    monkeypatch.setenv(tflm_build.SOURCE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(VerifyError, match="nowhere is not a TFLM source tree"):
        check_before_work(validate_config(tiny_config(root, tmp_path / "runs")))


# ---- boxes through the camera ----------------------------------------------------------------
@pytest.mark.parametrize("resize", ["letterbox", "center_crop", "stretch"])
def test_boxes_seen_through_the_camera_by_hand(tmp_path, resize):
    """A frame is the image stretched to the camera's size, then the camera preprocessing applies
    data.resize to the frame. A camera of the image's aspect sees the boxes the cache holds; a
    square camera stretches a 4:3 image square, so every geometry sees the stretched box."""
    from helpers import box_images
    from tinyvision.data.manifest import Manifest
    from tinyvision.run.device import camera_boxes
    from tinyvision.run.run import make_run_folder
    from tinyvision.run.stages import prepare_data

    raw = {"name": "cam", "runs_dir": str(tmp_path / "runs"),
           "data": {**box_images(tmp_path / "boxes"), "resize": resize},
           "model": {"input_size": 32, "weights": "none"}}
    for width, height, expect_cache in ((80, 60, True), (64, 64, False)):
        raw["deploy"] = {"camera": {"format": "rgb565", "width": width, "height": height}}
        cfg, run = make_run_folder(validate_config(raw))
        data = prepare_data(cfg, run, progress=False)
        samples = Manifest.load(run.manifest).samples
        seen = camera_boxes(cfg, samples)
        if expect_cache or resize == "stretch":
            np.testing.assert_allclose(seen, data.cache.boxes, atol=1e-6)
        else:  # 40x30 images: the stretched box is the box over the image's own sides
            by_hand = np.array([np.asarray(s.box) / [40, 30, 40, 30] for s in samples])
            np.testing.assert_allclose(seen, by_hand, atol=1e-6)
