"""Prove an int8 model runs on TensorFlow Lite Micro, measure its arena, and score it.

TFLM (PyPI `tflite-micro`) is the truth for what the microcontroller computes. LiteRT's reference
kernels (`OpResolverType.BUILTIN_REF`) are bit-exact with it and far faster, so they score the whole
split, while TFLM runs a sample whose outputs must EQUAL the reference's. Any difference, or a model
TFLM cannot run, is a `VerifyError`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tinyvision.deploy.camera import preprocess
from tinyvision.deploy.outputs import dequantize, op_names, quantize_images
from tinyvision.deploy.runners import ReferenceRunner, find_arena_bytes, run_tflm
from tinyvision.deploy.firmware import (CMSIS_NN, Core, build_firmware, firmware_size, instruction_counts,
                                       reference_kernel_ops, run_firmware, temporary_build_dir)
from tinyvision.deploy.tflm_build import build_app, build_library, run_app
from tinyvision.errors import VerifyError
from tinyvision.records import VerifyReport

log = logging.getLogger("tinyvision")
LONG_SPLIT = 1000  # images; a split this large takes seconds or more on the reference kernels


def verify_int8(model_path: str | Path, images: np.ndarray, tflm_samples: int,
                max_arena_bytes: int, seed: int = 0, n_classes: int | None = None
                ) -> tuple[np.ndarray | tuple[np.ndarray, ...], VerifyReport]:
    """Run `images` (uint8) through the int8 model: all on LiteRT reference kernels, a seeded sample
    also on TFLM, which must give identical int8 values on every output. Returns the dequantised
    scores (a tuple for a [class, box] model) and the report of the runtime facts."""
    if len(images) == 0:
        raise VerifyError("No images to verify on; the split is empty.")
    model_path = Path(model_path)
    reference = ReferenceRunner(model_path, n_classes)
    int8_inputs = quantize_images(images, reference.input_q)
    if len(images) >= LONG_SPLIT:  # seconds or minutes: say what is running
        log.info("scoring %d images with the int8 model on the LiteRT reference kernels",
                 len(images))
    start = time.perf_counter()
    reference_out = reference.run_all(int8_inputs)
    reference_seconds = time.perf_counter() - start
    arena = find_arena_bytes(model_path, int8_inputs[0], max_arena_bytes)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(images))[:tflm_samples])
    start = time.perf_counter()
    tflm_out = run_tflm(model_path, int8_inputs[sample], arena, reference.file_positions)
    tflm_seconds = time.perf_counter() - start
    log.info("reference kernels: %.1f ms per image (%d images); TFLM: %.1f ms per image (%d)",
             1e3 * reference_seconds / len(images), len(images),
             1e3 * tflm_seconds / max(len(sample), 1), len(sample))
    for number, (tflm, ref) in enumerate(zip(tflm_out, reference_out)):
        flat_tflm, flat_ref = tflm.reshape(len(sample), -1), ref[sample].reshape(len(sample), -1)
        mismatched = np.flatnonzero(np.any(flat_tflm != flat_ref, axis=1))
        if len(mismatched):
            first = int(sample[mismatched[0]])
            raise VerifyError(f"TFLM and the LiteRT reference kernels disagree on output {number} "
                              f"for {len(mismatched)} of {len(sample)} images (first: image {first}, "
                              f"TFLM {flat_tflm[mismatched[0]].tolist()} vs reference "
                              f"{flat_ref[mismatched[0]].tolist()}).")
    scores = tuple(dequantize(o, q) for o, q in zip(reference_out, reference.output_qs))
    return scores[0] if len(scores) == 1 else scores, VerifyReport(
        tflm_images=int(len(sample)), reference_images=int(len(images)),
        tflm_equals_reference=True, arena_bytes=int(arena),
        reference_ms_per_image=round(1e3 * reference_seconds / len(images), 3),
        tflm_ms_per_image=round(1e3 * tflm_seconds / max(len(sample), 1), 3),
        int8_bytes=model_path.stat().st_size, ops=dict(Counter(op_names(model_path))),
        input_quantization={"scale": reference.input_q.scale,
                            "zero_point": reference.input_q.zero_point})


def verify_app(app_dir: Path, tflm_root: Path, plan, frames: list[bytes], model_path: Path,
               positions: list[int], arena_bytes: int) -> dict:
    """Build the generated application against `tflm_root` and run it on `frames`: its int8 input
    tensors must equal the Python camera model's and its output bytes the Python TFLM
    interpreter's on those tensors, byte for byte. Returns what was checked and the arena the
    compiled application really uses."""
    expected_inputs, expected_outputs = _python_path(plan, frames, model_path, positions,
                                                     arena_bytes)
    library = build_library(tflm_root, "host")
    with tempfile.TemporaryDirectory(prefix="tinyvision-app-") as build:
        binary = build_app(app_dir, tflm_root, library, Path(build))
        ran = run_app(binary, frames, expected_inputs[0].size, expected_outputs.shape[1])
    for what, got, want in (("input tensor", ran.inputs, expected_inputs),
                            ("output bytes", ran.outputs, expected_outputs)):
        difference = _first_difference(got, want)
        if difference:
            raise VerifyError(f"the compiled application's {what} differ from the Python path's "
                              f"on {difference}.")
    return {"checked": True, "frames": len(frames), "inputs_equal": True, "outputs_equal": True,
            "arena_used_bytes": ran.arena_used_bytes, "tflm_source": str(tflm_root)}


def verify_firmware(app_dir: Path, tflm_root: Path, core: Core, plan, frames: list[bytes],
                    model_path: Path, positions: list[int], arena_bytes: int,
                    kernels: str = CMSIS_NN) -> dict:
    """Build the application as firmware for `core` (CMSIS-NN kernels, or TFLM's reference
    kernels: `kernels="reference"`) and run it on the emulated core: its int8 inputs must equal
    the Python camera model's (a VerifyError otherwise). Its output bytes are compared with the
    Python TFLM interpreter's (reference kernels): a difference is a finding about a CMSIS-NN
    kernel, reported (`outputs_equal`, `differs`), not an error. Returns the measured flash, RAM
    and instruction counts."""
    expected_inputs, expected_outputs = _python_path(plan, frames, model_path, positions,
                                                     arena_bytes)
    with temporary_build_dir() as build:
        elf = build_firmware(app_dir, tflm_root, core, Path(build), kernels)
        size = firmware_size(elf)
        ran = run_firmware(elf, core, frames, expected_inputs[0].size, expected_outputs.shape[1])
    difference = _first_difference(ran.app.inputs, expected_inputs)
    if difference:
        raise VerifyError(f"the firmware's input tensor on the emulated {core.title} differs from "
                          f"the Python path's on {difference}.")
    counts = instruction_counts(ran, tflm_root if kernels == CMSIS_NN else None, kernels)
    outputs_differ = _first_difference(ran.app.outputs, expected_outputs)
    result = {"checked": True, "core": core.target, "title": core.title, "kernels": kernels,
              "emulated": core.emulated, "frames": len(frames), "inputs_equal": True,
              "outputs_equal": not outputs_differ, "arena_used_bytes": ran.app.arena_used_bytes,
              "stack_bytes": ran.stack_bytes, "heap_bytes": ran.heap_bytes, "size": size,
              "instructions": counts, "reference_kernel_ops": reference_kernel_ops(counts)}
    if outputs_differ:
        result["differs"] = (f"output bytes of the {core.title} firmware ({kernels} kernels) "
                             f"differ from the Python TFLM interpreter's on {outputs_differ}; "
                             "ops on CMSIS-NN kernels: "
                             + ", ".join(op for op, e in counts["by_op"].items()
                                         if e["kernel"] == "cmsis-nn"))
    return result


def _python_path(plan, frames: list[bytes], model_path: Path, positions: list[int],
                 arena_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """The Python camera model's int8 inputs (frames, bytes) and the Python TFLM interpreter's
    output bytes on them (frames, bytes, outputs in Keras order)."""
    inputs = np.stack([preprocess(plan, frame) for frame in frames])
    outputs = run_tflm(model_path, inputs, arena_bytes, positions)
    return (inputs.reshape(len(frames), -1),
            np.concatenate([o.reshape(len(frames), -1) for o in outputs], axis=1))


def _first_difference(got: np.ndarray, want: np.ndarray) -> str:
    """'' when equal, else where they first differ ('3 of 8 frames (first: frame 0, byte 12: 5
    vs 4)')."""
    differs = np.flatnonzero(np.any(got != want, axis=1))
    if not len(differs):
        return ""
    first = int(differs[0])
    at = int(np.flatnonzero(got[first] != want[first])[0])
    return (f"{len(differs)} of {len(got)} frames (first: frame {first}, byte {at}: "
            f"{int(got[first, at])} vs {int(want[first, at])})")
