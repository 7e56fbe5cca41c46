"""Full-integer int8 LiteRT export, calibrated on real training images.

The Keras model's input is pixels 0..255 with its normalisation inside (the `normalize` layer,
pixel x a + b). Converted as it is, the int8 graph would start with two whole-image ops (MUL,
ADD: 17 % of the demo model's instructions on a Cortex-M7, 18 KB of kernels). So the
normalisation is folded into the input quantisation instead: the graph from `normalize` on is
converted, calibrated on normalised images over the range that makes the int8 input an affine
function of the pixel with an integer zero point, and the pixel value that normalises to 0 an
int8 value (so the first convolution pads exactly as the float model does). For MobileNet's
pixel / 127.5 - 1: input scale 1/128 and zero point 0 in normalised units, 255/256 and -128 in
pixels (pixel 255 saturates at 127/128 instead of 1). a and b go into the .tflite's metadata
(`outputs.INPUT_METADATA`), from which every reader takes the input quantisation in pixels: the
camera table and `quantize_images` feed the first convolution directly. A normalisation that
cannot be folded so (per-channel, or a zero off the pixel grid) is converted as it is.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
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
    tensor. The input normalisation is folded into the int8 input where it can be (module
    docstring).
    """
    count = len(calibration)
    if count < max(min_images, MIN_CALIBRATION_IMAGES):
        raise ExportError(f"int8 calibration needs at least one training batch "
                          f"({max(min_images, MIN_CALIBRATION_IMAGES)} images), got {count}; raise "
                          "export.representative_samples or add training images.")
    if count < FEW_CALIBRATION_IMAGES and warn_few:
        log.warning("calibrating int8 ranges on only %d images; a few hundred give safer ranges",
                    count)
    fold = foldable_normalization(model)
    if fold is not None:
        data = _convert_folded(model, calibration, per_channel, *fold)
        if data is not None:
            with atomic_path(path, suffix=".tflite") as tmp:
                Path(tmp).write_bytes(data)
            return data
        log.info("the input normalisation of %s could not be folded into the int8 input; "
                 "converted with it", model.name)

    def representative():
        for i in range(count):
            image = calibration[i].astype(np.float32)
            if i == 0:
                # Make the calibrated input range exactly 0..255, so the int8 input quantisation is
                # scale 1 / zero point -128 whatever the images' own extremes are.
                image = image.copy()
                image.flat[0], image.flat[-1] = 0.0, 255.0
            yield [image[None]]

    data = _convert(model, representative, per_channel)
    with atomic_path(path, suffix=".tflite") as tmp:
        Path(tmp).write_bytes(data)
    return data


def _convert(model, representative, per_channel: bool) -> bytes:
    """`model` (float input) as an int8-in, int8-out LiteRT flatbuffer."""
    import tensorflow as tf

    try:
        return litert_bytes(model, optimizations=[tf.lite.Optimize.DEFAULT],
                            representative_dataset=representative,
                            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                            inference_input_type=tf.int8, inference_output_type=tf.int8,
                            _experimental_disable_per_channel=not per_channel)
    except Exception as exc:  # the converter raises ConverterError and friends with long logs
        raise ExportError(f"int8 conversion of {model.name} failed: {str(exc)[:2000]}") from None


