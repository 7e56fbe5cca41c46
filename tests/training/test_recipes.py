"""train.recipe (pretrained / scratch and why), explicit settings winning over it, budgets in
epochs, steps and minutes, step minimums, and the warnings before training."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import yaml

from helpers import make_class_folders, tiny_config
from tinyvision.config import load_config, validate_config
from tinyvision.errors import ConfigError
from tinyvision.training.budget import MINUTES_EPOCH_STEPS, plan_stages
from tinyvision.training.recipes import (SCRATCH_AUGMENT, SCRATCH_DETECTION_AUGMENT, SCRATCH_EPOCHS,
                                      SCRATCH_LEARNING_RATE, SCRATCH_MIN_STEPS, apply_recipe,
                                      auto_batch_size, choose_recipe, training_warnings)


def _config(tmp_path, **sections) -> dict:
    raw = {"data": {"source": {"format": "folder", "root": str(tmp_path)}}}
    raw.update(sections)
    return raw


@pytest.mark.parametrize("model, train, name, reason", [
    ({"weights": "none"}, {}, "scratch", "model.weights is none"),
    ({}, {}, "pretrained", "model.weights is imagenet"),  # mobilenet_v1's default weights
    ({"weights": "my.weights.h5"}, {}, "pretrained", "model.weights is my.weights.h5"),
    ({"backbone": "plain_cnn", "alpha": 1.0}, {}, "scratch", "model.weights is none"),
    ({"weights": "my.weights.h5"}, {"recipe": "scratch"}, "scratch", "train.recipe"),
    ({"weights": "none"}, {"recipe": "pretrained"}, "pretrained", "train.recipe"),
])
def test_the_recipe_and_its_printed_reason(tmp_path, model, train, name, reason):
    cfg = validate_config(_config(tmp_path, model=model, train=train))
    assert choose_recipe(cfg) == (name, reason)
    resolved, recipe = apply_recipe(cfg, n_train=1000, task="multiclass")
    assert resolved.train.recipe == name
    line = recipe.describe()
    what = ("one stage, whole network trains" if name == "scratch"
            else "two stages: head on the frozen backbone, then fine-tuning")
    assert line.startswith(f"recipe: {name} ({reason}): {what}")


def test_scratch_recipe_trains_the_whole_network_in_one_stage(tmp_path):
    cfg = validate_config(_config(tmp_path, model={"weights": "none"}))
    resolved, recipe = apply_recipe(cfg, n_train=5000, task="multiclass")
    train = resolved.train
    assert (train.head.epochs, train.fine_tune.epochs) == (0, SCRATCH_EPOCHS)
    assert train.fine_tune.unfreeze_from == 0 and train.fine_tune.batchnorm == "train"
    assert train.fine_tune.learning_rate == SCRATCH_LEARNING_RATE and train.batch_size == 64
    assert train.patience is None and train.min_steps == SCRATCH_MIN_STEPS
    assert train.fine_tune.schedule.name == "cosine" and train.optimizer == "adamw"
    assert resolved.model.batchnorm_momentum == 0.9
    assert [op.op for op in train.augment] == [op["op"] for op in SCRATCH_AUGMENT]
    detection, _ = apply_recipe(cfg, n_train=5000, task="detection")
    assert [op.op for op in detection.train.augment] == [op["op"] for op in
                                                         SCRATCH_DETECTION_AUGMENT]
    # detection: batch 32 for 8000 steps at 1.4e-2 x sqrt(32 / 64), the last epoch's weights
    assert (detection.train.batch_size, detection.train.min_steps) == (32, 8000)
    assert detection.train.fine_tune.learning_rate == pytest.approx(1.4e-2 * 0.5 ** 0.5, rel=1e-2)
    assert detection.train.keep == "last"
    assert "train.head.epochs" in recipe.settings and not recipe.kept


def test_pretrained_recipe_keeps_the_two_stages(tmp_path):
    cfg = validate_config(_config(tmp_path))
    resolved, recipe = apply_recipe(cfg, n_train=5000, task="multiclass")
    assert (resolved.train.head.epochs, resolved.train.fine_tune.epochs) == (10, 10)
    assert resolved.train.fine_tune.unfreeze_from == "auto" and resolved.train.patience == 5
    assert resolved.train.augment == [] and resolved.train.min_steps == 200
    assert resolved.model.batchnorm_momentum is None  # 0.99, Keras' own, for pretrained weights


def test_explicit_settings_win_over_the_recipe(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, model={"weights": "none"},
                                           train={"fine_tune": {"epochs": 7}, "augment": []})))
    cfg = load_config(path, ["train.batch_size=16", "train.patience=3"])
    resolved, recipe = apply_recipe(cfg, n_train=5000, task="multiclass")
    train = resolved.train
    assert (train.fine_tune.epochs, train.batch_size, train.patience, train.augment) == \
        (7, 16, 3, [])
    # the rate the config left out is scaled to the batch it set: sqrt(16 / 64) x the rate
    assert train.fine_tune.learning_rate == pytest.approx(SCRATCH_LEARNING_RATE / 2)
    assert set(recipe.kept) == {"train.fine_tune.epochs", "train.batch_size", "train.patience",
                                "train.augment"}
    assert "from the config: " in recipe.describe() and "batch_size=16" in recipe.describe()
    # resolving again (a resumed run reads the resolved config.yaml) changes nothing
    again, _ = apply_recipe(validate_config(yaml.safe_load(resolved.to_yaml())), 5000, "multiclass")
    assert again == resolved


def test_small_sets_get_a_smaller_batch_and_a_matching_rate(tmp_path):
    assert auto_batch_size(5000, 64) == 64
    assert auto_batch_size(200, 64) == 32  # 200 images: 6 batches of 32, not 3 of 64
    assert auto_batch_size(40, 64) == 8 and auto_batch_size(3, 64) == 8
    cfg = validate_config(_config(tmp_path, model={"weights": "none"}))
    resolved, _ = apply_recipe(cfg, n_train=100, task="multiclass")
    assert resolved.train.batch_size == 16
    assert resolved.train.fine_tune.learning_rate == pytest.approx(SCRATCH_LEARNING_RATE / 2)


@pytest.mark.parametrize("text, expected", [
    ("40 epochs", {"epochs": 40}), ("3000 steps", {"steps": 3000}), ("1 epoch", {"epochs": 1}),
    ("10 minutes", {"minutes": 10.0}), ("2.5 min", {"minutes": 2.5}), ("90m", {"minutes": 90.0}),
    ({"steps": 500}, {"steps": 500}),
])
def test_budget_forms(tmp_path, text, expected):
    budget = validate_config(_config(tmp_path, train={"budget": text})).train.budget
    assert {k: v for k, v in budget.model_dump().items() if v is not None} == expected
    assert str(budget).split()[1] == budget.kind == next(iter(expected))


@pytest.mark.parametrize("value, message", [
    ("ten minutes", r"train.budget.*a number and a unit.*'10 minutes'"),
    ("40 hours", r"train.budget.*a number and a unit"),
    ({"epochs": 3, "minutes": 2}, r"exactly one of epochs, steps or minutes.*epochs, minutes"),
    ({}, r"exactly one of epochs, steps or minutes.*got none"),
    ({"epoch": 3}, r"unknown key `train.budget.epoch`.*Did you mean 'epochs'"),
])
def test_bad_budgets_name_the_field_and_the_fix(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_config(tmp_path, train={"budget": value}))


def _plan(tmp_path, n_train, **train):
    cfg = validate_config(_config(tmp_path, model={"weights": "none"}, train=train))
    return plan_stages(cfg, n_train)


def test_a_small_set_trains_at_least_min_steps(tmp_path):
    """20 images at batch 8: 3 steps a pass; 40 epochs would be 120 steps, min_steps makes 1500,
    validated in at most 100 epochs of several passes each."""
    (plan,) = _plan(tmp_path, 20, batch_size=8, min_steps=1500,
                    head={"epochs": 0}, fine_tune={"epochs": 40})
    assert (plan.stage, plan.pass_steps, plan.total_steps) == ("fine_tune", 3, 1500)
    assert plan.steps_per_epoch == 15 and plan.epochs == 100
    assert "raised from 120 to train.min_steps=1500" in plan.describe()
    (big,) = _plan(tmp_path, 6400, batch_size=64, min_steps=1500,
                   head={"epochs": 0}, fine_tune={"epochs": 40})
    assert (big.total_steps, big.steps_per_epoch, big.epochs) == (4000, 100, 40)
    assert big.notes == []


def test_budgets_are_shared_by_the_stages(tmp_path):
    head, fine = _plan(tmp_path, 640, budget="30 epochs", min_steps=0,
                       head={"epochs": 10}, fine_tune={"epochs": 20})
    assert (head.total_steps, fine.total_steps) == (100, 200)  # 10 + 20 epochs of 10 steps
    head, fine = _plan(tmp_path, 640, budget="900 steps", min_steps=5000,
                       head={"epochs": 1}, fine_tune={"epochs": 2})
    assert (head.total_steps, fine.total_steps) == (300, 600)  # a steps budget is exact
    head, fine = _plan(tmp_path, 640, budget="2 minutes", head={"epochs": 3},
                       fine_tune={"epochs": 5})
    assert (head.total_steps, head.seconds, fine.seconds) == (30, None, 120.0)


def test_warnings_before_training(tmp_path):
    def codes(**train) -> set[str]:
        cfg = validate_config(_config(tmp_path, model={"weights": "none"}, train=train))
        plans = plan_stages(cfg, 6400)
        return {w["code"] for w in training_warnings(cfg, sum(p.total_steps for p in plans))}

    assert codes(head={"epochs": 1}, fine_tune={"epochs": 1}, min_steps=0) == {
        "head_on_random_backbone", "few_steps", "frozen_random_layers", "low_learning_rate"}
    assert codes(head={"epochs": 0}, fine_tune={"epochs": 50, "learning_rate": 1e-4,
                                                "unfreeze_from": "block_5", "batchnorm": "frozen"},
                 min_steps=0) == {"low_learning_rate", "frozen_random_layers",
                                  "frozen_batchnorm"}
    assert codes(head={"epochs": 0}, fine_tune={"epochs": 1, "learning_rate": 5e-3,
                                                "unfreeze_from": 0}, min_steps=2000) == set()


@pytest.mark.slow
def test_min_steps_on_a_tiny_set_through_training(tmp_path):
    """A stage asked for 1 epoch (one pass: a step or two) trains min_steps=12 optimizer steps,
    validated after each pass."""
    from tinyvision.run.run import full_run

    root = make_class_folders(tmp_path / "images", per_class=8, classes=("red", "blue"))
    raw = tiny_config(root, tmp_path / "runs", train={
        "min_steps": 12, "head": {"epochs": 0},
        "fine_tune": {"epochs": 1, "learning_rate": 0.01, "unfreeze_from": 0}})
    run, summary = full_run(validate_config(raw), progress=False)
    summary = summary.to_json()
    (stage,) = summary["training"]["stages"]
    assert (stage["stage"], stage["steps"]) == ("fine_tune", 12)
    rows = run.log.read_text().splitlines()[1:]
    one_pass = math.ceil(summary["images"]["train"] / 8)  # batch 8
    assert len(rows) == math.ceil(12 / one_pass) > 1
    last = yaml.safe_load(run.config.read_text())
    assert last["train"]["keep"] == "best"
    saved = yaml.safe_load(run.config.read_text())
    assert saved["train"]["recipe"] == "scratch" and saved["model"]["color_mode"] == "rgb"


@pytest.mark.slow
def test_a_minutes_budget_ends_on_time_with_its_schedule_finished(tmp_path):
    """The clock times the first steps and sizes the cosine schedule so that its last step ends
    at the budget: training ends within 10 % of it, the rate at its final value."""
    import keras

    from tinyvision.training.trainer import train_model
    from tinyvision.run.stages import prepare_data, resolve_settings, train_data
    from tinyvision.run.run import make_run_folder

    root = make_class_folders(tmp_path / "images", per_class=16, classes=("red", "blue"))
    budget_minutes = 0.5
    raw = tiny_config(root, tmp_path / "runs", model={"backbone": "plain_cnn", "alpha": 1.0,
                                                       "plain_cnn": {"filters": [8, 16]}},
                      train={"budget": f"{budget_minutes} min", "max_steps_per_epoch": None,
                             "head": {"epochs": 0},
                             "fine_tune": {"epochs": 1, "learning_rate": 0.01, "unfreeze_from": 0}})
    cfg, run = make_run_folder(validate_config(raw))
    data = prepare_data(cfg, run, progress=False)
    cfg, _ = resolve_settings(cfg, data.manifest)
    keras.backend.clear_session()
    result = train_model(cfg, train_data(data), run)
    (stage,) = result.stages
    assert stage["on_time"]
    assert abs(result.seconds - budget_minutes * 60) <= 0.1 * budget_minutes * 60, result.seconds
    rows = run.log.read_text().splitlines()[1:]
    # a small set: epochs of MINUTES_EPOCH_STEPS steps, the last one cut at the planned step
    assert stage["steps"] > 100 and len(rows) == math.ceil(stage["steps"] / MINUTES_EPOCH_STEPS)
    last_rate = float(rows[-1].split(",")[2])
    final = cfg.train.fine_tune.learning_rate * cfg.train.fine_tune.schedule.final_fraction
    assert last_rate == pytest.approx(final, rel=0.05)


def test_recipe_line_and_warnings_are_logged_before_training(tmp_path, caplog, monkeypatch):
    """`tinyvision train` says which recipe it took and why before any training starts."""
    from tinyvision.run.run import full_run

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # stop where training would begin

    monkeypatch.setattr("tinyvision.run.run.train_stage", stop)
    root = make_class_folders(tmp_path / "images", per_class=6, classes=("red", "blue"))
    raw = tiny_config(root, tmp_path / "runs")
    del raw["train"]["min_steps"], raw["train"]["augment"]
    with caplog.at_level(logging.INFO, logger="tinyvision"), pytest.raises(KeyboardInterrupt):
        full_run(validate_config(raw), progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("recipe: scratch (model.weights is none): one stage") for m in messages)
    assert any(m.startswith("color_mode: rgb (") for m in messages)


def test_a_minutes_budget_estimate_settles_after_the_first_steps(monkeypatch):
    """The first validation round also traces the evaluation functions (seconds, once): the
    epoch estimate must not jump on it (it went 131, 12, 110 before it settled)."""
    from tinyvision.training import budget
    from tinyvision.training.budget import BudgetClock, StagePlan

    now = [0.0]
    monkeypatch.setattr(budget.time, "perf_counter", lambda: now[0])

    class Iterations:
        value = None

    class FakeModel:
        stop_training = False

        class optimizer:
            iterations = Iterations()

    steps = [0]
    Iterations.value = type("V", (), {"numpy": lambda self: steps[0]})()
    plan = StagePlan("fine_tune", 20, 20, budget.UNSIZED, seconds=120.0)
    clock = BudgetClock(plan, deadline=120.0, resize=lambda total, at: None, val_steps=4)
    clock.set_model(FakeModel())
    estimates = []
    for epoch in range(200):
        clock.on_epoch_begin(epoch)
        for batch in range(plan.steps_per_epoch):
            clock.on_train_batch_begin(batch)
            now[0] += 0.5 if steps[0] < 2 else 0.1  # the first steps trace the training step
            steps[0] += 1
            clock.on_train_batch_end(batch)
        if steps[0] >= plan.total_steps:
            break
        now[0] += 3.0 if epoch == 0 else 0.2  # the first round traces validation
        if epoch >= 1:
            estimates.append(plan.epochs)
    assert max(estimates) <= 1.15 * min(estimates), estimates
    assert abs(now[0] - 120.0) <= 2.0  # and it still ends on time


def _feature_file(path, dead: bool):
    """A user's model file whose `feat_relu` map is all zeros (dead) or a random conv's (which
    keeps the images' colours apart)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="feat")(inputs)
    x = keras.layers.ReLU(name="feat_relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    if dead:
        kernel, bias = model.get_layer("feat").get_weights()
        model.get_layer("feat").set_weights([np.zeros_like(kernel), bias - 1.0])
    model.save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("features, recipe, decision", [
    ("dead", "auto", "switched"), ("dead", "pretrained", "warned"), ("alive", "auto", "kept")])
def test_the_start_check_switches_away_from_useless_features(tmp_path, features, recipe,
                                                              decision):
    """After the head stage on a model file's frozen features, a head that cannot tell the
    classes apart switches the fine-tuning to whole-network training (config.yaml rewritten, said
    in summary.json and the warnings), or warns for an explicit train.recipe: pretrained; useful
    features keep the plan."""
    from tinyvision.run.run import full_run

    root = make_class_folders(tmp_path / "images", per_class=20)
    path = _feature_file(tmp_path / f"{features}.keras", features == "dead")
    raw = tiny_config(root, tmp_path / "runs", model={"weights": str(path), "cut_at": "feat_relu"},
                      train={"recipe": recipe, "head": {"epochs": 5, "learning_rate": 0.05},
                             "fine_tune": {"epochs": 1}, "min_steps": 20})
    run, summary = full_run(validate_config(raw), progress=False)
    summary = summary.to_json()
    start = summary["start"]
    assert start["decision"] == decision, start
    codes = [w["code"] for w in summary["warnings"]]
    saved = yaml.safe_load(run.config.read_text())
    if decision == "switched":
        assert start["informedness"] < 0.2 and "start_switched" in codes
        assert saved["train"]["fine_tune"]["unfreeze_from"] == 0
        assert saved["train"]["fine_tune"]["batchnorm"] == "train"
        assert saved["train"]["min_steps"] == 1500  # the scratch recipe's length
        assert summary["training"]["stages"][-1]["steps"] >= 1500
    elif decision == "warned":
        assert "start_unhelpful" in codes and saved["train"]["fine_tune"]["unfreeze_from"] != 0
    else:
        assert start["informedness"] > 0.5 and not {"start_switched", "start_unhelpful"} & set(codes)


@pytest.mark.parametrize("informedness, start_check, decision, code", [
    (0.95, "switch", "kept", None), (0.75, "switch", "switched", "start_switched"),
    (0.10, "switch", "switched", "start_switched"), (0.75, "warn", "warned", "start_partial"),
    (0.10, "warn", "warned", "start_unhelpful")])
def test_a_start_that_only_partly_suits_the_task_fine_tunes_the_whole_network(
        tmp_path, informedness, start_check, decision, code):
    """A head on the given features that tells the classes apart, but not well (useful < 0.9),
    kept the short fine-tuning of the top in measurement and ended under the scratch recipe; auto
    fine-tunes the whole network instead, an explicit pretrained recipe warns."""
    from types import SimpleNamespace

    import keras

    from tinyvision.evaluate.health import GOOD_START_INFORMEDNESS
    from tinyvision.training.recipes import apply_recipe
    from tinyvision.training.trainer import _check_start

    raw = tiny_config(tmp_path, tmp_path / "runs", model={"weights": str(tmp_path / "w.h5")},
                      train={"start_check": start_check})
    raw["train"].pop("head", None), raw["train"].pop("fine_tune", None)
    cfg, _ = apply_recipe(validate_config(raw), 200, "multiclass")
    judged = {"useful": informedness >= 0.3, "good": informedness >= GOOD_START_INFORMEDNESS,
              "good_bar": GOOD_START_INFORMEDNESS, "informedness": informedness,
              "message": f"val informedness {informedness}"}
    data = SimpleNamespace(train=np.arange(200), task="multiclass")
    files = SimpleNamespace(config=tmp_path / "config.yaml")
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    new_cfg, plans, start = _check_start(cfg, data, model, files, lambda m, d: judged,
                                         plan_stages(cfg, 200))
    assert start["decision"] == decision
    assert [w["code"] for w in start.get("warnings", [])] == ([code] if code else [])
    if decision == "switched":
        assert new_cfg.train.fine_tune.unfreeze_from == 0
        assert new_cfg.train.fine_tune.batchnorm == "train"
        assert [p.stage for p in plans] == ["fine_tune"]
        assert ("partly suit" in start["warnings"][0]["message"]) == (informedness > 0.3)
        assert yaml.safe_load(files.config.read_text())["train"]["fine_tune"]["unfreeze_from"] == 0
    else:
        assert new_cfg == cfg and not files.config.exists()
