"""Losses: each against a value computed by hand on a tiny tensor, and Keras built-ins where they
exist; the builder's choices and errors; serialization."""

import math

import keras
import numpy as np
import pytest

from tinyvision.config import TrainConfig
from tinyvision.errors import ConfigError
from tinyvision.training.losses import (BinaryLoss, BoxLoss, ClassWeighted, MacroDoubleSoftF1,
                                     build_loss, build_loss_weights, resolve_loss_name)

Y = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
P = np.array([[0.8, 0.3], [0.4, 0.6], [0.9, 0.2]], np.float32)


def value(loss, y, p) -> float:
    return float(loss(np.asarray(y, np.float32), np.asarray(p, np.float32)))


# ---- class losses ----------------------------------------------------------------------------
def test_binary_loss_by_hand_and_equal_to_keras_bce():
    by_hand = -(math.log(0.8) + math.log(0.7) + math.log(0.6) + math.log(0.6)
                + math.log(0.9) + math.log(0.2)) / 6
    assert value(BinaryLoss(), Y, P) == pytest.approx(by_hand, rel=1e-5)
    for smoothing in (0.0, 0.1):
        keras_bce = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
        assert value(BinaryLoss(label_smoothing=smoothing), Y, P) == pytest.approx(
            value(keras_bce, Y, P), rel=1e-6)


def test_binary_focal_by_hand_and_equal_to_keras_focal():
    y, p = [[1.0, 0.0]], [[0.8, 0.3]]
    # positive: alpha (1 - p)^2 (-log p); negative: (1 - alpha) p^2 (-log(1 - p))
    by_hand = (0.25 * 0.2 ** 2 * -math.log(0.8) + 0.75 * 0.3 ** 2 * -math.log(0.7)) / 2
    assert value(BinaryLoss(gamma=2.0, alpha=0.25), y, p) == pytest.approx(by_hand, rel=1e-5)
    keras_focal = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25,
                                                       gamma=2.0)
    assert value(BinaryLoss(gamma=2.0, alpha=0.25), Y, P) == pytest.approx(
        value(keras_focal, Y, P), rel=1e-5)


def test_binary_loss_positive_weight_per_label():
    y, p = [[1.0, 0.0], [0.0, 1.0]], [[0.8, 0.3], [0.4, 0.6]]
    # label 0 positives weigh 2, label 1 positives weigh 1
    by_hand = ((2 * -math.log(0.8) + -math.log(0.7)) / 2 + (-math.log(0.6) + -math.log(0.6)) / 2) / 2
    assert value(BinaryLoss(pos_weight=[2.0, 1.0]), y, p) == pytest.approx(by_hand, rel=1e-5)


def test_categorical_cross_entropy_with_label_smoothing_by_hand():
    train = TrainConfig(label_smoothing=0.1)
    loss = build_loss(train, "multiclass", 3)
    # smoothed target of 2 classes: [0.95, 0.05]
    by_hand = -(0.95 * math.log(0.7) + 0.05 * math.log(0.3))
    assert value(loss, [[1.0, 0.0]], [[0.7, 0.3]]) == pytest.approx(by_hand, rel=1e-5)


def test_categorical_focal_by_hand():
    loss = build_loss(TrainConfig(loss="focal", label_smoothing=0.0, focal_gamma=2.0), "multiclass", 3)
    by_hand = (1 - 0.7) ** 2 * -math.log(0.7)  # alpha None -> 1
    assert value(loss, [[1.0, 0.0]], [[0.7, 0.3]]) == pytest.approx(by_hand, rel=1e-5)


def test_class_weighted_multiclass_weights_each_sample_by_its_class():
    loss = ClassWeighted(keras.losses.CategoricalCrossentropy(), [1.0, 3.0])
    by_hand = (-math.log(0.7) + 3 * -math.log(0.6)) / 2
    assert value(loss, [[1, 0], [0, 1]], [[0.7, 0.3], [0.4, 0.6]]) == pytest.approx(by_hand,
                                                                                 rel=1e-5)


def test_macro_double_soft_f1_by_hand():
    # one label, y = [1, 0], p = [0.8, 0.4]: tp 0.8, fp 0.4, fn 0.2, tn 0.6
    f1_pos, f1_neg = 1.6 / (1.6 + 0.2 + 0.4), 1.2 / (1.2 + 0.2 + 0.4)  # 2tp/(2tp+fn+fp), 2tn/(..)
    assert value(MacroDoubleSoftF1(), [[1.0], [0.0]], [[0.8], [0.4]]) == pytest.approx(
        1 - 0.5 * (f1_pos + f1_neg), rel=1e-5)


