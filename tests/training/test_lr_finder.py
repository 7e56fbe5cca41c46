"""Learning-rate finder: smoothing and suggestion, a sweep on a constructed problem, and the
`lr-find` command end to end (files, determinism)."""

import csv
import shutil

import keras
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from helpers import make_class_folders, tiny_config
from tinyvision.training.lr_finder import lr_sweep, smooth, suggest_rate, sweep_rates


def test_sweep_rates_are_log_spaced():
    rates = sweep_rates(1e-6, 1.0, 7)
    np.testing.assert_allclose(rates, [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_smooth_is_centred_and_keeps_length():
    values = np.array([0, 0, 0, 10, 0, 0, 0], float)
    out = smooth(values, 3)
    assert len(out) == 7 and out[3] == pytest.approx(10 / 3) and out[2] == pytest.approx(10 / 3)
    assert smooth(np.array([5.0]), 3).tolist() == [5.0]


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = sweep_rates(1e-6, 10.0, 120)
    x = np.log10(rates)
    # a loss that falls fastest at 1e-3 (logistic in log-rate), bottoms out, then explodes
    loss = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -0.5, (x + 0.5) ** 2 * 4, 0)
    noisy = loss + np.random.default_rng(0).normal(0, 0.02, len(loss))
    suggestion = suggest_rate(rates, smooth(noisy))
    assert 10 ** -3.4 < suggestion < 10 ** -2.6


def test_no_suggestion_when_the_loss_never_falls():
    rates = sweep_rates(1e-3, 10.0, 50)
    assert suggest_rate(rates, np.linspace(1.0, 3.0, 50)) is None


def _blobs_problem(seed: int):
    """Softmax regression on two overlapping Gaussian blobs in 8 dims (not separable, so a too
    high rate makes the loss explode), plain SGD."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 512)
    x = (rng.normal(size=(512, 8)) + 0.5 * (2 * y[:, None] - 1)).astype(np.float32)
    targets = np.eye(2, dtype=np.float32)[y]
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(1e-5), loss="categorical_crossentropy")

    def batches():
        while True:
            order = rng.permutation(512)
            for start in range(0, 512, 32):
                chosen = order[start:start + 32]
                yield x[chosen], targets[chosen]

    return model, batches()


def test_sweep_on_a_constructed_problem_suggests_a_sensible_rate_deterministically():
    rates = sweep_rates(1e-5, 1e3, 150)
    results = []
    for _ in range(2):
        model, batches = _blobs_problem(seed=0)
        results.append(lr_sweep(model, batches, rates))
    first, second = results
    assert first.stopped_early  # rates up to 1000 blow the loss up
    assert len(first.learning_rates) < len(rates)
    assert first.suggestion is not None and 1e-3 <= first.suggestion <= 3.0
    assert first.suggestion == second.suggestion
    np.testing.assert_allclose(first.losses, second.losses)


@pytest.mark.slow
def test_lr_find_command_writes_csv_and_plot_and_is_deterministic(tmp_path):
    from tinyvision.cli import app
    from tinyvision.config import load_config
    from tinyvision.run.run import lr_find

    root = make_class_folders(tmp_path / "images", per_class=8)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, tmp_path / "runs")))
    result = CliRunner().invoke(app, ["lr-find", str(config), "train.batch_size=4",
                                      "--steps", "30", "--start", "1e-5", "--end", "100", "-q"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny-lr-find"
    with open(run_dir / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert 10 <= len(rows) <= 30 and set(rows[0]) == {"step", "learning_rate", "loss",
                                                      "smoothed_loss"}
    assert (run_dir / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert "suggested learning rate" in result.output or "no suggestion" in result.output
    # the same config and seed again (the library call): the same sweep
    cfg = load_config(config, ["train.batch_size=4", "train.lr_find.steps=30",
                               "train.lr_find.start=1e-5", "train.lr_find.end=100"])
    again = lr_find(cfg, progress=False)
    assert again.folder.name == "tiny-lr-find-2"
    assert [float(r["loss"]) for r in rows] == pytest.approx(again.losses.tolist(), rel=1e-5)
    if again.suggestion is not None:
        assert f"{again.suggestion:.2e}" in result.output


def test_lr_find_command_reports_config_errors(tmp_path):
    from tinyvision.cli import app

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path / "runs")))
    result = CliRunner().invoke(app, ["lr-find", str(config), "--stage", "neck"])
    assert result.exit_code == 1
    assert "train.lr_find.stage" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["lr-find", str(config), "--from", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "no such run directory or file" in result.output
    assert not (tmp_path / "runs").exists()  # refused before a run directory is made


def _start_weights_setup(tmp_path):
    """A tiny config and data whose targets are all class 2, and a weights file whose head is
    sure of class 0 (loss ~20 on every batch, against ~ln 3 for a fresh model)."""
    from tinyvision.config import validate_config
    from tinyvision.models.build import build_model
    from tinyvision.training.trainer import TrainData

    raw = tiny_config(tmp_path, tmp_path / "runs")
    raw["train"]["lr_find"] = {"start": 1e-9, "end": 1e-8, "steps": 10}
    cfg = validate_config(raw)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    targets = np.tile(np.float32([0, 0, 1]), (24, 1))
    data = TrainData(images, targets, np.arange(16), np.arange(16, 24), np.arange(0),
                     ["a", "b", "c"], "multiclass")
    model = build_model(cfg.model, 3, "multiclass")
    head = [layer for layer in model.layers if layer.get_weights()][-1]
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.float32([20, 0, 0]).reshape(bias.shape)])
    model.save_weights(tmp_path / "sure_of_a.weights.h5")
    return cfg, data


def test_lr_find_starts_from_given_weights(tmp_path):
    from tinyvision.errors import ConfigError, RunError
    from tinyvision.training.lr_finder import find_lr

    cfg, data = _start_weights_setup(tmp_path)

    def with_weights(value):
        update = cfg.train.lr_find.model_copy(update={"weights": value})
        return cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr_find": update})})

    fresh = find_lr(cfg, data)
    assert fresh.losses[0] < 3.0
    started = find_lr(with_weights(str(tmp_path / "sure_of_a.weights.h5")), data)
    # log p = (0, -20, -20) up to e^-20; the smoothed target (eps/3, eps/3, 1 - 2 eps/3) gives
    # 20 (1 - eps/3); rates of ~1e-9 leave the weights as loaded
    smoothing = cfg.train.label_smoothing
    assert started.losses[0] == pytest.approx(20.0 * (1 - smoothing / 3), rel=1e-4)

    run = tmp_path / "runs" / "head-only"  # a run directory: its best checkpoint
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "sure_of_a.weights.h5", run / "checkpoints" / "best.weights.h5")
    assert find_lr(with_weights(str(run)), data).losses[0] == pytest.approx(started.losses[0])
    with pytest.raises(ConfigError, match=r"train.lr_find.weights='nowhere': no such run"):
        find_lr(with_weights("nowhere"), data)
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    with pytest.raises(RunError, match="best.weights.h5"):
        find_lr(with_weights(str(tmp_path / "runs" / "empty")), data)
    two_classes = data.__class__(data.images, data.targets[:, :2], data.train, data.val,
                                 data.test, ["a", "b"], "multiclass")
    with pytest.raises(ConfigError, match="does not fit the model of this config"):
        find_lr(with_weights(str(tmp_path / "sure_of_a.weights.h5")), two_classes)
