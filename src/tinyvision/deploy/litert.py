"""Full-integer int8 LiteRT export, calibrated on real training images.

The model's input is pixels 0..255 with normalisation inside, so the int8 input is pixel - 128
(scale 1, zero point -128) and the device feeds camera bytes with one subtraction.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from tinyvision.errors import ExportError
from tinyvision.files import atomic_path

log = logging.getLogger("tinyvision")

MIN_CALIBRATION_IMAGES = 8
FEW_CALIBRATION_IMAGES = 200


def export_int8(model, calibration: np.ndarray, path: str | Path, per_channel: bool = True,
                min_images: int = MIN_CALIBRATION_IMAGES, warn_few: bool = True) -> bytes:
    """Convert `model` to an int8-in, int8-out LiteRT flatbuffer written atomically to `path`.

    `calibration` holds uint8 training images (N, H, W, C) — the model's own inputs, never random
    data. Fewer than `min_images` (one training batch) are refused; fewer than 200 give a warning
    (ranges may be underestimated), unless `warn_few` is off (a conversion only to measure the
    model's size, ops and arena, as `tinyvision search` does for each candidate). `per_channel`:
    one weight scale per output channel (the default, TFLM's and the converter's), or one per
    tensor.
    """
    import tensorflow as tf

    count = len(calibration)
    if count < max(min_images, MIN_CALIBRATION_IMAGES):
        raise ExportError(f"int8 calibration needs at least one training batch "
                          f"({max(min_images, MIN_CALIBRATION_IMAGES)} images), got {count}; raise "
                          "export.representative_samples or add training images.")
    if count < FEW_CALIBRATION_IMAGES and warn_few:
        log.warning("calibrating int8 ranges on only %d images; a few hundred give safer ranges",
                    count)
    height, width, channels = model.input_shape[1:]

    def representative():
        for i in range(count):
            image = calibration[i].astype(np.float32)
            if i == 0:
                # Make the calibrated input range exactly 0..255, so the int8 input quantisation is
                # scale 1 / zero point -128 whatever the images' own extremes are.
                image = image.copy()
                image.flat[0], image.flat[-1] = 0.0, 255.0
            yield [image[None]]

    with atomic_path(path, suffix=".tflite") as tmp:
        try:
            with quiet_converter():
                model.export(str(tmp), format="litert", verbose=False,
                             input_signature=[tf.TensorSpec([1, height, width, channels], tf.float32)],
                             optimizations=[tf.lite.Optimize.DEFAULT],
                             representative_dataset=representative,
                             target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                             inference_input_type=tf.int8, inference_output_type=tf.int8,
                             _experimental_disable_per_channel=not per_channel)
        except Exception as exc:  # the converter raises ConverterError and friends with long logs
            raise ExportError(f"int8 conversion of {model.name} failed: {str(exc)[:2000]}") from None
        data = Path(tmp).read_bytes()
    return data


def balanced_draw(labels: np.ndarray, candidates: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Up to `count` of `candidates` (sample indices), class-balanced: classes take turns (for
    multi-label data, each set of labels is a class of its own), each in a seeded random order,
    so a rare class is in the calibration set and a frequent one does not set every range.
    Returned sorted."""
    rng = np.random.default_rng(seed)
    rows = labels[candidates] >= 0.5
    _, group = np.unique(rows, axis=0, return_inverse=True) if len(candidates) else (None, [])
    group = np.asarray(group).reshape(-1)
    queues = [list(rng.permutation(candidates[group == k])) for k in np.unique(group)]
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop()))
    return np.sort(np.asarray(chosen, dtype=np.int64))


@contextlib.contextmanager
def quiet_converter():
    """Keep the converter's Python-level chatter out of the user's terminal."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
