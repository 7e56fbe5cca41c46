"""Schedules, optimizers and discriminative learning rates."""

import keras
import numpy as np
import pytest

from tinyvision.config import ScheduleConfig, TrainConfig, validate_config
from tinyvision.errors import ConfigError
from tinyvision.training.optimizers import (ScaledAdamW, ScaledSGD, build_optimizer, layer_groups,
                                         lr_multiplier_map, make_optimizer)
from tinyvision.training.schedules import OneCycle, Warmup, build_schedule, schedule_callbacks


def rate(schedule, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


# ---- schedules -------------------------------------------------------------------------------
def test_default_cosine_is_the_former_trainer_schedule():
    lr, steps, epochs, warmup_epochs = 1e-3, 10, 5, 1.0
    before = keras.optimizers.schedules.CosineDecay(  # the trainer's schedule before this change
        initial_learning_rate=lr * 0.01, decay_steps=40, alpha=0.01, warmup_target=lr,
        warmup_steps=10)
    now = build_schedule(ScheduleConfig(), lr, steps, epochs, warmup_epochs)
    for step in (0, 5, 10, 25, 49, 50):
        assert rate(now, step) == pytest.approx(rate(before, step), rel=1e-6)


def test_constant_with_and_without_warmup():
    assert build_schedule(ScheduleConfig(name="constant"), 0.1, 10, 3, 0.0) == 0.1
    warm = build_schedule(ScheduleConfig(name="constant", warmup_epochs=1), 0.1, 10, 3)
    assert isinstance(warm, Warmup)
    assert rate(warm, 0) == pytest.approx(0.001)
    assert rate(warm, 5) == pytest.approx(0.001 + 0.099 * 0.5)
    assert rate(warm, 10) == pytest.approx(0.1) and rate(warm, 29) == pytest.approx(0.1)


def test_step_decay():
    schedule = build_schedule(ScheduleConfig(name="step", step_epochs=2, factor=0.5), 0.1, 10, 6)
    assert [rate(schedule, s) for s in (0, 19, 20, 39, 40)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025])
    warm = build_schedule(ScheduleConfig(name="step", step_epochs=2, factor=0.5,
                                         warmup_epochs=1), 0.1, 10, 6)
    assert rate(warm, 0) == pytest.approx(0.001)
    assert rate(warm, 10) == pytest.approx(0.1) and rate(warm, 30) == pytest.approx(0.05)


def test_one_cycle_rises_then_falls():
    schedule = build_schedule(ScheduleConfig(name="one_cycle", pct_start=0.25), 0.1, 10, 4)
    assert isinstance(schedule, OneCycle)
    assert rate(schedule, 0) == pytest.approx(0.1 / 25)
    assert rate(schedule, 10) == pytest.approx(0.1)  # the peak at 25% of 40 steps
    assert rate(schedule, 5) == pytest.approx((0.1 + 0.004) / 2, rel=1e-5)  # cosine midpoint
    assert rate(schedule, 40) == pytest.approx(0.1 / 25 / 1e4, rel=1e-4)
    values = [rate(schedule, s) for s in range(41)]
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) < 0)


def test_plateau_is_a_constant_rate_and_a_callback():
    schedule = ScheduleConfig(name="plateau", factor=0.5, patience=3)
    assert build_schedule(schedule, 0.01, 10, 5, 1.0) == 0.01
    (callback,) = schedule_callbacks(schedule, "val_accuracy")
    assert isinstance(callback, keras.callbacks.ReduceLROnPlateau)
    assert (callback.monitor, callback.factor, callback.patience, callback.mode) == (
        "val_accuracy", 0.5, 3, "max")
    assert schedule_callbacks(ScheduleConfig(), "val_loss") == []


