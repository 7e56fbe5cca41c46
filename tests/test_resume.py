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

from conftest import make_class_folders, tiny_config

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
