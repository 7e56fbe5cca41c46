"""Prove an int8 model runs on TensorFlow Lite Micro, measure its arena, and score it.

TFLM (PyPI `tflite-micro`) is the truth for what the microcontroller computes. LiteRT's reference
kernels (`OpResolverType.BUILTIN_REF`) are bit-exact with it and far faster, so they score the whole
split, while TFLM runs a sample whose outputs must EQUAL the reference's. Any difference, or a model
TFLM cannot run, is a `VerifyError`.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from tinyvision.deploy.camera import preprocess
from tinyvision.deploy.outputs import dequantize, op_names, quantize_images
from tinyvision.deploy.runners import ReferenceRunner, find_arena_bytes, run_tflm
from tinyvision.deploy.tflm_build import build_app, build_library, run_app
from tinyvision.errors import VerifyError


def verify_int8(model_path: str | Path, images: np.ndarray, tflm_samples: int,
                max_arena_bytes: int, seed: int = 0, n_classes: int | None = None) -> dict:
    """Run `images` (uint8) through the int8 model: all on LiteRT reference kernels, a seeded sample
    also on TFLM, which must give identical int8 values on every output. Returns the dequantised
    scores (a tuple for a [class, box] model) and the runtime facts."""
    if len(images) == 0:
        raise VerifyError("No images to verify on; the split is empty.")
    model_path = Path(model_path)
    reference = ReferenceRunner(model_path, n_classes)
    int8_inputs = quantize_images(images, reference.input_q)
    reference_out = reference.run_all(int8_inputs)
    arena = find_arena_bytes(model_path, int8_inputs[0], max_arena_bytes)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(images))[:tflm_samples])
    tflm_out = run_tflm(model_path, int8_inputs[sample], arena, reference.file_positions)
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
    return {
        "scores": scores[0] if len(scores) == 1 else scores,
        "tflm_images": int(len(sample)),
        "reference_images": int(len(images)),
        "tflm_equals_reference": True,
        "arena_bytes": int(arena),
        "model_bytes": model_path.stat().st_size,
        "ops": dict(Counter(op_names(model_path))),
        "input_quantization": {"scale": reference.input_q.scale,
                               "zero_point": reference.input_q.zero_point},
    }


def verify_app(app_dir: Path, tflm_root: Path, plan, frames: list[bytes], model_path: Path,
               positions: list[int], arena_bytes: int) -> dict:
    """Build the generated application against `tflm_root` and run it on `frames`: its int8 input
    tensors must equal the Python camera model's and its output bytes the Python TFLM
    interpreter's on those tensors, byte for byte. Returns what was checked and the arena the
    compiled application really uses."""
    expected_inputs = np.stack([preprocess(plan, frame) for frame in frames])
    expected = run_tflm(model_path, expected_inputs, arena_bytes, positions)
    expected_outputs = np.concatenate([o.reshape(len(frames), -1) for o in expected], axis=1)
    library = build_library(tflm_root)
    with tempfile.TemporaryDirectory(prefix="tinyvision-app-") as build:
        binary = build_app(app_dir, tflm_root, library, Path(build))
        ran = run_app(binary, frames, expected_inputs[0].size, expected_outputs.shape[1])
    for what, got, want in (("input tensor", ran.inputs, expected_inputs.reshape(len(frames), -1)),
                            ("output bytes", ran.outputs, expected_outputs)):
        differs = np.flatnonzero(np.any(got != want, axis=1))
        if len(differs):
            first = int(differs[0])
            at = int(np.flatnonzero(got[first] != want[first])[0])
            raise VerifyError(f"the compiled application's {what} differ from the Python path's on "
                              f"{len(differs)} of {len(frames)} frames (first: frame {first}, "
                              f"byte {at}: {int(got[first, at])} vs {int(want[first, at])}).")
    return {"checked": True, "frames": len(frames), "inputs_equal": True, "outputs_equal": True,
            "arena_used_bytes": ran.arena_used_bytes, "tflm_source": str(tflm_root)}
