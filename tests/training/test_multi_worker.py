"""`train.strategy: multi_worker` with two worker processes on loopback (TF_CONFIG), against the
same run on one worker: the workers' gradients are averaged, so both reach the same accuracy;
the chief keeps and registers the one run, the other worker only its training.

Each worker is a process of its own (TensorFlow configures its collective ops at start-up)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import make_class_folders, tiny_config

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, sys
    from tinyvision.config import validate_config
    from tinyvision.run.run import full_run, resume_run
    if sys.argv[1] == "--resume":
        run, summary = resume_run(sys.argv[2], progress=False)
    else:
        run, summary = full_run(validate_config(json.loads(sys.argv[1])), progress=False)
    print(json.dumps({"run": str(run.root), "status": summary.status,
                      "float": summary.float_metrics, "int8": summary.int8}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(raw: dict | str, tf_config: dict | None) -> subprocess.Popen:
    """A worker process: a new run of the config `raw`, or a resume of the run folder `raw`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    args = ["--resume", raw] if isinstance(raw, str) else [json.dumps(raw)]
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _two_workers(raw: dict | str) -> list[subprocess.Popen]:
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [_start(raw, {"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(2)]


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _column(log: list[str], name: str) -> int:
    return log[0].split(",").index(name)


def test_two_workers_on_loopback_train_one_run_as_one_worker_does(tmp_path):
    from tinyvision.run.registry import Registry

    root = make_class_folders(tmp_path / "images", per_class=20)
    raw = tiny_config(root, tmp_path / "runs", train={
        "batch_size": 16, "max_steps_per_epoch": None, "head": {"epochs": 0},
        "fine_tune": {"epochs": 10, "learning_rate": 0.01, "unfreeze_from": 0}},
        model={"backbone": "plain_cnn", "alpha": 1.0, "plain_cnn": {"filters": [8, 16]}})
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    single = _result(_start({**raw, "name": "one"}, None))

    two = {**raw, "name": "two", "train": {**raw["train"], "strategy": "multi_worker"}}
    chief, other = (_result(w) for w in _two_workers(two))

    assert chief["status"] == "finished" and other["status"] == "worker"
    assert os.path.basename(chief["run"]) == "two"
    assert os.path.basename(os.path.dirname(other["run"])) == ".workers"
    assert single["float"]["accuracy"] >= 0.9
    assert abs(chief["float"]["accuracy"] - single["float"]["accuracy"]) <= 0.15
    assert abs(chief["int8"]["accuracy"] - single["int8"]["accuracy"]) <= 0.15
    # one training: both workers took the same averaged steps, so they log the same losses
    logs = [(Path(r) / "log.csv").read_text().splitlines() for r in (chief["run"], other["run"])]
    losses = [[row.split(",")[_column(log, "loss")] for row in log[1:]] for log in logs]
    assert len(losses[0]) == 10 and losses[0] == losses[1]
    names = [row["name"] for row in Registry(tmp_path / "runs").rows()]
    assert sorted(names) == ["one", "two"]  # the other worker registers nothing


def _losses(run: Path) -> list[float]:
    log = (run / "log.csv").read_text().splitlines()
    return [float(row.split(",")[_column(log, "loss")]) for row in log[1:]]


def test_two_workers_killed_mid_training_resume_to_the_same_end(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=20)
    raw = tiny_config(root, tmp_path / "runs", train={
        "batch_size": 16, "max_steps_per_epoch": None, "head": {"epochs": 0},
        "strategy": "multi_worker",
        "fine_tune": {"epochs": 8, "learning_rate": 0.01, "unfreeze_from": 0}},
        model={"backbone": "plain_cnn", "alpha": 1.0, "plain_cnn": {"filters": [8, 16]}})
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    whole, _ = (_result(w) for w in _two_workers({**raw, "name": "whole"}))

    killed = _two_workers({**raw, "name": "killed"})
    state_file = tmp_path / "runs" / "killed" / "checkpoints" / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline and killed[0].poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["stage_epochs"] >= 3:
            break
        time.sleep(0.05)
    assert killed[0].poll() is None, "the run ended before it could be killed"
    for worker in killed:
        worker.kill()
        worker.communicate()

    chief, other = (_result(w) for w in _two_workers(str(tmp_path / "runs" / "killed")))
    assert chief["status"] == "finished" and other["status"] == "worker"
    assert os.path.basename(chief["run"]) == "killed"
    np.testing.assert_allclose(_losses(Path(chief["run"])), _losses(Path(whole["run"])),
                               rtol=1e-4, atol=1e-5)
    assert _losses(Path(other["run"])) == _losses(Path(chief["run"]))
    assert chief["float"]["accuracy"] == pytest.approx(whole["float"]["accuracy"], abs=1e-6)


def test_a_worker_that_cannot_read_the_chief_run_folder_is_told_what_to_do(tmp_path, monkeypatch):
    from tinyvision.errors import RunError
    from tinyvision.run.run import resume_run

    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 1}}))
    with pytest.raises(RunError, match=r"chief's run folder: give its path, on a disk every"):
        resume_run(tmp_path / "runs" / "missing", progress=False)