def test_macro_double_soft_f1_averages_labels():
    def one(y, p):
        tp, fp = (p * y).sum(), (p * (1 - y)).sum()
        fn, tn = ((1 - p) * y).sum(), ((1 - p) * (1 - y)).sum()
        return 1 - 0.5 * (2 * tp / (2 * tp + fn + fp) + 2 * tn / (2 * tn + fn + fp))

    expected = np.mean([one(Y[:, j], P[:, j]) for j in range(2)])
    assert value(MacroDoubleSoftF1(), Y, P) == pytest.approx(expected, rel=1e-5)
    assert value(MacroDoubleSoftF1(), Y, Y) == pytest.approx(0.0, abs=1e-6)  # perfect


# ---- box losses ------------------------------------------------------------------------------
BOX_T = [[0.1, 0.1, 0.5, 0.5]]
BOX_P = [[0.2, 0.1, 0.5, 0.3]]


def test_box_l1_and_smooth_l1_by_hand():
    assert value(BoxLoss("l1"), BOX_T, BOX_P) == pytest.approx((0.1 + 0.2) / 4, rel=1e-5)
    # beta 0.1: |d| = 0.1 and 0.2 are both linear (|d| - 0.05)
    assert value(BoxLoss("smooth_l1"), BOX_T, BOX_P) == pytest.approx((0.05 + 0.15) / 4,
                                                                       rel=1e-4)
    quadratic = 0.5 * 0.05 ** 2 / 0.1 / 4  # |d| = 0.05 < beta
    assert value(BoxLoss("smooth_l1"), BOX_T, [[0.15, 0.1, 0.5, 0.5]]) == pytest.approx(
        quadratic, rel=1e-4)


def test_giou_by_hand():
    t, p = [[0.0, 0.0, 0.5, 0.5]], [[0.25, 0.25, 0.75, 0.75]]
    inter, union, hull = 0.0625, 0.4375, 0.5625
    expected = 1 - (inter / union - (hull - union) / hull)
    assert value(BoxLoss("giou"), t, p) == pytest.approx(expected, rel=1e-5)
    assert value(BoxLoss("giou"), t, t) == pytest.approx(0.0, abs=1e-5)
    # disjoint boxes: IoU 0, the hull term still gives a loss above 1 (and a gradient)
    far = [[0.6, 0.6, 0.9, 0.9]]
    assert value(BoxLoss("giou"), t, far) == pytest.approx(1 + (0.81 - 0.25 - 0.09) / 0.81,
                                                           rel=1e-5)
    # a prediction with swapped corners is the same box
    assert value(BoxLoss("giou"), t, [[0.75, 0.75, 0.25, 0.25]]) == pytest.approx(expected,
                                                                                 rel=1e-5)


def test_box_rows_without_a_target_box_add_nothing_and_keep_gradients_finite():
    import tensorflow as tf

    t = tf.constant([[0.1, 0.1, 0.5, 0.5], [np.nan] * 4])
    p = tf.Variable([[0.2, 0.1, 0.5, 0.3], [0.3, 0.3, 0.6, 0.6]])
    for kind in ("l1", "smooth_l1", "giou"):
        with tf.GradientTape() as tape:
            loss = BoxLoss(kind)(t, p)
        grad = tape.gradient(loss, p).numpy()
        assert np.isfinite(float(loss)) and np.isfinite(grad).all()
        assert np.all(grad[1] == 0)
        single = value(BoxLoss(kind), BOX_T, BOX_P)
        assert float(loss) == pytest.approx(single / 2, rel=1e-5)  # mean over the batch of 2


# ---- builder ---------------------------------------------------------------------------------
def test_auto_loss_per_task():
    assert resolve_loss_name(TrainConfig(), "multiclass") == "cross_entropy"
    assert resolve_loss_name(TrainConfig(), "multilabel") == "bce"
    assert resolve_loss_name(TrainConfig(), "detection") == "cross_entropy"
    assert isinstance(build_loss(TrainConfig(), "multiclass", 3), keras.losses.CategoricalCrossentropy)
    assert isinstance(build_loss(TrainConfig(), "multilabel", 3), keras.losses.BinaryCrossentropy)


def test_cross_entropy_refused_for_multilabel():
    with pytest.raises(ConfigError, match="multi-label; use bce, focal or soft_f1"):
        build_loss(TrainConfig(loss="cross_entropy"), "multilabel", 3)