def _plateau_rates(schedule, values, restore=None):
    """Learning rates after each epoch's monitor value, and the callback's final counters."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    (callback,) = schedule_callbacks(schedule, "val_loss", restore=restore)
    callback.set_model(model)
    if restore:
        model.optimizer.learning_rate = restore["rate"]
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"val_loss": value})
        rates.append(float(model.optimizer.learning_rate))
    return rates, {**callback.state(), "rate": rates[-1] if rates else 0.1}


def test_plateau_counters_survive_a_resume():
    """Split a stage in two at every epoch (as a killed and resumed run is): the rates must be
    those of the unsplit stage, which needs the callback's wait/best/cooldown restored."""
    schedule = ScheduleConfig(name="plateau", factor=0.5, patience=2, min_learning_rate=1e-4)
    values = [1.0, 0.9, 0.95, 0.93, 0.8, 0.85, 0.86, 0.87, 0.7, 0.71]
    whole, _ = _plateau_rates(schedule, values)
    assert whole == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025])
    for cut in range(1, len(values)):
        first, state = _plateau_rates(schedule, values[:cut])
        second, _ = _plateau_rates(schedule, values[cut:], restore=state)
        assert first + second == pytest.approx(whole), cut
    _, state = _plateau_rates(schedule, values[:3])
    fresh, _ = _plateau_rates(schedule, values[3:])  # what resuming did before: counters lost
    assert [0.1, 0.1, 0.1] + fresh != pytest.approx(whole)


def test_schedule_string_shorthand_and_errors():
    raw = {"data": {"source": {"format": "folder", "root": "x"}},
           "train": {"head": {"schedule": "one_cycle"}, "fine_tune": {"schedule": {"name": "step"}}}}
    cfg = validate_config(raw)
    assert cfg.train.head.schedule.name == "one_cycle" and cfg.train.fine_tune.schedule.name == "step"
    raw["train"]["head"]["schedule"] = "cosin"
    with pytest.raises(ConfigError, match="train.head.schedule.name"):
        validate_config(raw)


@pytest.mark.parametrize("schedule", [Warmup(keras.optimizers.schedules.ExponentialDecay(
    0.1, 5, 0.5, staircase=True), 3, 0.001, 0.1), Warmup(0.1, 3, 0.001, 0.1), OneCycle(0.1, 40)])
def test_schedules_survive_serialization(schedule):
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    for step in (0, 2, 3, 9, 30):
        assert rate(again, step) == pytest.approx(rate(schedule, step))


# ---- optimizers ------------------------------------------------------------------------------
def test_optimizer_choices():
    sgd = make_optimizer(TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True), 0.1)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.8 and sgd.nesterov
    rms = make_optimizer(TrainConfig(optimizer="rmsprop", momentum=0.5), 0.1)
    assert isinstance(rms, keras.optimizers.RMSprop) and rms.momentum == 0.5
    adamw = make_optimizer(TrainConfig(), 0.1)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 1e-4
    adam = make_optimizer(TrainConfig(optimizer="adam"), 0.1)
    assert type(adam) is keras.optimizers.Adam and adam.weight_decay is None


