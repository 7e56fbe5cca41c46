"""MLflow logging, checked against a stand-in `mlflow` module that records the calls."""

import sys
import types
from pathlib import Path

import pytest

from tinyvision.config import validate_config
from tinyvision.errors import ConfigError
from tinyvision.run.folder import new_run_dir
from tinyvision.records import Summary
from tinyvision.run.tracking import check_tracking, log_run


def config(tmp_path, **top):
    return validate_config({"data": {"source": {"format": "folder", "root": str(tmp_path)}}, **top})


@pytest.fixture
def fake_mlflow(monkeypatch):
    calls = []
    module = types.ModuleType("mlflow")

    class Run:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    for name in ("set_tracking_uri", "set_experiment", "log_params", "log_metrics", "log_artifact"):
        setattr(module, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    module.start_run = lambda **k: (calls.append(("start_run", (), k)), Run())[1]
    monkeypatch.setitem(sys.modules, "mlflow", module)
    return calls


def test_finished_run_is_logged(tmp_path, fake_mlflow):
    cfg = config(tmp_path, tracking="mlflow", tracking_uri="file:./mlruns")
    check_tracking(cfg)
    run = new_run_dir(tmp_path / "runs", "exp")
    run.config.write_text("x: 1\n")
    log_run(cfg, run, Summary(run=str(run.root), status="finished", task="multiclass",
                              classes=["a", "b"], images={"train": 4},
                              float_metrics={"accuracy": 0.9}, int8={"accuracy": 0.89},
                              arena_bytes=1000, macs=5))
    names = [c[0] for c in fake_mlflow]
    assert names[:3] == ["set_tracking_uri", "set_experiment", "start_run"]
    assert ("set_tracking_uri", ("file:./mlruns",), {}) in fake_mlflow
    params = next(c[1][0] for c in fake_mlflow if c[0] == "log_params")
    assert params["backbone"] == "mobilenet_v1" and params["alpha"] == 0.25
    metrics = next(c[1][0] for c in fake_mlflow if c[0] == "log_metrics")
    assert metrics == {"float_accuracy": 0.9, "int8_accuracy": 0.89, "arena_bytes": 1000.0,
                       "macs": 5.0}
    assert [Path(c[1][0]).name for c in fake_mlflow if c[0] == "log_artifact"] == ["config.yaml"]


def test_no_tracking_logs_nothing(tmp_path, fake_mlflow):
    log_run(config(tmp_path), new_run_dir(tmp_path / "runs", "exp"),
            Summary(run="exp", status="finished", task="multiclass", classes=[], images={}))
    assert fake_mlflow == []


def test_tracking_needs_a_uri_and_the_package(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="needs tracking_uri"):
        check_tracking(config(tmp_path, tracking="mlflow"))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r'pip install "tinyvision\[mlflow\]"'):
        check_tracking(config(tmp_path, tracking="mlflow", tracking_uri="file:./m"))
