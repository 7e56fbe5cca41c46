"""The device side of a run's export and verify stages: the op check, the arena, the generated TFLM
application and camera preprocessing, the board fit; then the compiled application checked on the
host and the test split seen through the camera.

    export:  ops vs TFLM -> arena (Python TFLM) -> export/app/ -> fit on export.board (fit.json)
    verify:  app built against a TFLM tree, run on seeded frames == Python path, byte for byte;
             the same app as firmware for export.board's core, run on the emulated core (QEMU)
             on the same frames: its bytes, flash, RAM and instructions; the board refitted
             with the measured figures; test accuracy through camera frames vs training path
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tinyvision.config import RunConfig
from tinyvision.data.cache import BadImage, DecodeSpec, map_box, source_region
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources.boxes import image_size
from tinyvision.deploy.app import write_app
from tinyvision.deploy.boards import Board, load_board
from tinyvision.deploy.c_source import write_c_source
from tinyvision.deploy.camera import (CameraFormat, CameraPlan, frame_from_file,
                                      make_plan, preprocess)
from tinyvision.deploy.firmware import core_of, unavailable_reason
from tinyvision.deploy.fit import fit_check, fit_table
from tinyvision.deploy.ops import check_tflm_ops, int8_ops, model_ops
from tinyvision.deploy.outputs import Quantization, dequantize, quantize_images, tensor_quantization
from tinyvision.deploy.runners import ReferenceRunner, find_arena_bytes
from tinyvision.deploy.tflm_build import SOURCE_ENV, find_tflm_source
from tinyvision.deploy.verify import verify_app, verify_firmware
from tinyvision.errors import ExportError, RunError
from tinyvision.layout import APP_DIR, FIT_FILE
from tinyvision.models.outputs import output_kinds
from tinyvision.records import BoardFit, VerifyReport
from tinyvision.run.folder import RunDir

log = logging.getLogger("tinyvision")

PYTHON_ARENA = "Python TFLM interpreter"
APP_ARENA = "compiled application"


def check_device_settings(cfg: RunConfig) -> None:
    """export.board, deploy.camera and verify.tflm_source fail before any training."""
    if cfg.export.board:
        load_board(cfg.export.board)
    find_tflm_source(cfg.verify.tflm_source)
    height, width = cfg.model.input_size
    make_plan(camera_format(cfg), (height, width, cfg.model.channels), cfg.data.resize,
              "bilinear", 1.0, -128)


def camera_format(cfg: RunConfig) -> CameraFormat:
    """deploy.camera, or without one frames that are images at the model's input size."""
    if cfg.deploy.camera is not None:
        return CameraFormat.from_config(cfg.deploy.camera)
    height, width = cfg.model.input_size
    if cfg.model.channels == 1:
        return CameraFormat("grayscale", width, height, "none")
    return CameraFormat("rgb888", width, height, "rgb")


def camera_plan(cfg: RunConfig, quantization: dict) -> CameraPlan:
    height, width = cfg.model.input_size
    interpolation = cfg.deploy.camera.interpolation if cfg.deploy.camera else "bilinear"
    inp = quantization["input"]
    return make_plan(camera_format(cfg), (height, width, cfg.model.channels), cfg.data.resize,
                     interpolation, inp["scale"], inp["zero_point"])


class DeviceExport(NamedTuple):
    """What export_device found: the ops, MACs and arena of the int8 model, its board fit."""

    ops: list[str]
    macs: int
    arena_bytes: int
    fit: BoardFit | None


