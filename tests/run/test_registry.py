"""The run registry: two runs and a failed run, concurrent finishes, compare, CSV, the CLI."""

from __future__ import annotations

import csv
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tinyvision.cli.runs import runs_app
from tinyvision.config import validate_config
from tinyvision.errors import RegistryError
from tinyvision.run.registry import ABSENT, COLUMNS, SCHEMA_VERSION, Registry, config_hash


def _config(tmp_path: Path, name: str, **model) -> dict:
    raw = {"name": name, "data": {"source": {"format": "folder", "root": str(tmp_path / "images")}},
           "model": model}
    return validate_config(raw).model_dump(mode="json")


def _metrics(accuracy: float, macro_f1: float) -> dict:
    return {"float": {"accuracy": accuracy, "macro_f1": macro_f1,
                      "per_class": {"cat": {"f1": macro_f1}}},
            "int8": {"accuracy": accuracy - 0.01, "macro_f1": macro_f1 - 0.02},
            "int8_bytes": 120_000, "arena_bytes": np.int64(64_000), "macs": 7_500_000}


@pytest.fixture
def registry(tmp_path) -> Registry:
    """Runs `base` (alpha 0.25), `wide` (alpha 0.5, better) and `broken` (failed)."""
    reg = Registry(tmp_path / "runs")
    reg.start_run("base", tmp_path / "runs" / "base", _config(tmp_path, "base"))
    reg.start_run("wide", tmp_path / "runs" / "wide", _config(tmp_path, "wide", alpha=0.5))
    reg.start_run("broken", tmp_path / "runs" / "broken", _config(tmp_path, "broken"))
    reg.finish_run("base", _metrics(0.90, 0.88))
    reg.finish_run("wide", _metrics(0.95, 0.93))
    reg.fail_run("broken", "DataError: no images in images/")
    return reg


def test_two_runs_and_a_failed_run(registry, tmp_path):
    rows = {r["name"]: r for r in registry.rows()}
    assert [r["name"] for r in registry.rows()] == ["base", "wide", "broken"]
    base = rows["base"]
    assert base["status"] == "finished" and base["error"] is None
    assert base["run_dir"] == str(tmp_path / "runs" / "base")
    assert (base["backbone"], base["alpha"], base["input_size"], base["color_mode"]) == \
        ("mobilenet_v1", 0.25, "96x96", "auto")  # the config as given (a run resolves auto)
    assert (base["weights"], base["batch_size"], base["head_epochs"], base["fine_tune_lr"]) == \
        ("imagenet", 64, 10, 1e-4)
    assert (base["float_accuracy"], base["float_macro_f1"]) == (0.90, 0.88)
    assert (base["int8_accuracy"], base["int8_macro_f1"]) == pytest.approx((0.89, 0.86))
    assert (base["int8_bytes"], base["arena_bytes"], base["macs"]) == (120_000, 64_000, 7_500_000)
    assert base["started"] <= base["finished"] and base["duration_s"] >= 0
    broken = rows["broken"]
    assert broken["status"] == "failed" and broken["error"] == "DataError: no images in images/"
    assert broken["float_accuracy"] is None and broken["finished"] is not None
    assert rows["base"]["config_hash"] == rows["broken"]["config_hash"]  # same config, other name
    assert rows["base"]["config_hash"] != rows["wide"]["config_hash"]
    stored = registry.get("base")
    assert stored["config"]["model"]["alpha"] == 0.25
    assert stored["metrics"]["arena_bytes"] == 64_000
    assert registry.get("broken")["metrics"] is None


def test_sort_and_filter(registry):
    names = lambda **kw: [r["name"] for r in registry.rows(**kw)]  # noqa: E731
    assert names(sort="-float_accuracy") == ["wide", "base", "broken"]  # empty values last
    assert names(sort="float_accuracy") == ["base", "wide", "broken"]
    assert names(filters={"status": "failed"}) == ["broken"]
    assert names(filters=["float_accuracy>=0.92"]) == ["wide"]
    assert names(filters=["alpha=0.25", "status!=failed"]) == ["base"]
    assert names(filters=["name=b*"]) == ["base", "broken"]
    assert names(filters=["input_size=96x96"]) == ["base", "wide", "broken"]
    with pytest.raises(RegistryError, match="Did you mean 'float_accuracy'"):
        registry.rows(sort="float_acuracy")
    with pytest.raises(RegistryError, match="must look like COLUMN=VALUE"):
        registry.rows(filters=["alpha"])
    with pytest.raises(RegistryError, match="alpha holds numbers"):
        registry.rows(filters=["alpha=wide"])


