"""Prove an int8 model runs on TensorFlow Lite Micro, measure its arena, and score it.

TFLM (PyPI `tflite-micro`) is the truth for what the microcontroller computes. LiteRT's reference
kernels (`OpResolverType.BUILTIN_REF`) are bit-exact with it and far faster, so they score the whole
split, while TFLM runs a sample whose outputs must EQUAL the reference's. Any difference, or a model
TFLM cannot run, is a `VerifyError`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from tinyvision.deploy.outputs import dequantize, op_names, quantize_images
from tinyvision.deploy.runners import ReferenceRunner, find_arena_bytes, run_tflm
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