def export_device(cfg: RunConfig, run: RunDir, model, model_bytes: bytes, quantization: dict,
                  sample: np.ndarray) -> DeviceExport:
    """After conversion: refuse ops TFLM lacks, measure the arena, write export/app/, and check
    the fit on export.board (an ExportError with the table when it does not fit)."""
    uses = model_ops(model_bytes, _layer_names(model))
    check_tflm_ops(uses, run.int8_model.name)
    ops = [use.op for use in uses]
    q = quantization["input"]
    arena = find_arena_bytes(run.int8_model, quantize_images(sample[None], Quantization(
        q["scale"], q["zero_point"]))[0], cfg.verify.max_arena_bytes)
    write_app(run.export_dir / APP_DIR, camera_plan(cfg, quantization), ops, quantization,
              cfg.export.c_array_name, run.c_header.name, run.c_source.name, arena,
              int8_ops(uses))
    macs = sum(use.macs for use in uses)
    fit = (board_fit(cfg, run, len(model_bytes), ops, arena, PYTHON_ARENA, macs)
           if cfg.export.board else None)
    return DeviceExport(sorted(set(ops)), macs, arena, fit)


def board_fit(cfg: RunConfig, run: RunDir, model_bytes: int, ops: list[str], arena: int,
              arena_source: str, macs: int, board: str | None = None,
              firmware: dict | None = None) -> BoardFit:
    """Fit on the board (with the firmware's measured figures where given), printed, saved as
    export/fit.json; an ExportError when it does not fit."""
    fit = fit_check(load_board(board or cfg.export.board), model_bytes, ops, arena, arena_source,
                    macs, camera_format(cfg) if cfg.deploy.camera is not None else None,
                    firmware=firmware)
    fit.write(run.export_dir / FIT_FILE)
    if not fit.fits:
        raise ExportError(f"the int8 model does not fit {fit.board}:\n{fit_table(fit)}\n")
    return fit


def run_fit(cfg: RunConfig, run: RunDir, board: str, firmware: bool = True) -> BoardFit:
    """The fit of an exported run on any board, without writing: the arena of verify.json (the
    compiled application's when it was built), else measured now on the Python interpreter. With
    `firmware`, measured figures of the firmware for the board's core: verify's when it ran the
    same core, else built and run now (one seeded random frame) where the tree and the Arm
    toolchain are there; else estimates."""
    model_path = run.require(run.int8_model, "tinyvision export")
    verified = VerifyReport.read(run.verify)
    arena, source = ((verified and verified.app) or {}).get("arena_used_bytes"), APP_ARENA
    if not arena:
        arena, source = verified and verified.arena_bytes, PYTHON_ARENA
    if not arena:
        q = tensor_quantization(model_path)["input"]
        arena = find_arena_bytes(model_path, np.full(q["shape"][1:], q["zero_point"], np.int8),
                                 cfg.verify.max_arena_bytes)
    uses = model_ops(model_path)
    camera = camera_format(cfg) if cfg.deploy.camera is not None else None
    profile = load_board(board)
    measured = _fit_firmware(cfg, run, profile, verified, arena) if firmware else None
    try:
        return fit_check(profile, model_path.stat().st_size, [u.op for u in uses], arena,
                         source, sum(u.macs for u in uses), camera, firmware=measured)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):  # verify.json's, damaged
        raise RunError(f"the firmware figures in {run.verify} are damaged; run `tinyvision "
                       f"verify {run.root}` again to rewrite them.") from None


def _fit_firmware(cfg: RunConfig, run: RunDir, board: Board, verified: VerifyReport | None,
                  arena: int) -> dict | None:
    """Measured firmware figures for `board`'s core: verify's, when it ran that core; else the
    firmware built and run now on one seeded random frame; None where that cannot be done
    (the reason is logged)."""
    core = core_of(board.core)
    earlier = (verified and verified.firmware) or {}
    if core is not None and earlier.get("checked") and earlier.get("core") == core.target:
        return earlier
    root = find_tflm_source(cfg.verify.tflm_source)
    reason = unavailable_reason(board.core, root)
    if reason is not None:
        log.info("firmware for %s not built: %s", board.name, reason)
        return None
    manifest = Manifest.load(run.require(run.manifest, "tinyvision train"))
    quantization = tensor_quantization(run.int8_model, len(manifest.classes))
    plan = camera_plan(cfg, quantization)
    frames = app_frames(plan.camera, [], 1, cfg.seed)
    positions = [o["index"] for o in quantization["outputs"]]
    with tempfile.TemporaryDirectory(prefix="tinyvision-export-") as folder:
        app_dir = build_files(cfg, run, Path(folder), manifest.classes, manifest.task, arena)
        log.info("building the firmware for %s (%s) and running it on %s", board.name,
                 core.title, core.emulated)
        return verify_firmware(app_dir, root, core, plan, frames, run.int8_model, positions,
                               arena)


