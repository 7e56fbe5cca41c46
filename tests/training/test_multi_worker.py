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
from pathlib import Path

import pytest

from helpers import make_class_folders, tiny_config

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, sys
    from tinyvision.config import validate_config
    from tinyvision.run.run import full_run
    run, summary = full_run(validate_config(json.loads(sys.argv[1])), progress=False)
    print(json.dumps({"run": str(run.root), "status": summary.status,
                      "float": summary.float_metrics, "int8": summary.int8}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(raw: dict, tf_config: dict | None) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(raw)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


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

    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    two = {**raw, "name": "two", "train": {**raw["train"], "strategy": "multi_worker"}}
    workers = [_start(two, {"cluster": cluster, "task": {"type": "worker", "index": i}})
               for i in range(2)]
    chief, other = (_result(w) for w in workers)

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
