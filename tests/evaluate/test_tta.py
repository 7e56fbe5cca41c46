"""Test-time augmentation: flips, box un-flipping, and averaging computed by hand."""

import numpy as np
import pytest

from tinyvision.errors import ConfigError
from tinyvision.evaluate.tta import (check_flips, flip_images, keras_scorer, tta_outputs,
                                     unflip_boxes)


def _images(n=4, h=6, w=5, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c)).astype(np.uint8)


def _position_scorer(images: np.ndarray) -> np.ndarray:
    """Softmax over 2 classes of (left half - right half) brightness: NOT flip-invariant."""
    x = images.astype(np.float64)
    half = x.shape[2] // 2
    diff = (x[:, :, :half].mean(axis=(1, 2, 3)) - x[:, :, -half:].mean(axis=(1, 2, 3))) / 50
    logits = np.stack([diff, -diff], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sum_scorer(images: np.ndarray) -> np.ndarray:
    """Integer channel sums (exact, hence flip-invariant by construction), as fractions."""
    sums = images.astype(np.int64).sum(axis=(1, 2))
    return sums / sums.sum(axis=1, keepdims=True)


def test_flips_mirror_width_and_height():
    images = _images()
    np.testing.assert_array_equal(flip_images(images, "horizontal"), images[:, :, ::-1])
    np.testing.assert_array_equal(flip_images(images, "vertical"), images[:, ::-1])


def test_flip_invariant_scorer_gives_identical_scores():
    images = _images()
    plain = _sum_scorer(images)
    np.testing.assert_array_equal(tta_outputs(_sum_scorer, images), plain)
    np.testing.assert_array_equal(tta_outputs(_sum_scorer, images, ("horizontal", "vertical")),
                                  plain)


def test_tta_is_the_mean_of_the_passes_computed_by_hand():
    images = _images(seed=3)
    by_hand = (_position_scorer(images) + _position_scorer(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(tta_outputs(_position_scorer, images), by_hand, rtol=0, atol=1e-15)
    three = (_position_scorer(images) + _position_scorer(images[:, :, ::-1])
             + _position_scorer(images[:, ::-1])) / 3
    np.testing.assert_allclose(tta_outputs(_position_scorer, images, ("horizontal", "vertical")),
                               three, rtol=0, atol=1e-15)
    assert not np.allclose(by_hand, _position_scorer(images))  # the flip did change the scores


def test_no_flips_is_the_plain_scorer():
    images = _images()
    np.testing.assert_array_equal(tta_outputs(_position_scorer, images, ()),
                                  _position_scorer(images))


def test_boxes_are_flipped_back_before_averaging():
    box = np.array([[0.1, 0.2, 0.4, 0.9]], np.float32)
    np.testing.assert_allclose(unflip_boxes(box, "horizontal"), [[0.6, 0.2, 0.9, 0.9]], atol=1e-6)
    np.testing.assert_allclose(unflip_boxes(box, "vertical"), [[0.1, 0.1, 0.4, 0.8]], atol=1e-6)

    def box_scorer(images):
        """A box head that finds the brightest column: it follows the flip."""
        column = images.astype(np.float64).mean(axis=(1, 3)).argmax(axis=1)
        x = (column + 0.5) / images.shape[2]
        boxes = np.stack([x - 0.05, np.full_like(x, 0.2), x + 0.05, np.full_like(x, 0.8)], 1)
        return np.full((len(images), 2), 0.5), boxes.astype(np.float32)

    images = np.zeros((1, 4, 10, 3), np.uint8)
    images[0, :, 2] = 255  # bright column 2: box centre 0.25 in both the plain and flipped pass
    scores, boxes = tta_outputs(box_scorer, images)
    np.testing.assert_allclose(boxes, [[0.2, 0.2, 0.3, 0.8]], atol=1e-6)
    np.testing.assert_array_equal(scores, [[0.5, 0.5]])


def test_unknown_flip_names_the_close_match():
    with pytest.raises(ConfigError, match="Did you mean 'horizontal'"):
        check_flips(["horizontl"])
    with pytest.raises(ConfigError, match="must not repeat"):
        check_flips(["vertical", "vertical"])


def test_keras_model_invariant_by_construction_and_by_hand_mean():
    import keras

    inputs = keras.Input((6, 5, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    invariant = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    images = _images(n=3)
    plain = keras_scorer(invariant)(images)
    np.testing.assert_allclose(tta_outputs(keras_scorer(invariant), images), plain, rtol=1e-6,
                               atol=1e-7)

    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    positional = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(flat))
    score = keras_scorer(positional)
    by_hand = (positional.predict(images.astype(np.float32), verbose=0)
               + positional.predict(images[:, :, ::-1].astype(np.float32), verbose=0)) / 2
    np.testing.assert_allclose(tta_outputs(score, images), by_hand, rtol=1e-6, atol=1e-7)