def test_compare(registry):
    changes, deltas = registry.compare("base", "wide")
    assert changes == [("model.alpha", 0.25, 0.5)]  # name and runs_dir are not differences
    by_key = {d.key: d for d in deltas}
    assert deltas[0].key == "float.accuracy"  # the registry's own metrics first
    assert by_key["float.accuracy"].delta == pytest.approx(0.05)
    assert by_key["float.per_class.cat.f1"].delta == pytest.approx(0.05)
    assert by_key["int8_bytes"].delta == 0
    _, no_metrics = registry.compare("base", "broken")
    assert no_metrics == []
    with pytest.raises(RegistryError, match="No run named 'wid'.*Did you mean 'wide'"):
        registry.compare("base", "wid")


def test_compare_shows_keys_only_one_config_has(tmp_path):
    reg = Registry(tmp_path)
    reg.start_run("a", tmp_path / "a", {"model": {"alpha": 0.25}})
    reg.start_run("b", tmp_path / "b", {"model": {"alpha": 0.25, "dropout": 0.2}})
    assert reg.compare("a", "b")[0] == [("model.dropout", ABSENT, 0.2)]


def test_finish_with_workflow_summary(tmp_path):
    reg = Registry(tmp_path)
    reg.start_run("r", tmp_path / "r", {})
    summary = {"float": {"accuracy": 0.9, "macro_f1": 0.8}, "int8": {"accuracy": 0.88,
               "macro_f1": 0.79}, "int8_bytes": 50_000, "float_bytes": 200_000, "arena_bytes": 9}
    reg.finish_run("r", summary)
    row = reg.rows()[0]
    assert (row["int8_accuracy"], row["int8_macro_f1"], row["int8_bytes"]) == (0.88, 0.79, 50_000)


def test_restart_replaces_row_and_unknown_run(registry, tmp_path):
    registry.start_run("base", tmp_path / "runs" / "base", _config(tmp_path, "base"))
    row = next(r for r in registry.rows() if r["name"] == "base")
    assert row["status"] == "running" and row["float_accuracy"] is None
    assert len(registry.rows()) == 3
    with pytest.raises(RegistryError, match="No run named 'bas'.*Did you mean 'base'"):
        registry.finish_run("bas", {})
    with pytest.raises(RegistryError, match="status='done'"):
        registry.finish_run("base", {}, status="done")
    with pytest.raises(RegistryError, match="metrics as a dict"):
        registry.finish_run("base", [0.9])


def test_to_csv(registry, tmp_path):
    path = tmp_path / "selection.csv"
    assert registry.to_csv(path, sort="-float_accuracy", filters=["status=finished"]) == 2
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["name"], r["float_accuracy"]) for r in rows] == [("wide", "0.95"), ("base", "0.9")]


def test_schema_version_and_wal(tmp_path):
    reg = Registry(tmp_path)
    with sqlite3.connect(reg.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RegistryError, match="schema version 99, newer .* upgrade tinyvision"):
        Registry(tmp_path)
    with pytest.raises(RegistryError, match="No run registry at .*--runs-dir"):
        Registry(tmp_path / "elsewhere", create=False)


def test_config_hash_ignores_name_and_runs_dir(tmp_path):
    one = _config(tmp_path, "one")
    assert config_hash(one) == config_hash({**one, "name": "two", "runs_dir": "/elsewhere"})
    assert config_hash(one) != config_hash(_config(tmp_path, "one", dropout=0.3))


# ---- concurrency -----------------------------------------------------------------------------
RUNS_PER_PROCESS = 12


def _start_and_finish(runs_dir: str, prefix: str, barrier) -> None:
    """A process that starts runs, waits for the other, then finishes them all at once."""
    reg = Registry(runs_dir)
    for i in range(RUNS_PER_PROCESS):
        reg.start_run(f"{prefix}-{i}", Path(runs_dir) / f"{prefix}-{i}", {"model": {"alpha": i}})
    barrier.wait()
    for i in range(RUNS_PER_PROCESS):
        reg.finish_run(f"{prefix}-{i}", {"float": {"accuracy": i / 100}})


def test_two_processes_finishing_together_both_land(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_start_and_finish, args=(str(tmp_path), p, barrier))
               for p in ("left", "right")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    rows = Registry(tmp_path).rows()
    assert len(rows) == 2 * RUNS_PER_PROCESS
    assert all(r["status"] == "finished" and r["float_accuracy"] is not None for r in rows)


def _hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def test_write_retries_while_another_process_holds_the_lock(tmp_path):
    patient = Registry(tmp_path, timeout=0.05, retries=10)
    patient.start_run("a", tmp_path / "a", {})
    locked = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(patient.path, 0.4, locked))
    holder.start()
    locked.wait()
    patient.finish_run("a", {"float": {"accuracy": 0.5}})  # busy at first, lands on a retry
    holder.join()
    assert patient.rows()[0]["float_accuracy"] == 0.5

    impatient = Registry(tmp_path, timeout=0.05, retries=1)
    locked.clear()
    holder = threading.Thread(target=_hold_write_lock, args=(patient.path, 0.4, locked))
    holder.start()
    locked.wait()
    with pytest.raises(RegistryError, match="stayed locked through 1 attempts"):
        impatient.fail_run("a", "boom")
    holder.join()


