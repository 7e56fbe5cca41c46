"""The typed records of a run folder (tinyvision/records.py): one to_json/from_json each, a
version readers check, nested records, and each key spelled in one place."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from tinyvision.errors import RunError
from tinyvision.records import (BoardFit, Evaluation, ExportResult, FitEstimate, ResumeState,
                                Summary, VerifyReport)

RECORDS = (Summary, Evaluation, VerifyReport, ExportResult, BoardFit, FitEstimate, ResumeState)
SRC = Path(__file__).resolve().parents[1] / "src" / "tinyvision"


def _fit() -> BoardFit:
    return BoardFit(board="stm32h743", title="STM32H743", core="Cortex-M7", clock_mhz=480.0,
                    basis="estimate", flash={"total": 400_000, "fits": True},
                    ram={"total": 250_000, "fits": True}, macs=7_000_000, cycles_per_mac=2.0,
                    latency_ms=29.2, latency_basis="macs", latency_note="estimate", fits=True,
                    advice=[])


def test_a_summary_round_trips_with_its_documented_keys_and_a_nested_fit(tmp_path):
    summary = Summary(run="runs/a", status="finished", task="multiclass", classes=["a", "b"],
                      images={"train": 8, "val": 2, "test": 2}, float_metrics={"accuracy": 0.9},
                      int8={"accuracy": 0.875}, int8_bytes=52_000, arena_bytes=9_000, fit=_fit())
    data = summary.to_json()
    assert data["version"] == Summary.VERSION
    assert data["float"] == {"accuracy": 0.9} and "float_metrics" not in data  # the file's key
    assert data["fit"]["board"] == "stm32h743" and "error" not in data  # None is left out
    summary.write(tmp_path / "summary.json")
    again = Summary.read(tmp_path / "summary.json")
    assert again == summary and isinstance(again.fit, BoardFit)
    assert Summary.read(tmp_path / "missing.json") is None


@pytest.mark.parametrize("record", RECORDS)
def test_another_version_is_refused_with_what_to_do(record, tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"version": record.VERSION + 1}))
    with pytest.raises(RunError, match=rf"version {record.VERSION + 1}.*newer tinyvision"):
        record.read(path)
    path.write_text(json.dumps({"version": 0}))
    with pytest.raises(RunError, match=re.escape(str(path))):
        record.read(path)


@pytest.mark.parametrize("content, message", [
    ("not json", "cannot be read"), ("[1, 2]", "holds a list"),
    ('{"version": 1, "status": "finished"}', "lacks run, task, classes, images")])
def test_a_damaged_file_is_one_error_naming_it(tmp_path, content, message):
    path = tmp_path / "summary.json"
    path.write_text(content)
    with pytest.raises(RunError, match=message) as caught:
        Summary.read(path)
    assert str(path) in str(caught.value) and "train the run again" in str(caught.value)


def test_a_file_written_before_versions_reads_as_version_1():
    old = {"run": "runs/a", "status": "finished", "task": "detection", "classes": ["r"],
           "images": {"train": 1}, "float": {"mean_iou": 0.6}}
    assert Summary.from_json(old).float_metrics == {"mean_iou": 0.6}


def test_each_record_key_is_spelled_in_one_place():
    """The quantities the records own are quoted nowhere else in the package: producers fill
    fields by name and readers use attributes. The registry's columns (registry.py, the `runs`
    table in cli/runs.py) are named after them on purpose; search sizes candidates in its own
    rows."""
    keys = {f.metadata.get("key", f.name) for record in RECORDS
            for f in dataclasses.fields(record)}
    from tinyvision.deploy.boards import Board
    from tinyvision.run.folder import RunDir

    # a board profile's fields and the run folder's files have names of their own
    other_names = set(Board.model_fields) | {name for name in dir(RunDir)
                                             if isinstance(getattr(RunDir, name), property)}
    distinctive = sorted(k for k in keys if "_" in k and k not in other_names)
    allowed = {"run/registry.py", "cli/runs.py", "run/search.py"}
    found = {}
    for path in SRC.rglob("*.py"):
        name = path.relative_to(SRC).as_posix()
        if name == "records.py" or name in allowed:
            continue
        text = path.read_text()
        for key in distinctive:
            if re.search(rf"[\"']{key}[\"']", text):
                found.setdefault(key, []).append(name)
    assert found == {}


def test_the_console_says_when_the_start_check_switched_the_recipe():
    from tinyvision.cli.train import _recipe

    summary = Summary(run="r", status="finished", task="multiclass", classes=["a"], images={},
                      recipe="pretrained", start={"decision": "switched", "useful": True})
    assert _recipe(summary) == "pretrained (switched by the start check)"
    summary.start = {"decision": "kept"}
    assert _recipe(summary) == "pretrained"