def test_soft_f1_with_multilabel_class_weights_refused():
    with pytest.raises(ConfigError, match="class_weights=none"):
        build_loss(TrainConfig(loss="soft_f1"), "multilabel", 2, np.array([1.0, 2.0]))


def test_class_weights_go_into_the_loss():
    weights = np.array([1.0, 3.0], np.float32)
    multiclass = build_loss(TrainConfig(), "multiclass", len(weights), weights)
    assert isinstance(multiclass, ClassWeighted) and multiclass.class_weight == [1.0, 3.0]
    multilabel = build_loss(TrainConfig(), "multilabel", len(weights), weights)
    assert isinstance(multilabel, BinaryLoss) and multilabel.pos_weight == [1.0, 3.0]


def test_detection_loss_is_class_plus_weighted_box():
    train = TrainConfig(box_loss="smooth_l1", box_loss_weight=5.0)
    class_loss, box_loss = build_loss(train, "detection", 3)
    assert isinstance(class_loss, keras.losses.CategoricalCrossentropy)
    assert box_loss.kind == "smooth_l1"
    assert build_loss_weights(train, "detection", 3) == [1.0, 5.0]
    assert build_loss_weights(train, "multiclass", 3) is None
    # one class: the box alone (no softmax over one value), so one loss and no weights
    box_only = build_loss(train, "detection", 1)
    assert isinstance(box_only, BoxLoss) and box_only.kind == "smooth_l1"
    assert build_loss_weights(train, "detection", 1) is None


def test_detection_model_trains_with_the_combined_loss():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = [keras.layers.Dense(2, activation="softmax", name="head_class_output")(hidden),
               keras.layers.Dense(4, activation="sigmoid", name="head_box_output")(hidden)]
    model = keras.Model(inputs, outputs)
    train = TrainConfig(box_loss_weight=2.0)
    model.compile("sgd", loss=build_loss(train, "detection", 3),
                  loss_weights=build_loss_weights(train, "detection", 3))
    x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    y = (np.eye(2, dtype=np.float32)[np.arange(8) % 2],
         np.tile(np.array([[0.1, 0.2, 0.6, 0.7]], np.float32), (8, 1)))
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["loss"] == pytest.approx(
        logs["head_class_output_loss"] + 2.0 * logs["head_box_output_loss"], rel=1e-4)


@pytest.mark.parametrize("loss", [BinaryLoss(2.0, 0.25, [1.0, 2.0], 0.1), MacroDoubleSoftF1([1.0, 2.0]),
                                  ClassWeighted(keras.losses.BinaryCrossentropy(), [2.0, 0.5]),
                                  BoxLoss("giou")])
def test_losses_survive_serialization(loss):
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    y, p = (BOX_T, BOX_P) if isinstance(loss, BoxLoss) else (Y, P)
    assert type(again) is type(loss)
    assert value(again, y, p) == pytest.approx(value(loss, y, p), rel=1e-6)


def test_model_compiled_with_a_custom_loss_saves_and_loads(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile("adam", loss=ClassWeighted(keras.losses.CategoricalCrossentropy(), [1.0, 4.0]))
    model.fit(np.ones((4, 3), np.float32), np.eye(2, dtype=np.float32)[[0, 1, 0, 1]], verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.loss.class_weight == [1.0, 4.0]


def test_cell_loss_by_hand():
    """2x2 cells, true box (0, 0, 0.5, 0.5): only the top-left cell's centre (0.25, 0.25) lies in
    it (and it holds the box's centre). Its box takes the GIoU loss; every `where` logit takes
    binary cross-entropy against positive / not. A NaN box adds nothing."""
    from tinyvision.training.losses import CellLoss

    loss = CellLoss(2, 2)
    truth = np.array([[0.0, 0.0, 0.5, 0.5], [np.nan] * 4], np.float32)
    cells = np.zeros((2, 4, 5), np.float32)
    cells[:, :, 4] = -10.0
    cells[:, 0] = [0.0, 0.0, 0.25, 0.5, 10.0]  # IoU 0.5 with the truth, hull = union: GIoU 0.5
    cells[:, 1, :4] = [0.9, 0.9, 1.0, 1.0]  # a negative cell's box is not judged
    bce = np.log1p(np.exp(-10.0))
    values = keras.ops.convert_to_numpy(loss.call(truth, cells))
    np.testing.assert_allclose(values, [0.5 + bce, 0.0], rtol=1e-4)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (again.height, again.width) == (2, 2)