# ---- CLI -------------------------------------------------------------------------------------
def _invoke(*args: str):
    return CliRunner().invoke(runs_app, list(args))


def test_cli_lists_sorts_filters_and_exports(registry, tmp_path):
    runs_dir = str(tmp_path / "runs")
    result = _invoke("--runs-dir", runs_dir, "--sort", "-float_accuracy")
    assert result.exit_code == 0, result.output
    assert result.output.index("wide") < result.output.index("base") < result.output.index("broken")
    assert "broken failed: DataError: no images in images/" in result.output
    assert "0.9500" in result.output and "mobilenet_v1 0.5" in result.output
    csv_path = tmp_path / "out.csv"
    result = _invoke("--runs-dir", runs_dir, "--filter", "status=finished", "--filter",
                     "alpha>0.3", "--csv", str(csv_path))
    assert result.exit_code == 0, result.output
    assert "wide" in result.output and "base" not in result.output
    assert [r["name"] for r in csv.DictReader(csv_path.open())] == ["wide"]
    assert "No runs match." in _invoke("--runs-dir", runs_dir, "-f", "alpha>9").output


def test_cli_compare(registry, tmp_path):
    runs_dir = str(tmp_path / "runs")
    for args in (("--runs-dir", runs_dir, "compare", "base", "wide"),
                 ("compare", "base", "wide", "--runs-dir", runs_dir)):
        result = _invoke(*args)
        assert result.exit_code == 0, result.output
        assert "model.alpha" in result.output and "+0.05" in result.output
        assert "per_class" not in result.output
    assert "float.per_class.cat.f1" in _invoke("--runs-dir", runs_dir, "compare", "base", "wide",
                                               "--all").output


def test_cli_errors_are_one_line_without_traceback(registry, tmp_path):
    result = _invoke("--runs-dir", str(tmp_path / "runs"), "compare", "base", "nope")
    assert result.exit_code == 1
    assert "error: No run named 'nope'" in result.output and "Traceback" not in result.output
    result = _invoke("--runs-dir", str(tmp_path / "runs"), "--sort", "acc")
    assert result.exit_code == 1 and "Unknown sort column 'acc'" in result.output
    result = _invoke("--runs-dir", str(tmp_path / "empty"))
    assert result.exit_code == 1 and "No run registry at" in result.output


def _old_registry(tmp_path, version: int, column: str, value: float, added=()) -> Path:
    """A registry file as version 1 (plus `added` columns) wrote it, holding one finished run
    'old' with `column` = `value`."""
    from tinyvision.run.registry import _MIGRATIONS

    path = tmp_path / "runs" / "registry.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        for statement in _MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute(f"INSERT INTO runs (name, run_dir, status, started, config_hash, {column}, "
                     "config_json) VALUES ('old', 'runs/old', 'finished', "
                     f"'2026-01-01T00:00:00', 'abc', {value}, '{{}}')")
        for added_column in added:
            conn.execute(f"ALTER TABLE runs ADD COLUMN {added_column}")
        conn.execute(f"PRAGMA user_version = {version}")
    return path


def test_a_version_1_registry_is_migrated_with_its_rows(tmp_path):
    """A registry written before recipes and export_failed existed keeps its runs, and takes the
    new statuses and columns."""
    path = _old_registry(tmp_path, 1, "float_accuracy", 0.75)
    registry = Registry(tmp_path / "runs")
    old = registry.get("old")
    assert (old["status"], old["float_accuracy"], old["recipe"], old["warnings"]) == \
        ("finished", 0.75, None, None)
    registry.start_run("new", tmp_path / "runs" / "new", _config(tmp_path, "new"))
    registry.fail_run("new", "ExportError: refused", metrics={"float": {"accuracy": 0.5},
                      "warnings": [{"code": "collapse", "message": "..."}]},
                      status="export_failed")
    new = registry.get("new")
    assert (new["status"], new["float_accuracy"], new["warnings"]) == \
        ("export_failed", 0.5, "collapse")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    with pytest.raises(RegistryError, match="failed status"):
        registry.fail_run("new", "x", status="finished")


