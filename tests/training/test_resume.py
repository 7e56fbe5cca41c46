"""A run killed with SIGKILL mid-training resumes with `tinyvision train --resume` and ends where
an uninterrupted run with the same seed ends."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from helpers import make_class_folders, tiny_config

pytestmark = pytest.mark.slow


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tinyvision.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def log_rows(run):
    with open(run / "log.csv") as handle:
        return list(csv.DictReader(handle))


def test_killed_run_resumes_to_the_same_end(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=10)
    raw = tiny_config(root, tmp_path / "runs")
    raw["train"].update(head={"epochs": 2, "learning_rate": 0.01},
                        fine_tune={"epochs": 4, "learning_rate": 0.01, "unfreeze_from": 0,
                                   "schedule": {"name": "plateau", "patience": 1}},
                        augment=[{"op": "flip"}], patience=10)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))

    whole = cli("train", str(config), "name=whole", "--quiet")
    assert whole.wait(timeout=900) == 0, whole.stdout.read()[-3000:]

    killed = cli("train", str(config), "name=killed", "--quiet")
    state_file = tmp_path / "runs" / "killed" / "checkpoints" / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline and killed.poll() is None:
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["stage"] == "fine_tune" and state["stage_epochs"] >= 1:
                break
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "runs" / "killed" / "summary.json").exists()
    # SIGKILL leaves the row "running"; `tinyvision runs` sees the process is gone
    listing = cli("runs", "--runs-dir", str(tmp_path / "runs"), "--csv", str(tmp_path / "r.csv"))
    assert listing.wait(timeout=120) == 0, listing.stdout.read()
    with open(tmp_path / "r.csv") as handle:
        status = {row["name"]: row["status"] for row in csv.DictReader(handle)}
    assert status == {"whole": "finished", "killed": "interrupted"}

    resumed = cli("train", "--resume", str(tmp_path / "runs" / "killed"), "--quiet")
    assert resumed.wait(timeout=900) == 0, resumed.stdout.read()[-3000:]

    a, b = log_rows(tmp_path / "runs" / "whole"), log_rows(tmp_path / "runs" / "killed")
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [str(i) for i in range(1, 7)]
    for key in ("loss", "val_loss", "learning_rate"):
        np.testing.assert_allclose([float(r[key]) for r in a], [float(r[key]) for r in b],
                                   rtol=1e-4, atol=1e-5, err_msg=key)
    summary_a = json.loads((tmp_path / "runs" / "whole" / "summary.json").read_text())
    summary_b = json.loads((tmp_path / "runs" / "killed" / "summary.json").read_text())
    assert summary_a["float"] == pytest.approx(summary_b["float"], abs=1e-6)
    assert summary_a["best_epoch"] == summary_b["best_epoch"]
    leftovers = [p.name for p in (tmp_path / "runs" / "killed").rglob("*") if ".tmp" in p.name]
    assert not leftovers


def test_sigterm_marks_the_run_interrupted_and_it_resumes(tmp_path):
    from tinyvision.run.registry import Registry

    root = make_class_folders(tmp_path / "images", per_class=10)
    raw = tiny_config(root, tmp_path / "runs", train={"head": {"epochs": 0}, "fine_tune": {
        "epochs": 30, "learning_rate": 0.01, "unfreeze_from": 0}})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = cli("train", str(config), "name=term", "--quiet")
    state_file = tmp_path / "runs" / "term" / "checkpoints" / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline and run.poll() is None and not state_file.exists():
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before it could be stopped"
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=120) == 143, run.stdout.read()[-3000:]
    row = Registry(tmp_path / "runs").get("term")
    assert row["status"] == "interrupted" and "SIGTERM" in row["error"]
    assert f"tinyvision train --resume {tmp_path / 'runs' / 'term'}" in row["error"]
    resumed = cli("train", "--resume", str(tmp_path / "runs" / "term"), "--quiet")
    assert resumed.wait(timeout=900) == 0, resumed.stdout.read()[-3000:]
    assert Registry(tmp_path / "runs").get("term")["status"] == "finished"


def test_resume_without_saved_state_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from tinyvision.cli import app

    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path / "runs")))
    (run / "manifest.jsonl").write_text(
        '{"format": "tinyvision-manifest", "version": 1, "task": "multiclass", "classes": ["a", "b"]}\n')
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1 and "no saved training state" in result.output


def test_killed_after_early_stopping_resumes_from_the_best_weights(tmp_path):
    """Killed after the epoch where early stopping ended the head stage, before the stage was
    closed: resuming fits nothing more and goes on from the best weights, as an uninterrupted run
    does (not from the last epoch's)."""
    import keras

    from tinyvision.config import validate_config
    from tinyvision.models.build import build_model
    from tinyvision.run.folder import new_run_dir
    from tinyvision.training.trainer import TrainData, train_model

    raw = tiny_config(tmp_path, tmp_path / "runs")
    raw["train"].update(head={"epochs": 5, "learning_rate": 0.01, "cache_features": False},
                        fine_tune={"epochs": 0}, patience=2)
    cfg = validate_config(raw)
    run = new_run_dir(cfg.runs_dir, "stopped")
    rng = np.random.default_rng(0)
    data = TrainData(rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
                     np.eye(3, dtype=np.float32)[np.arange(12) % 3], np.arange(8),
                     np.arange(8, 12), np.arange(0), ["a", "b", "c"], "multiclass")
    keras.utils.set_random_seed(1)
    best = build_model(cfg.model, 3, "multiclass")
    run.checkpoints.mkdir(parents=True)
    best.save_weights(run.best_weights)
    keras.utils.set_random_seed(2)
    build_model(cfg.model, 3, "multiclass").save_weights(run.checkpoints / "last-head-3.weights.h5")
    state = {"version": 1, "stage": "head", "stage_epochs": 3, "epoch_offset": 0,
             "finished": False, "weights": "last-head-3.weights.h5", "optimizer": "unused.npz",
             "best": 0.5, "best_epoch": 1, "log": [], "plateau": None,
             "early_stopping": {"wait": 2, "best": 0.5}}
    (run.checkpoints / "state.json").write_text(json.dumps(state))

    result = train_model(cfg, data, run, resume=True)
    for got, expected in zip(result.model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(got, expected)
    closed = json.loads((run.checkpoints / "state.json").read_text())
    assert closed["finished"] and closed["stage_epochs"] == 3


@pytest.mark.parametrize("content", ['{"version": 2, "stage": "head"}', "[1, 2]", "not json"])
def test_a_resume_state_of_another_version_is_refused_not_half_read(tmp_path, content):
    from tinyvision.errors import RunError
    from tinyvision.records import ResumeState
    from tinyvision.training.callbacks import load_resume_state

    assert load_resume_state(tmp_path) is None  # nothing saved: a fresh start
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(RunError, match="(?i)start a new run"):
        load_resume_state(tmp_path)
    (tmp_path / "state.json").write_text(
        f'{{"version": {ResumeState.VERSION}, "stage": "head", "stage_epochs": 2, '
        '"epoch_offset": 0, "finished": false, "weights": "last-head-2.weights.h5"}')
    assert load_resume_state(tmp_path).stage == "head"


def test_a_manifest_of_another_version_is_refused(tmp_path):
    from tinyvision.data.manifest import Manifest
    from tinyvision.errors import DataError

    path = tmp_path / "manifest.jsonl"
    path.write_text('{"format": "tinyvision-manifest", "version": 2, "task": "multiclass", '
                    '"classes": ["a"]}\n{"path": "a.png", "labels": ["a"], "split": "train"}\n')
    with pytest.raises(DataError, match="is version 2; this tinyvision reads version 1"):
        Manifest.load(path)


def test_resume_weights_round_trip_and_a_changed_model_is_refused(tmp_path):
    """The per-epoch weights are plain arrays (fast to write); they load back exactly, and into
    a model of another shape they are refused with what to do."""
    import keras

    from tinyvision.errors import RunError
    from tinyvision.training.callbacks import load_resume_weights, save_resume_state

    def model(width: int) -> keras.Model:
        inputs = keras.Input((4,))
        hidden = keras.layers.BatchNormalization()(keras.layers.Dense(width)(inputs))
        return keras.Model(inputs, keras.layers.Dense(2)(hidden))

    keras.utils.set_random_seed(3)
    saved = model(3)
    save_resume_state(tmp_path, saved, None, "head", 2, 0, finished=False, counters={})
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["weights"].endswith(".weights.npz")
    keras.utils.set_random_seed(4)
    loaded = model(3)
    load_resume_weights(loaded, tmp_path / state["weights"])
    for a, b in zip(saved.get_weights(), loaded.get_weights()):  # moving statistics too
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RunError, match="(?i)start a new run"):
        load_resume_weights(model(5), tmp_path / state["weights"])
