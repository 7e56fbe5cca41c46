"""Learning-rate finder: smoothing and suggestion, a sweep on a constructed problem, and the
`lr-find` command end to end (files, determinism)."""

import csv

import keras
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from conftest import make_class_folders, tiny_config
from tinyvision.train.lr_finder import lr_sweep, smooth, suggest_rate, sweep_rates


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
    from tinyvision.cli_train import register
    from tinyvision.config import load_config
    from tinyvision.train.lr_finder import run_lr_find

    root = make_class_folders(tmp_path / "images", per_class=8)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, tmp_path / "runs")))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the command name
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
    run, again = run_lr_find(cfg, progress=False)
    assert run.root.name == "tiny-lr-find-2"
    assert [float(r["loss"]) for r in rows] == pytest.approx(again.losses.tolist(), rel=1e-5)
    if again.suggestion is not None:
        assert f"{again.suggestion:.2e}" in result.output


def test_lr_find_command_reports_config_errors(tmp_path):
    from tinyvision.cli_train import register

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path / "runs")))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["lr-find", str(config), "--stage", "neck"])
    assert result.exit_code == 1
    assert "train.lr_find.stage" in result.output and "Traceback" not in result.output