def test_a_version_2_registry_gains_the_fit_columns(tmp_path):
    """Version 2's table, written out as it was, keeps its rows and takes board, flash_bytes,
    ram_bytes, fits and latency_ms from summary.json's fit."""
    _old_registry(tmp_path, 2, "int8_accuracy", 0.5,  # version 2's extra columns
                  added=("recipe TEXT", "warnings TEXT", "pid INTEGER", "host TEXT"))
    registry = Registry(tmp_path / "runs")
    assert registry.get("old")["int8_accuracy"] == 0.5 and registry.get("old")["board"] is None
    registry.start_run("fit", tmp_path / "runs" / "fit", _config(tmp_path, "fit"))
    registry.finish_run("fit", {"fit": {"board": "stm32h743", "flash": {"total": 400000},
                                        "ram": {"total": 250000}, "fits": True,
                                        "latency_ms": 31.5}})
    row = registry.get("fit")
    assert (row["board"], row["flash_bytes"], row["ram_bytes"], row["fits"], row["latency_ms"]) \
        == ("stm32h743", 400000, 250000, 1, 31.5)


def test_a_version_3_registry_gains_the_box_columns_and_a_new_file_has_them(tmp_path):
    """Version 3's table (as its migration made it) keeps its rows and takes the box metrics;
    a new file runs every migration and ends with the same columns (a migration that built
    today's table would make version 4's ADD COLUMN fail there)."""
    from tinyvision.run.registry import _MIGRATIONS

    path = tmp_path / "old" / "registry.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        for version in (1, 2, 3):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO runs (name, run_dir, status, started, config_hash, board, "
                     "config_json) VALUES ('old', 'runs/old', 'finished', '2026-01-01T00:00:00', "
                     "'abc', 'stm32h743', '{}')")
        conn.execute("PRAGMA user_version = 3")
    registry = Registry(tmp_path / "old")
    assert registry.get("old")["board"] == "stm32h743" and registry.get("old")["int8_iou50"] is None
    registry.start_run("box", tmp_path / "old" / "box", _config(tmp_path, "box"))
    registry.finish_run("box", {"float": {"mean_iou": 0.61, "accuracy_iou50": 0.7},
                                "int8": {"mean_iou": 0.6, "accuracy_iou50": 0.69}})
    row = registry.get("box")
    assert (row["float_mean_iou"], row["float_iou50"], row["int8_mean_iou"], row["int8_iou50"]) \
        == (0.61, 0.7, 0.6, 0.69)
    fresh = Registry(tmp_path / "new")
    with sqlite3.connect(fresh.path) as new, sqlite3.connect(path) as migrated:
        columns = [[r[1] for r in conn.execute("PRAGMA table_info(runs)")]
                   for conn in (new, migrated)]
    assert columns[0] == columns[1] and "int8_mean_iou" in columns[0]


def test_a_version_4_registry_gains_the_fit_basis_and_instructions(tmp_path):
    """Version 4's table keeps its rows and takes fit_basis and instructions: whether the board
    figures were measured on the firmware (and its instruction count) or estimated."""
    from tinyvision.run.registry import _MIGRATIONS

    path = tmp_path / "old" / "registry.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        for version in (1, 2, 3, 4):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO runs (name, run_dir, status, started, config_hash, latency_ms, "
                     "config_json) VALUES ('old', 'runs/old', 'finished', '2026-01-01T00:00:00', "
                     "'abc', 31.2, '{}')")
        conn.execute("PRAGMA user_version = 4")
    registry = Registry(tmp_path / "old")
    assert registry.get("old")["latency_ms"] == 31.2 and registry.get("old")["fit_basis"] is None
    for name, fit in (("measured", {"basis": "measured", "latency_ms": 12.4,
                                    "firmware": {"instructions": 29_290_400}}),
                      ("estimated", {"basis": "estimate", "latency_ms": 31.2})):
        registry.start_run(name, tmp_path / "old" / name, _config(tmp_path, name))
        registry.finish_run(name, {"fit": fit})
    assert (registry.get("measured")["fit_basis"], registry.get("measured")["instructions"]) == \
        ("measured", 29_290_400)
    assert (registry.get("estimated")["fit_basis"], registry.get("estimated")["instructions"]) \
        == ("estimate", None)


def test_a_version_5_registry_calls_the_model_size_int8_bytes(tmp_path):
    """One name per quantity: version 5's model_bytes column becomes int8_bytes (summary.json's
    name), keeping its values, and new runs fill it from summary.json."""
    from tinyvision.run.registry import _MIGRATIONS

    path = tmp_path / "old" / "registry.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        for version in range(1, 6):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO runs (name, run_dir, status, started, config_hash, model_bytes, "
                     "config_json) VALUES ('old', 'runs/old', 'finished', '2026-01-01T00:00:00', "
                     "'abc', 301000, '{}')")
        conn.execute("PRAGMA user_version = 5")
    registry = Registry(tmp_path / "old")
    assert registry.get("old")["int8_bytes"] == 301000 and "model_bytes" not in registry.get("old")
    registry.start_run("new", tmp_path / "old" / "new", _config(tmp_path, "new"))
    registry.finish_run("new", {"int8_bytes": 52_000})
    assert [r["int8_bytes"] for r in registry.rows(filters=["int8_bytes<100000"])] == [52_000]