def _three_group_model(seed: int = 0) -> keras.Model:
    """input(0) -> early_dense(1) -> late_dense(2) -> head_logits(3)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, activation="tanh", name="early_dense")(inputs)
    x = keras.layers.Dense(5, activation="tanh", name="late_dense")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head_logits")(x))


def _cfg(**train):
    raw = {"data": {"source": {"format": "folder", "root": "x"}},
           "train": {"fine_tune": {"unfreeze_from": 0, "lr_split": 2,
                                   "lr_multipliers": {"early": 0.1, "late": 0.5, "head": 1.0}},
                     **train}}
    return validate_config(raw)


def _step_deltas(optimizer) -> dict[str, np.ndarray]:
    model = _three_group_model()
    before = {layer.name: layer.get_weights()[0].copy() for layer in model.layers[1:]}
    model.compile(optimizer, loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)).astype(np.float32), np.eye(2, dtype=np.float32)[[0, 1] * 4]
    model.train_on_batch(x, y)
    return {name: model.get_layer(name).get_weights()[0] - w for name, w in before.items()}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "rmsprop"])
def test_layer_groups_move_by_exactly_their_multiplier_on_one_step(optimizer):
    cfg = _cfg(optimizer=optimizer, momentum=0.0, weight_decay=0.01)
    multipliers = lr_multiplier_map(cfg, _three_group_model())
    assert multipliers == {"early_dense/kernel": 0.1, "early_dense/bias": 0.1,
                           "late_dense/kernel": 0.5, "late_dense/bias": 0.5}
    plain = _step_deltas(make_optimizer(cfg.train, 0.05))
    scaled = _step_deltas(make_optimizer(cfg.train, 0.05, multipliers))
    for name, ratio in (("early_dense", 0.1), ("late_dense", 0.5), ("head_logits", 1.0)):
        assert np.abs(plain[name]).max() > 0
        # exact up to float32 rounding of the weights (~1e-7 at magnitude ~1)
        np.testing.assert_allclose(scaled[name], ratio * plain[name], rtol=1e-5, atol=3e-7)


def test_build_optimizer_uses_multipliers_only_when_fine_tuning():
    cfg = _cfg(optimizer="sgd")
    model = _three_group_model()
    assert isinstance(build_optimizer(cfg, "fine_tune", model, 10, 2), ScaledSGD)
    assert type(build_optimizer(cfg, "head", model, 10, 2)) is keras.optimizers.SGD
    plain = validate_config({"data": {"source": {"format": "folder", "root": "x"}}})
    assert type(build_optimizer(plain, "fine_tune", model, 10, 2)) is keras.optimizers.AdamW


def test_scaled_optimizer_saves_and_loads_with_the_model(tmp_path):
    cfg = _cfg()
    model = _three_group_model()
    model.compile(make_optimizer(cfg.train, 0.01, lr_multiplier_map(cfg, model)),
                  loss="categorical_crossentropy")
    model.train_on_batch(np.ones((2, 4), np.float32), np.eye(2, dtype=np.float32))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, ScaledAdamW)
    assert loaded.optimizer.lr_multipliers["early_dense/kernel"] == 0.1


def test_lr_split_outside_the_fine_tuned_backbone_is_an_error():
    cfg = _cfg()
    cfg.train.fine_tune.unfreeze_from = 2
    with pytest.raises(ConfigError, match="lr_split=2 is layer 2, outside the fine-tuned backbone"):
        layer_groups(cfg, _three_group_model())


@pytest.mark.slow
def test_groups_of_a_mobilenet_split_at_a_block():
    from tinyvision.models.build import build_model

    cfg = validate_config({"data": {"source": {"format": "folder", "root": "x"}},
                           "model": {"alpha": 0.25, "input_size": 32, "weights": "none"},
                           "train": {"fine_tune": {"unfreeze_from": "block_10",
                                                   "lr_split": "block_12"}}})
    model = build_model(cfg.model, 3, "multiclass")
    for layer in model.layers:
        layer.trainable = True
    groups = {k: [layer.name for layer in v] for k, v in layer_groups(cfg, model).items()}
    assert "conv_dw_10" in groups["early"] and "conv_pw_11" in groups["early"]
    assert "conv_dw_12" in groups["late"] and "conv_pw_13" in groups["late"]
    assert groups["head"] == ["head_logits"] and "conv1" in groups["early"]
    cfg.train.fine_tune.lr_split = "conv_dw_99"
    with pytest.raises(ConfigError, match="lr_split"):
        layer_groups(cfg, model)


def test_a_stretched_cosine_stays_continuous_and_ends_at_its_new_last_step():
    """A minutes budget resizes the cosine while training: past the warm-up the rate goes on from
    where it is (no jump) and reaches lr x final_fraction exactly at the new last step."""
    from tinyvision.training.schedules import WarmupCosine

    lr, final = 0.01, 0.01
    schedule = WarmupCosine(lr, total_steps=100, warmup_steps=10, final_fraction=final)
    before = [float(schedule(s)) for s in (0, 10, 40)]
    assert before[0] == pytest.approx(lr * 0.01) and before[1] == pytest.approx(lr)
    at_40 = before[2]
    schedule.set_length(300, 10, at_step=40)  # the machine turned out faster: 300 steps fit
    assert float(schedule(40)) == pytest.approx(at_40, rel=1e-6)
    assert float(schedule(300)) == pytest.approx(lr * final, rel=1e-5)
    values = [float(schedule(s)) for s in range(40, 301, 20)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # still falling all the way
    state = schedule.state()
    fresh = WarmupCosine(lr, 100, 10, final)
    fresh.restore(state)  # a resumed run gets the stretched curve back
    assert float(fresh(123)) == pytest.approx(float(schedule(123)))
