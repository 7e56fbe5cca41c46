"""`tinyvision search`: candidates over the board's budget are pruned before training; a small
search returns a fitting model at least as accurate as the config's own at no larger size; two
processes share one study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import make_class_folders, tiny_config

from tinyvision.config import validate_config
from tinyvision.run.registry import Registry
from tinyvision.run.search import (Candidate, FitChecker, candidate_space, own_candidate,
                                   pareto_front, search)

pytest.importorskip("optuna")


def _setup(tmp_path: Path, demo: bool = False, **search):
    """A search config on colour folders, or on the demo's shapes (few, small)."""
    if demo:
        from tinyvision.data.demo import make_shapes_dataset

        root = make_shapes_dataset(tmp_path / "shapes", per_class=16, size=64)
    else:
        root = make_class_folders(tmp_path / "images", per_class=12)
    raw = tiny_config(root, tmp_path / "runs", name="colours",
                      model={"alpha": 0.25, "input_size": 48, "weights": "none"},
                      search={"input_sizes": [32, 48, 64], "alphas": [0.25], "dropouts": [0.2],
                              "epochs": 4, "retrain": False, **search})
    raw["train"] = {"batch_size": 8, "augment": [], "min_steps": 0}  # the scratch recipe, short
    raw["name"] = "colours"
    return raw


def _board(tmp_path: Path, ram: int) -> Path:
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump({"name": "tight", "core": "Cortex-M4F", "clock_mhz": 64,
                                    "flash_bytes": 1 << 20, "ram_bytes": ram,
                                    "cycles_per_mac": 4.0}))
    return path


def _ram(cfg, size: int) -> int:
    checker = FitChecker(cfg, _fake_board(), 3, "multiclass", None)
    return checker.check(Candidate("mobilenet_v1", 0.25, size, "rgb", 0.2, 1e-3))["ram"]


def _fake_board():
    from tinyvision.deploy.boards import Board

    return Board(name="big", core="x", clock_mhz=100, flash_bytes=1 << 30, ram_bytes=1 << 30,
                 cycles_per_mac=1.0)


def test_the_space_always_holds_the_configs_own_model(tmp_path):
    cfg = validate_config(_setup(tmp_path, input_sizes=[32], alphas=[0.5]))
    space = candidate_space(cfg)
    assert space["input_size"] == [32, 48] and space["alpha"] == [0.25, 0.5]
    assert own_candidate(cfg)["input_size"] == 48


def test_the_pareto_front_keeps_only_undominated_trials():
    rows = [{"objective": 0.9, "flash": 100, "latency_ms": 10},
            {"objective": 0.8, "flash": 120, "latency_ms": 12},  # dominated by the first
            {"objective": 0.95, "flash": 200, "latency_ms": 20},
            {"objective": 0.7, "flash": 50, "latency_ms": 30}]
    front = pareto_front(rows)
    assert [r["objective"] for r in front] == [0.95, 0.9, 0.7]


@pytest.mark.slow
def test_over_budget_candidates_are_pruned_before_training_and_the_best_fits(tmp_path):
    """On the demo's shapes with a tight board: the search returns a model that fits and is at
    least as accurate as the default configuration at equal or smaller size."""
    raw = _setup(tmp_path, demo=True, trials=6)
    cfg = validate_config(raw)
    ram48, ram64 = _ram(cfg, 48), _ram(cfg, 64)
    assert ram48 < ram64
    board = _board(tmp_path, (ram48 + ram64) // 2)  # 64x64 does not fit, 48 and 32 do
    result = search(cfg, str(board))
    assert result.trials >= 6 and result.pruned_over_budget >= 1
    rows = Registry(tmp_path / "runs").rows(filters=["study=colours"])
    trained = {r["name"] for r in rows}
    assert len(trained) == result.trials - result.pruned_over_budget  # no run for pruned ones
    assert all(r["input_size"] != "64x64" for r in rows)
    # the config's own model (48) is the first trial: the best is at least as accurate, and no
    # larger, since nothing larger fits
    own = next(r for r in result.rows if r["trial"] == 0)
    assert own["params"]["input_size"] == 48
    assert result.best["objective"] >= own["objective"]
    assert result.best["flash"] <= own["flash"] and result.best["ram"] <= (ram48 + ram64) // 2
    assert result.report.exists() and "Pareto front" in result.report.read_text()


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path):
    raw = _setup(tmp_path, input_sizes=[32], trials=4, epochs=2)
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(raw))
    board = _board(tmp_path, 1 << 20)
    storage = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    command = [sys.executable, "-m", "tinyvision.cli", "search", str(config), "--board", str(board),
               "--storage", storage, "--study", "shared", "--no-retrain"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0].decode() for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    import optuna

    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 4
    rows = Registry(tmp_path / "runs").rows(filters=["study=shared"])
    assert len({r["pid"] for r in rows}) == 2  # both processes trained trials of the study
    assert json.dumps(outputs).count("Pareto front") == 2


@pytest.mark.slow
def test_a_search_continues_its_study_and_retrains_the_best(tmp_path):
    """Run again with more trials, the same study goes on (a stopped search resumes); the best
    candidate is then retrained with the recipe, exported for the board and verified."""
    raw = _setup(tmp_path, input_sizes=[32], trials=1, epochs=2)
    board = _board(tmp_path, 1 << 20)
    first = search(validate_config(raw), str(board))
    assert first.trials == 1 and first.final is None
    raw["search"].update(trials=2, retrain=True)
    raw["train"]["budget"] = "2 epochs"  # the retrain's recipe, kept short here
    second = search(validate_config(raw), str(board))
    assert second.trials == 2 and second.completed == 2
    final = second.final
    assert final.status == "finished" and final.fit.board == "tight"
    assert final.fit.fits and final.int8_bytes > 0
    assert Path(final.run).name == "colours-best"