def _layer_names(model) -> list[str]:
    names = []
    for layer in getattr(model, "layers", []):
        names.append(layer.name)
        names.extend(_layer_names(layer) if hasattr(layer, "layers") else [])
    return names


def verify_device(cfg: RunConfig, run: RunDir, report: VerifyReport, paths: list[str],
                  classes: list[str], task: str, thresholds: list[float] | None = None) -> None:
    """The compiled application on seeded frames (when a TFLM tree is configured), the firmware
    for export.board's core on the emulated core (when the Arm toolchain and QEMU are there too),
    and the board refitted with their figures: `report`'s app, firmware and fit.

    What is compiled and run is written afresh from the run's data (`build_files`), never taken
    from the run folder: a Makefile or C file there could hold any command."""
    arena = report.arena_bytes
    root = find_tflm_source(cfg.verify.tflm_source)
    board = load_board(cfg.export.board) if cfg.export.board else None
    if root is None:
        report.app = {"checked": False,
                      "reason": f"no TFLM source tree: set verify.tflm_source or ${SOURCE_ENV} to "
                                "build export/app and check it on the host"}
    else:
        quantization = tensor_quantization(run.int8_model, len(classes))
        plan = camera_plan(cfg, quantization)
        frames = app_frames(plan.camera, paths, cfg.verify.app_frames, cfg.seed)
        positions = [o["index"] for o in quantization["outputs"]]
        with tempfile.TemporaryDirectory(prefix="tinyvision-export-") as folder:
            app_dir = build_files(cfg, run, Path(folder), classes, task, arena, thresholds)
            report.app = verify_app(app_dir, root, plan, frames, run.int8_model, positions, arena)
            if board is not None:
                report.firmware = firmware_check(cfg, board, root, app_dir, plan, frames,
                                                 run.int8_model, positions, arena)
    if board is not None:
        if report.firmware is None:
            report.firmware = {"checked": False, "reason": _firmware_reason(cfg, board, root)}
        arena_used = report.app.get("arena_used_bytes")
        ops_macs = model_ops(run.int8_model)
        report.fit = board_fit(cfg, run, run.int8_model.stat().st_size,
                               [u.op for u in ops_macs], arena_used or arena,
                               APP_ARENA if arena_used else PYTHON_ARENA,
                               sum(u.macs for u in ops_macs), firmware=report.firmware)


def _firmware_reason(cfg: RunConfig, board: Board, root: Path | None) -> str | None:
    """Why the firmware is not built and run for `board`, or None when it is."""
    if not cfg.verify.firmware:
        return "verify.firmware is off"
    return unavailable_reason(board.core, root)


def firmware_check(cfg: RunConfig, board: Board, root: Path, app_dir: Path, plan: CameraPlan,
                   frames: list[bytes], model_path: Path, positions: list[int],
                   arena: int) -> dict:
    """The application built as firmware for the board's core and run on the emulated core
    (`verify_firmware`), or why not, said once on the console."""
    reason = _firmware_reason(cfg, board, root)
    if reason is not None:
        log.info("firmware for %s not built: %s", board.name, reason)
        return {"checked": False, "reason": reason}
    core = core_of(board.core)
    log.info("building the firmware for %s (%s) and running it on %s", board.name, core.title,
             core.emulated)
    found = verify_firmware(app_dir, root, core, plan, frames, model_path, positions, arena)
    if not found["outputs_equal"]:
        log.warning("%s", found["differs"])
    return found


