"""On-the-fly augmentation of training batches, from the `train.augment` list of the config.

All geometric ops (flip, rotation, zoom, translation, shear, random_crop) of a list are composed
into ONE affine matrix per image and applied with a single `ImageProjectiveTransformV3` call per
batch; a detection box is moved by the same matrix (its 4 corners, then the enclosing axis-aligned
box, clipped to [0, 1]). Pixel ops (contrast, brightness, hue, saturation, channel_shift, cutout,
noise, grayscale) follow in list order. Everything is vectorised over the batch and seeded with
stateless random ops, so a batch's augmentation depends only on the seed it is given.

Coordinates: a matrix maps a point of the input image to the output image, in pixels, with the
origin at the image centre (so rotation and shear keep non-square images undistorted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf
from pydantic import TypeAdapter, ValidationError

from tinyvision.config import (GEOMETRIC_AUGMENT_OPS, RGB_ONLY_AUGMENT_OPS, AugmentList, AugmentOp,
                               format_validation_error)
from tinyvision.errors import ConfigError

DEFAULT_FILL_VALUE = 128.0  # mid-grey, like the cache's letterbox pads: 0 after the int8 offset
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as tf.image.rgb_to_grayscale


def parse_augment(entries: Sequence | None) -> list[AugmentOp]:
    """Validated op models from config entries (dicts or already-validated op models)."""
    if not entries:
        return []
    raw = [e.model_dump() if isinstance(e, AugmentOp) else e for e in entries]
    try:
        return TypeAdapter(AugmentList).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "train.augment")) from None


class Augmenter:
    """Augments a batch (B, H, W, C) of pixels 0..255 (uint8 or float) into float32 and, for
    detection, moves its boxes (B, 4).

    `augmenter(images, boxes, seed)` returns `(images, boxes)`; `seed` is a shape-[2] integer
    tensor, `boxes` normalised xyxy (NaN rows: no box) or None. Build it once per pipeline.
    """

    def __init__(self, ops: Sequence, image_shape: Sequence[int], detection: bool = False):
        self.ops = parse_augment(ops)
        self.height, self.width, self.channels = (int(v) for v in image_shape)
        self.detection = detection
        for i, op in enumerate(self.ops):
            if op.op in RGB_ONLY_AUGMENT_OPS and self.channels != 3:
                raise ConfigError(
                    f"train.augment[{i}] (op {op.op!r}) needs RGB images, but they have "
                    f"{self.channels} channel(s) (model.color_mode='grayscale'). Remove the op, or "
                    "use brightness/contrast/noise, which work on grayscale images.")
        self.geometric = [op for op in self.ops if op.op in GEOMETRIC_AUGMENT_OPS]
        self.pixel = [op for op in self.ops if op.op not in GEOMETRIC_AUGMENT_OPS]
        self.fill_mode, self.fill_value = self._fill()

    def _fill(self) -> tuple[str, float]:
        modes = [op.fill_mode for op in self.geometric if op.fill_mode is not None]
        values = [op.fill_value for op in self.geometric if op.fill_value is not None]
        mode = modes[0] if modes else ("constant" if self.detection else "reflect")
        return mode, values[0] if values else DEFAULT_FILL_VALUE

    def __call__(self, images: tf.Tensor, boxes: tf.Tensor | None,
                 seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        seed = tf.cast(seed, tf.int64)
        batch = tf.shape(images)[0]
        if self.geometric:  # on uint8 input (the cache's pixels) the warp is ~25 % cheaper
            forward = self.forward_matrices(batch, boxes, seed)
            images = self.warp(images, forward)
            if boxes is not None:
                boxes = transform_boxes(boxes, forward, self.height, self.width)
        images = tf.cast(images, tf.float32)
        for k, op in enumerate(self.pixel):
            op_seed = tf.random.experimental.stateless_fold_in(seed, 1000 + k)
            images = _PIXEL_OPS[op.op](self, op, images, boxes, op_seed)
        if self.pixel:
            images = tf.clip_by_value(images, 0.0, 255.0)
        return images, boxes

    # ---- geometry ----------------------------------------------------------------------------
    def forward_matrices(self, batch: tf.Tensor, boxes: tf.Tensor | None,
                         seed: tf.Tensor) -> tf.Tensor:
        """(B, 3, 3) input->output matrices of all geometric ops, composed in list order."""
        forward = tf.eye(3, batch_shape=[batch])
        for k, op in enumerate(self.geometric):
            op_seed = tf.random.experimental.stateless_fold_in(seed, k)
            if op.op == "random_crop":
                current = (None if boxes is None or not op.keep_box else
                           transform_boxes(boxes, forward, self.height, self.width))
                matrix = self._crop(op, batch, current, op_seed)
            elif op.op == "move_box":
                current = (None if boxes is None else
                           transform_boxes(boxes, forward, self.height, self.width))
                matrix = self._move_box(op, batch, current, op_seed)
            else:
                matrix = _GEOMETRIC_OPS[op.op](self, op, batch, op_seed)
            applied = _uniform(op_seed, 99, [batch]) < op.probability
            if op.op != "flip":  # a flip's probability is per axis, drawn in its builder
                matrix = tf.where(applied[:, None, None], matrix, tf.eye(3, batch_shape=[batch]))
            forward = tf.matmul(matrix, forward)
        return forward

    def warp(self, images: tf.Tensor, forward: tf.Tensor) -> tf.Tensor:
        """Resample `images` through `forward` (one bilinear projective-transform call)."""
        centre = _translate(tf.fill([tf.shape(forward)[0]], (self.width - 1) / 2),
                            tf.fill([tf.shape(forward)[0]], (self.height - 1) / 2))
        # ImageProjectiveTransformV3 maps output pixel indices to input pixel indices.
        inverse = centre @ tf.linalg.inv(forward) @ tf.linalg.inv(centre)
        transforms = tf.reshape(inverse, [-1, 9])[:, :8] / inverse[:, 2:3, 2]
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=[self.height, self.width],
            fill_value=self.fill_value, interpolation="BILINEAR", fill_mode=self.fill_mode.upper())

    def _flip(self, op, batch, seed):
        ones = tf.ones([batch])
        sx, sy = ones, ones
        if op.mode in ("horizontal", "horizontal_and_vertical"):
            sx = tf.where(_uniform(seed, 0, [batch]) < op.probability, -ones, ones)
        if op.mode in ("vertical", "horizontal_and_vertical"):
            sy = tf.where(_uniform(seed, 1, [batch]) < op.probability, -ones, ones)
        return _linear(sx, 0 * ones, 0 * ones, sy)

    def _rotation(self, op, batch, seed):
        angle = _uniform(seed, 0, [batch], -1.0, 1.0) * op.degrees * math.pi / 180
        cos, sin = tf.cos(angle), tf.sin(angle)
        return _linear(cos, -sin, sin, cos)

    def _zoom(self, op, batch, seed):
        scale = _uniform(seed, 0, [batch], 1.0 - op.range, 1.0 + op.range)
        return _linear(scale, 0 * scale, 0 * scale, scale)

    def _translation(self, op, batch, seed):
        tx = _uniform(seed, 0, [batch], -op.fraction, op.fraction) * self.width
        ty = _uniform(seed, 1, [batch], -op.fraction, op.fraction) * self.height
        return _translate(tx, ty)

    def _shear(self, op, batch, seed):
        limit = op.degrees * math.pi / 180
        shear_x = tf.tan(_uniform(seed, 0, [batch], -limit, limit))
        shear_y = tf.tan(_uniform(seed, 1, [batch], -limit, limit))
        ones = tf.ones([batch])
        return _linear(ones, shear_x, 0 * ones, ones) @ _linear(ones, 0 * ones, shear_y, ones)

    def _crop(self, op, batch, boxes, seed):
        """Window of area `scale` and aspect `ratio` (of the image's), containing `boxes` if given,
        stretched to the whole image."""
        area = _uniform(seed, 0, [batch], *op.scale)
        log_ratio = _uniform(seed, 1, [batch], math.log(op.ratio[0]), math.log(op.ratio[1]))
        w = tf.minimum(tf.sqrt(area * tf.exp(log_ratio)), 1.0)
        h = tf.minimum(tf.sqrt(area / tf.exp(log_ratio)), 1.0)
        lo = tf.zeros([batch, 2])
        hi = tf.ones([batch, 2])
        if boxes is not None:  # the window must contain the box: grow it, limit its offset
            has = ~tf.math.is_nan(boxes[:, 0])
            b = tf.where(has[:, None], boxes, tf.constant([[1.0, 1.0, 0.0, 0.0]]))
            w = tf.maximum(w, b[:, 2] - b[:, 0])
            h = tf.maximum(h, b[:, 3] - b[:, 1])
            lo, hi = b[:, 2:], b[:, :2]
        size = tf.stack([w, h], 1)
        low = tf.maximum(0.0, lo - size)
        high = tf.maximum(low, tf.minimum(hi, 1.0 - size))
        offset = low + _uniform(seed, 2, [batch, 2]) * (high - low)
        centre = (offset + size / 2 - 0.5) * [self.width, self.height]
        zeros = tf.zeros([batch])
        return _linear(1 / w, zeros, zeros, 1 / h) @ _translate(-centre[:, 0], -centre[:, 1])

    def _move_box(self, op, batch, boxes, seed):
        """Scale by U(scale) about the box's centre, then move that centre to a uniform place
        where the scaled box fits in the frame (the frame's centre on an axis where it does not).
        Without a box, the whole image plays the box."""
        scale = _uniform(seed, 0, [batch], *op.scale)
        whole = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [batch, 1])
        if boxes is None:
            b = whole
        else:
            b = tf.where(tf.math.is_nan(boxes[:, :1]), whole, boxes)
        size = tf.constant([float(self.width), float(self.height)])
        centre = ((b[:, :2] + b[:, 2:]) / 2 - 0.5) * size  # (B, 2) pixels from the image centre
        half = (b[:, 2:] - b[:, :2]) / 2 * size * scale[:, None]
        room = tf.maximum(size / 2 - half, 0.0)  # where the scaled box's centre may go
        target = (_uniform(seed, 1, [batch, 2]) * 2 - 1) * room
        zeros = tf.zeros([batch])
        return (_translate(target[:, 0], target[:, 1]) @ _linear(scale, zeros, zeros, scale)
                @ _translate(-centre[:, 0], -centre[:, 1]))

    # ---- pixel ops ---------------------------------------------------------------------------
    def _applied(self, op, images, seed):
        """(B, 1, 1, 1) bool: which images this op changes."""
        return (_uniform(seed, 99, [tf.shape(images)[0]]) < op.probability)[:, None, None, None]

    def _contrast(self, op, images, boxes, seed):
        factor = _uniform(seed, 0, [tf.shape(images)[0], 1, 1, 1], 1 - op.factor, 1 + op.factor)
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        return tf.where(self._applied(op, images, seed), (images - mean) * factor + mean, images)

    def _brightness(self, op, images, boxes, seed):
        delta = _uniform(seed, 0, [tf.shape(images)[0], 1, 1, 1], -op.delta, op.delta) * 255
        return tf.where(self._applied(op, images, seed), images + delta, images)

    def _channel_shift(self, op, images, boxes, seed):
        shape = [tf.shape(images)[0], 1, 1, self.channels]
        shift = _uniform(seed, 0, shape, -op.intensity, op.intensity)
        return tf.where(self._applied(op, images, seed), images + shift, images)

    def _hue(self, op, images, boxes, seed):
        """Turn the hue: rotate chroma in YIQ space (linear, so one matmul per image)."""
        angle = _uniform(seed, 0, [tf.shape(images)[0]], -op.delta, op.delta) * 2 * math.pi
        cos, sin = tf.cos(angle), tf.sin(angle)
        one, zero = tf.ones_like(cos), tf.zeros_like(cos)
        rotation = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], 1),
                              [-1, 3, 3])
        matrix = tf.linalg.inv(_YIQ) @ rotation @ _YIQ  # (B, 3, 3), acting on column vectors
        turned = tf.einsum("bij,bhwj->bhwi", matrix, images)
        return tf.where(self._applied(op, images, seed), turned, images)

    def _saturation(self, op, images, boxes, seed):
        factor = _uniform(seed, 0, [tf.shape(images)[0], 1, 1, 1], 1 - op.factor, 1 + op.factor)
        grey = _grey(images)
        return tf.where(self._applied(op, images, seed), grey + (images - grey) * factor, images)

    def _grayscale(self, op, images, boxes, seed):
        grey = tf.broadcast_to(_grey(images), tf.shape(images))
        return tf.where(self._applied(op, images, seed), grey, images)

    def _noise(self, op, images, boxes, seed):
        noise = tf.random.stateless_normal(tf.shape(images), _fold(seed, 0)) * op.stddev
        return tf.where(self._applied(op, images, seed), images + noise, images)

    def _cutout(self, op, images, boxes, seed):
        """`count` patches of `size` x the image sides filled with `fill_value`. For detection, a
        patch hiding more than `max_box_cover` of the box is dropped."""
        batch = tf.shape(images)[0]
        half = op.size / 2
        centre = _uniform(seed, 0, [batch, op.count, 2])  # (x, y), normalised
        keep = _uniform(seed, 1, [batch, op.count]) < op.probability
        if boxes is not None:
            keep &= _patch_cover(centre, half, boxes) <= op.max_box_cover
        xs = (tf.range(self.width, dtype=tf.float32) + 0.5) / self.width
        ys = (tf.range(self.height, dtype=tf.float32) + 0.5) / self.height
        in_x = tf.abs(xs[None, None, :] - centre[..., :1]) < half  # (B, count, W)
        in_y = tf.abs(ys[None, None, :] - centre[..., 1:]) < half  # (B, count, H)
        hit = in_y[:, :, :, None] & in_x[:, :, None, :] & keep[:, :, None, None]
        mask = tf.reduce_any(hit, axis=1)[..., None]  # (B, H, W, 1)
        return tf.where(mask, tf.constant(op.fill_value, images.dtype), images)


_GEOMETRIC_OPS = {"flip": Augmenter._flip, "rotation": Augmenter._rotation,
                  "zoom": Augmenter._zoom, "translation": Augmenter._translation,
                  "shear": Augmenter._shear}
_PIXEL_OPS = {"contrast": Augmenter._contrast, "brightness": Augmenter._brightness,
              "channel_shift": Augmenter._channel_shift, "hue": Augmenter._hue,
              "saturation": Augmenter._saturation, "grayscale": Augmenter._grayscale,
              "noise": Augmenter._noise, "cutout": Augmenter._cutout}
_YIQ = tf.constant([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def transform_boxes(boxes: tf.Tensor, forward: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Boxes (B, 4) normalised xyxy moved by `forward` (B, 3, 3): the axis-aligned box around the
    4 moved corners, clipped to [0, 1]. NaN rows (no box) stay NaN."""
    x1, y1, x2, y2 = tf.unstack(boxes, axis=1)
    xs = tf.stack([x1, x2, x2, x1], 1) * width - width / 2  # (B, 4) corners, centred pixels
    ys = tf.stack([y1, y1, y2, y2], 1) * height - height / 2
    corners = tf.stack([xs, ys, tf.ones_like(xs)], 1)  # (B, 3, 4)
    moved = tf.matmul(forward, corners)
    mx = moved[:, 0] / width + 0.5
    my = moved[:, 1] / height + 0.5
    out = tf.stack([tf.reduce_min(mx, 1), tf.reduce_min(my, 1),
                    tf.reduce_max(mx, 1), tf.reduce_max(my, 1)], 1)
    out = tf.clip_by_value(out, 0.0, 1.0)
    return tf.where(tf.math.is_nan(boxes[:, :1]), boxes, out)


def _patch_cover(centre: tf.Tensor, half: float, boxes: tf.Tensor) -> tf.Tensor:
    """(B, count) fraction of each sample's box area under each square patch (0 without box)."""
    box = boxes[:, None, :]
    ix = tf.maximum(0.0, tf.minimum(centre[..., 0] + half, box[..., 2])
                    - tf.maximum(centre[..., 0] - half, box[..., 0]))
    iy = tf.maximum(0.0, tf.minimum(centre[..., 1] + half, box[..., 3])
                    - tf.maximum(centre[..., 1] - half, box[..., 1]))
    area = tf.maximum((box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1]), 1e-12)
    cover = ix * iy / area
    return tf.where(tf.math.is_nan(cover), tf.zeros_like(cover), cover)


def _grey(images: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(images * tf.constant(_LUMA), axis=-1, keepdims=True)


def _fold(seed: tf.Tensor, k: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, k)


def _uniform(seed: tf.Tensor, k: int, shape, low: float = 0.0, high: float = 1.0) -> tf.Tensor:
    """Uniform draws for the k-th parameter of an op (stateless: same seed, same values)."""
    return tf.random.stateless_uniform(shape, _fold(seed, k), minval=low, maxval=high)


def _linear(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) -> tf.Tensor:
    """(B, 3, 3) matrices [[a, b, 0], [c, d, 0], [0, 0, 1]] from (B,) entries."""
    zero, one = tf.zeros_like(a), tf.ones_like(a)
    return tf.reshape(tf.stack([a, b, zero, c, d, zero, zero, zero, one], 1), [-1, 3, 3])


def _translate(tx: tf.Tensor, ty: tf.Tensor) -> tf.Tensor:
    zero, one = tf.zeros_like(tx), tf.ones_like(tx)
    return tf.reshape(tf.stack([one, zero, tx, zero, one, ty, zero, zero, one], 1), [-1, 3, 3])


def augment_batches(ds: tf.data.Dataset, augmenter: Augmenter, seed: int) -> tf.data.Dataset:
    """Map `augmenter` over a dataset of (images, targets) batches (targets untouched): for
    pipelines other than `cache_dataset`, e.g. `image_dataset_from_directory`. Seeded per batch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def apply(batch, rnd):
        images, targets = batch
        images, _ = augmenter(images, None, tf.stack([rnd, tf.constant(seed, tf.int64)]))
        return images, targets

    return tf.data.Dataset.zip(ds, seeds).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