def litert_bytes(model, **settings) -> bytes:
    """`model` at batch 1 as a LiteRT flatbuffer, the converter given `settings` (its attributes;
    `target_spec` a dict of the spec's).

    Keras' own `model.export(format="litert")` saves the model, its variables and the layers
    that track them, as a SavedModel and converts that: 2.9 s for MobileNet V1 0.25 at 32x32.
    Here the model's inference function is frozen first (its weights made constants) and only
    that function saved, as the serving signature whose outputs `output_0`, `output_1`, ... keep
    the Keras model's order (outputs.keras_output_order): 0.3 s, the same graph
    (tests/deploy/test_litert_convert.py compares the two paths' int8 outputs bit for bit).
    """
    import tensorflow as tf
    # TensorFlow's own converter freezes functions with this; it has no public name in TF 2
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2

    height, width, channels = model.input_shape[1:]
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, height, width, channels], tf.float32))
    frozen = convert_variables_to_constants_v2(function)
    with tempfile.TemporaryDirectory(prefix="tinyvision-litert-") as folder:
        # a SavedModel of the frozen function alone (no variables: fast) gives the converter the
        # serving signature; custom gradients (swish's) are not needed to convert
        tf.saved_model.save(tf.Module(), folder, signatures={"serving_default": frozen},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        for name, value in settings.items():
            if name == "target_spec":
                for key, item in value.items():
                    setattr(converter.target_spec, key, item)
            else:
                setattr(converter, name, value)
        with quiet_converter():
            return converter.convert()


def foldable_normalization(model) -> tuple[object, float, float, float, int] | None:
    """(the model from `normalize` on, a, b, the pixel scale S, the normalised zero point z) when
    the model's normalisation pixel x a + b can be folded into its int8 input: one a and b for
    all channels, a > 0, and the pixel p0 = -b / a that normalises to 0 on a grid of pixel steps
    S with q(p0) an integer (S = 1 when p0 is a whole pixel; p0 / round(p0) when it is not, such
    as MobileNet's 127.5). Else None."""
    import keras

    from tinyvision.models.build import NORMALIZE_LAYER

    try:
        layer = model.get_layer(NORMALIZE_LAYER)
    except ValueError:
        return None
    if not isinstance(layer, keras.layers.Rescaling) or len(model.inputs) != 1:
        return None
    scale, offset = (np.unique(np.asarray(v, dtype=np.float64)) for v in (layer.scale,
                                                                           layer.offset))
    if scale.size != 1 or offset.size != 1 or scale[0] <= 0:
        return None
    a, b = float(scale[0]), float(offset[0])
    zero_pixel = -b / a
    if not 0 <= zero_pixel <= 255:
        return None
    whole = round(zero_pixel)
    if abs(zero_pixel - whole) < 1e-9:
        pixel_scale = 1.0
    elif whole >= 64:  # a grid within 1 % of one pixel per step
        pixel_scale = zero_pixel / whole
    else:
        return None
    try:
        inner = keras.Model(layer.output, model.outputs, name=f"{model.name}_int8")
    except ValueError:  # another layer reads the raw input: nothing to fold
        return None
    return inner, a, b, pixel_scale, int(round(zero_pixel / pixel_scale)) - 128


def _convert_folded(model, calibration: np.ndarray, per_channel: bool, inner, a: float, b: float,
                    pixel_scale: float, zero_point: int) -> bytes | None:
    """The graph after `normalize`, calibrated on normalised images clipped to the range of the
    chosen input quantisation (normalised scale a x S, zero point z), with a and b in its
    metadata; None when the converter did not pick that quantisation."""
    from tinyvision.deploy.outputs import INPUT_METADATA, input_normalization, litert_interpreter

    scale = a * pixel_scale
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale

    def representative():
        for i in range(len(calibration)):
            image = np.clip(calibration[i].astype(np.float32) * a + b, low, high)
            if i == 0:  # the calibrated range is exactly the chosen one
                image.flat[0], image.flat[-1] = low, high
            yield [image[None].astype(np.float32)]

    data = _convert(inner, representative, per_channel)
    detail = litert_interpreter(data).get_input_details()[0]
    got_scale, got_zero = detail["quantization"]
    if got_zero != zero_point or abs(got_scale - scale) > 1e-6 * scale:
        return None
    data = with_metadata(data, INPUT_METADATA, json.dumps({"scale": a, "offset": b}).encode())
    return data if input_normalization(data) is not None else None


def with_metadata(data: bytes, name: str, value: bytes) -> bytes:
    """The flatbuffer with one more metadata entry (`name` -> a buffer holding `value`)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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