def build_files(cfg: RunConfig, run: RunDir, folder: Path, classes: list[str], task: str,
                arena: int, thresholds: list[float] | None = None) -> Path:
    """export/'s C array and export/app/ as the export stage writes them, regenerated into
    `folder` from the run's data (the int8 .tflite's bytes, the config's numbers and names, the
    class names as C strings): what verify compiles. Returns the application's folder."""
    model_bytes = run.int8_model.read_bytes()
    quantization = tensor_quantization(model_bytes, len(classes),
                                       output_kinds(task, len(classes)))
    header, source = folder / run.c_header.name, folder / run.c_source.name
    write_c_source(model_bytes, header, source, cfg.export.c_array_name, quantization, classes,
                   thresholds)
    uses = model_ops(model_bytes)
    return write_app(folder / APP_DIR, camera_plan(cfg, quantization), [use.op for use in uses],
                     quantization, cfg.export.c_array_name, header.name, source.name, arena,
                     int8_ops(uses))


def app_frames(camera: CameraFormat, paths: list[str], count: int, seed: int) -> list[bytes]:
    """Seeded frames: test images rendered into the camera format, plus one random frame (every
    byte value, edge cases the photos may not reach)."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in rng.permutation(len(paths)):
        if len(frames) >= max(1, count - 1):
            break
        try:
            frames.append(frame_from_file(paths[index], camera))
        except (BadImage, OSError):
            continue
    frames.append(rng.integers(0, 256, camera.frame_bytes, dtype=np.uint8).tobytes())
    return frames


def camera_inputs(cfg: RunConfig, quantization: dict, paths: list[str]) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """int8 inputs of images seen through deploy.camera: each image rendered into a frame of the
    camera's format and size, then the camera preprocessing. Returns (inputs, usable mask)."""
    plan = camera_plan(cfg, quantization)
    inputs = np.zeros((len(paths), plan.out_height, plan.out_width, plan.channels), np.int8)
    usable = np.ones(len(paths), bool)
    for i, path in enumerate(paths):
        try:
            inputs[i] = preprocess(plan, frame_from_file(Path(path), plan.camera))
        except (BadImage, OSError):
            usable[i] = False
    return inputs, usable


def camera_boxes(cfg: RunConfig, samples: list) -> np.ndarray:
    """The samples' boxes as the model sees them through deploy.camera, normalised xyxy of the
    model input (NaN rows: no box): a frame is the image stretched to the camera's size, then
    the camera preprocessing applies data.resize's geometry to the frame, which differs from
    the training path's (the image's own aspect) for center_crop and letterbox."""
    camera = camera_format(cfg)
    spec = DecodeSpec(tuple(cfg.model.input_size), resize=cfg.data.resize)
    region = source_region((camera.width, camera.height), spec, None)
    out = np.full((len(samples), 4), np.nan, np.float32)
    for row, sample in enumerate(samples):
        if sample.box is None:
            continue
        width, height = image_size(sample.path)
        x1, y1, x2, y2 = sample.box
        sx, sy = camera.width / width, camera.height / height
        out[row] = map_box((x1 * sx, y1 * sy, x2 * sx, y2 * sy), region, spec)
    return out


class CameraScorer:
    """Image or raw frame files seen as the device sees them: rendered into (or read as) frames
    of deploy.camera, the camera preprocessing, then the int8 model (`predict --camera`)."""

    def __init__(self, cfg: RunConfig, model_path: Path, n_classes: int) -> None:
        self.runner = ReferenceRunner(model_path, n_classes)
        self.plan = camera_plan(cfg, tensor_quantization(model_path, n_classes))

    def outputs(self, paths: list[Path]) -> list[np.ndarray]:
        """The int8 model's dequantised outputs on the files, in the model's order."""
        inputs = np.stack([preprocess(self.plan, frame_from_file(p, self.plan.camera))
                           for p in paths])
        return [dequantize(o, q) for o, q in zip(self.runner.run_all(inputs),
                                                  self.runner.output_qs)]

    def frame_size(self) -> tuple[int, int]:
        return self.plan.camera.width, self.plan.camera.height
