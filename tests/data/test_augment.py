"""Augmentation: config schema and errors, boxes moved with the image, pixel ops, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tinyvision.config import apply_override, load_config, validate_config
from tinyvision.data.augment import Augmenter, parse_augment, transform_boxes
from tinyvision.errors import ConfigError

H, W = 48, 64
BOX = np.array([16 / W, 12 / H, 40 / W, 36 / H], np.float32)  # on pixel edges: exact reference
BLACK_FILL = {"fill_mode": "constant", "fill_value": 0}
GEOMETRIC = [
    {"op": "flip", "mode": "horizontal_and_vertical"},
    {"op": "rotation", "degrees": 40},
    {"op": "zoom", "range": 0.4},
    {"op": "translation", "fraction": 0.3},
    {"op": "shear", "degrees": 25},
    {"op": "random_crop", "scale": [0.3, 0.6]},
    {"op": "move_box", "scale": [0.5, 1.5]},
]
EXAMPLE = GEOMETRIC[:5] + [
    {"op": "contrast", "factor": 0.2}, {"op": "brightness", "delta": 0.2},
    {"op": "hue", "delta": 0.05}, {"op": "saturation", "factor": 0.3},
    {"op": "channel_shift", "intensity": 20}, {"op": "random_crop", "scale": [0.8, 1.0]},
    {"op": "cutout", "size": 0.2, "count": 1}, {"op": "noise", "stddev": 5},
    {"op": "grayscale", "probability": 0.1}, {"op": "move_box", "scale": [0.6, 1.2]},
]


def _config_error(augment: list) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config({"data": {"source": {"format": "folder", "root": "x"}},
                         "train": {"augment": augment}})
    return str(info.value)


def _box_batch(n: int = 8, channels: int = 3) -> tuple[tf.Tensor, tf.Tensor]:
    """A white rectangle at BOX on black, `n` times."""
    images = np.zeros((n, H, W, channels), np.float32)
    x1, y1, x2, y2 = np.round(BOX * [W, H, W, H]).astype(int)
    images[:, y1:y2, x1:x2] = 255.0
    return tf.constant(images), tf.constant(np.tile(BOX, (n, 1)))


def _white_box(image: np.ndarray) -> np.ndarray:
    """Pixel xyxy (edges) around the bright pixels of one image."""
    ys, xs = np.nonzero(image[..., 0] > 200)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


# ---- config ----------------------------------------------------------------------------------
def test_every_documented_op_parses():
    ops = parse_augment(EXAMPLE)
    assert [o.op for o in ops] == [e["op"] for e in EXAMPLE]
    assert ops[0].probability == 0.5  # flip: each axis flipped with probability 0.5


def test_unknown_op_gets_close_matches():
    assert "unknown op 'rotate'. Did you mean 'rotation'" in _config_error([{"op": "rotate"}])


def test_unknown_parameter_names_the_op():
    message = _config_error([{"op": "zoom", "rang": 0.1}])
    assert "(op 'zoom'): unknown parameter 'rang'. Did you mean 'range'?" in message


def test_flip_mode_typo_is_refused():
    message = _config_error([{"op": "flip", "mode": "horizonal"}])
    assert "train.augment.0.flip.mode" in message and "'horizontal_and_vertical'" in message


@pytest.mark.parametrize("entry, match", [
    ({"op": "rotation"}, r"rotation.degrees` is required"),
    ({"op": "rotation", "degrees": 500}, r"rotation.degrees"),
    ({"op": "random_crop", "scale": [0.9, 0.5]}, r"0 < low <= high"),
    ("flip", r"mapping with an `op` key"),
])
def test_invalid_parameters_are_refused(entry, match):
    assert pytest.raises(ConfigError, parse_augment, [entry]).match(match)


def test_geometric_ops_share_one_fill():
    message = _config_error([{"op": "rotation", "degrees": 5, "fill_mode": "constant"},
                             {"op": "zoom", "range": 0.1, "fill_mode": "reflect"}])
    assert "share one fill_mode" in message and "rotation.fill_mode='constant'" in message


def test_rgb_only_ops_refuse_grayscale_images():
    with pytest.raises(ConfigError, match=r"augment\[1\] \(op 'hue'\) needs RGB"):
        Augmenter([{"op": "flip"}, {"op": "hue", "delta": 0.1}], (H, W, 1))


# ---- boxes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ops", [[op] for op in GEOMETRIC] + [GEOMETRIC[:5]],
                         ids=[op["op"] for op in GEOMETRIC] + ["combined"])
def test_geometric_ops_move_the_box_with_the_image(ops):
    images, boxes = _box_batch()
    augmenter = Augmenter([{**op, **BLACK_FILL} for op in ops], (H, W, 3), detection=True)
    out, moved = augmenter(images, boxes, tf.constant([7, 3]))
    moved = moved.numpy()
    assert not np.allclose(moved, boxes.numpy())  # the op did move the boxes
    for image, box in zip(out.numpy(), moved):
        np.testing.assert_allclose(_white_box(image), box * [W, H, W, H], atol=1.6)


def test_boxes_are_clipped_and_missing_boxes_stay_missing():
    images, boxes = _box_batch(16)
    boxes = tf.tensor_scatter_nd_update(boxes, [[0]], [[np.nan] * 4])
    augmenter = Augmenter([{"op": "translation", "fraction": 0.5}], (H, W, 3), detection=True)
    _, moved = augmenter(images, boxes, tf.constant([1, 2]))
    moved = moved.numpy()
    assert np.isnan(moved[0]).all()
    assert (moved[1:] >= 0).all() and (moved[1:] <= 1).all()
    assert ((moved[1:] == 0) | (moved[1:] == 1)).any()  # some box did leave the frame


def test_random_crop_keeps_the_whole_box_inside_the_window():
    images, boxes = _box_batch(32)
    augmenter = Augmenter([{"op": "rotation", "degrees": 10},
                           {"op": "random_crop", "scale": [0.05, 0.2]}], (H, W, 3), True)
    forward = augmenter.forward_matrices(32, boxes, tf.constant([5, 5]))
    unclipped = transform_boxes(boxes, forward, H, W)  # clipping would hide a cut box
    x1, y1, x2, y2 = BOX * [W, H, W, H] - [W / 2, H / 2, W / 2, H / 2]
    corners = tf.constant([[x1, x2, x2, x1], [y1, y1, y2, y2], [1, 1, 1, 1]], tf.float32)
    moved = (forward @ corners).numpy()
    assert (moved[:, 0] / W + 0.5 >= -1e-4).all() and (moved[:, 0] / W + 0.5 <= 1 + 1e-4).all()
    assert (moved[:, 1] / H + 0.5 >= -1e-4).all() and (moved[:, 1] / H + 0.5 <= 1 + 1e-4).all()
    assert (unclipped.numpy()[:, 2] - unclipped.numpy()[:, 0] > 0.5).all()  # small windows zoom in


def test_move_box_scales_the_box_and_puts_it_anywhere_inside_the_frame():
    """The box is scaled by a factor in `scale` and lands at uniformly spread places, always
    inside the frame where it fits: the usual place of boxes stops being a good answer."""
    images, boxes = _box_batch(256)
    augmenter = Augmenter([{"op": "move_box", "scale": [0.5, 1.5]}], (H, W, 3), True)
    forward = augmenter.forward_matrices(256, boxes, tf.constant([4, 2]))
    moved = transform_boxes(boxes, forward, H, W).numpy()
    ratio = (moved[:, 2] - moved[:, 0]) / (BOX[2] - BOX[0])
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 1.5 + 1e-4 and ratio.std() > 0.2
    np.testing.assert_allclose((moved[:, 3] - moved[:, 1]) / (BOX[3] - BOX[1]), ratio, atol=1e-4)
    assert (moved >= -1e-6).all() and (moved <= 1 + 1e-6).all()
    centres = (moved[:, :2] + moved[:, 2:]) / 2
    # the original box sits at (0.44, 0.5); moved centres spread over most of the frame
    assert centres[:, 0].min() < 0.25 and centres[:, 0].max() > 0.75
    assert centres[:, 1].min() < 0.3 and centres[:, 1].max() > 0.7


def test_cutout_spares_the_box_in_detection():
    images, boxes = _box_batch(16)
    augmenter = Augmenter([{"op": "cutout", "size": 0.5, "count": 4, "fill_value": 0,
                            "max_box_cover": 0.0}], (H, W, 3), detection=True)
    out, moved = augmenter(images, boxes, tf.constant([0, 1]))
    x1, y1, x2, y2 = np.round(BOX * [W, H, W, H]).astype(int)
    assert (out.numpy()[:, y1:y2, x1:x2] == 255).all()
    np.testing.assert_array_equal(moved, boxes)
    plain = Augmenter([{"op": "cutout", "size": 0.5, "count": 4, "fill_value": 0}], (H, W, 3))
    assert (plain(images, None, tf.constant([0, 1]))[0].numpy()[:, y1:y2, x1:x2] == 0).any()


# ---- pixel ops, grayscale, determinism -------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_runs_on_rgb_and_grayscale(channels):
    ops = [e for e in EXAMPLE if channels == 3 or e["op"] not in ("hue", "saturation", "grayscale")]
    images = tf.random.stateless_uniform((4, H, W, channels), [1, 1], 0, 255)
    out, _ = Augmenter(ops, (H, W, channels))(images, None, tf.constant([3, 4]))
    assert out.shape == images.shape
    assert out.numpy().min() >= 0 and out.numpy().max() <= 255
    assert not np.allclose(out, images)


def test_hue_and_saturation_keep_grey_grey():
    grey = tf.fill((2, 8, 8, 3), 90.0)
    for op in ({"op": "hue", "delta": 0.4}, {"op": "saturation", "factor": 0.9}):
        out, _ = Augmenter([op], (8, 8, 3))(grey, None, tf.constant([1, 1]))
        np.testing.assert_allclose(out, grey, atol=1e-3)


def test_brightness_shifts_every_pixel_of_an_image_by_one_amount():
    images = tf.fill((6, 8, 8, 1), 100.0)
    out, _ = Augmenter([{"op": "brightness", "delta": 0.2}], (8, 8, 1))(images, None,
                                                                         tf.constant([2, 2]))
    out = out.numpy()
    assert np.allclose(out, out[:, :1, :1]) and np.abs(out - 100).max() <= 0.2 * 255 + 1e-3
    assert len(np.unique(out[:, 0, 0])) == 6


def test_probability_leaves_most_images_unchanged():
    images = tf.random.stateless_uniform((16, H, W, 3), [1, 2], 0, 255)
    ops = [{"op": "rotation", "degrees": 30, "probability": 1e-6},
           {"op": "contrast", "factor": 0.5, "probability": 1e-6}]
    out, _ = Augmenter(ops, (H, W, 3))(images, None, tf.constant([9, 9]))
    np.testing.assert_allclose(out, images, atol=1e-3)


def test_same_seed_same_batch_other_seed_other_batch():
    images = tf.random.stateless_uniform((4, H, W, 3), [1, 3], 0, 255)
    augmenter = Augmenter(EXAMPLE, (H, W, 3))
    first = augmenter(images, None, tf.constant([5, 6]))[0]
    np.testing.assert_array_equal(first, augmenter(images, None, tf.constant([5, 6]))[0])
    assert not np.allclose(first, augmenter(images, None, tf.constant([5, 7]))[0])


def test_config_round_trip_and_models_feed_the_augmenter(tmp_path):
    raw = {"data": {"source": {"format": "folder", "root": str(tmp_path)}}}
    apply_override(raw, "train.augment=[{op: flip}, {op: random_crop, scale: [0.5, 0.9]}]")
    cfg = validate_config(raw)
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again.train.augment == cfg.train.augment
    augmenter = Augmenter(again.train.augment, (H, W, 3))
    assert [op.op for op in augmenter.geometric] == ["flip", "random_crop"]
