"""Errors a user (or a damaged file) can cause are one line without a traceback, through the CLI:
bad board files, a corrupt verify.json, a registry of an unknown schema version, rich markup in
class names, a binary manifest, an output folder that cannot be made, a full disk, class folders
named in another encoding, a board with an infinite clock."""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest
import yaml
from helpers import handbuilt_run, make_class_folders, tiny_config
from typer.testing import CliRunner

from tinyvision.cli import app

runner = CliRunner()


def one_line_error(result, *parts: str) -> str:
    """The printed error of a command that failed cleanly (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "error:" in result.output, result.output
    text = " ".join(result.output.split())
    for part in parts:
        assert part in text, text
    return text


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    return handbuilt_run(tmp_path_factory.mktemp("fit"))[1]


@pytest.mark.slow
def test_fit_with_a_board_that_is_a_folder_empty_or_binary(fitted_run, tmp_path):
    binary = tmp_path / "board.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    infinite = tmp_path / "fast.yaml"
    infinite.write_text("name: fast\ncore: M7\nclock_mhz: .inf\nflash_bytes: 2097152\n"
                        "ram_bytes: 1048576\ncycles_per_mac: .inf\n")
    for board, words in ((str(tmp_path), "is a folder"), ("", "board name"),
                         (str(binary), "not a YAML text file"),
                         (str(infinite), "clock_mhz: Input should be a finite number")):
        one_line_error(runner.invoke(app, ["fit", str(fitted_run.root), "--board", board]),
                       words)


@pytest.mark.slow
def test_fit_with_a_corrupt_verify_json(fitted_run):
    saved = fitted_run.verify.read_bytes()
    try:
        for damaged in (b'{"app": {"arena_used', b"\xff\xfe\x00binary", b"[1, 2]"):
            fitted_run.verify.write_bytes(damaged)
            one_line_error(runner.invoke(app, ["fit", str(fitted_run.root), "--board",
                                               "stm32h743"]), "verify.json",
                           f"tinyvision verify {fitted_run.root}")
    finally:
        fitted_run.verify.write_bytes(saved)


def test_a_registry_of_an_unknown_schema_version(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with sqlite3.connect(runs / "registry.sqlite") as conn:
        conn.execute("PRAGMA user_version = -3")
    one_line_error(runner.invoke(app, ["runs", "--runs-dir", str(runs)]),
                   "schema version -3", "move it aside")


def test_runs_compare_prints_class_names_with_markup_literally(tmp_path):
    from tinyvision.run.registry import Registry

    registry = Registry(tmp_path)
    for name, f1 in (("a", 0.5), ("b", 0.75)):
        registry.start_run(name, tmp_path / name, {"model": {"backbone": "[bold]x"}})
        registry.finish_run(name, {"float": {"accuracy": f1, "per_class": {
            "[/]": {"f1": f1}, "[red]": {"f1": f1}}}})
    result = runner.invoke(app, ["runs", "compare", "a", "b", "--all", "--runs-dir",
                                 str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "float.per_class.[/].f1" in result.output and "[red]" in result.output


def test_data_inspect_with_a_binary_manifest_or_an_output_folder_it_cannot_make(tmp_path):
    binary = tmp_path / "manifest.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 20)
    one_line_error(runner.invoke(app, ["data", "inspect", str(binary)]), "manifest.jsonl",
                   "not a UTF-8 text file")
    root = make_class_folders(tmp_path / "images", per_class=3)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, tmp_path / "runs")))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    one_line_error(runner.invoke(app, ["data", "inspect", str(config), "--out",
                                       str(blocker / "inspect")]),
                   "Cannot create the output folder", str(blocker / "inspect"))


def test_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from tinyvision.data.manifest import Manifest

    root = make_class_folders(tmp_path / "images", per_class=3)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, tmp_path / "runs")))

    def full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Manifest, "save", full)
    one_line_error(runner.invoke(app, ["data", "build", str(config)]), "disk is full",
                   "manifest.jsonl")


def test_class_folders_named_in_another_encoding_fail_at_data_build(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=3, classes=("red", "green"))
    latin1 = os.fsdecode(b"caf\xe9")  # 'café' in Latin-1: not UTF-8
    (root / "red").rename(root / latin1)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(root, tmp_path / "runs")))
    text = one_line_error(runner.invoke(app, ["data", "build", str(config)]), "not valid UTF-8",
                          "rename")
    assert "caf" in text


def test_a_board_must_have_finite_numbers(tmp_path):
    from tinyvision.deploy.boards import load_board
    from tinyvision.errors import ExportError

    for key in ("clock_mhz", "cycles_per_mac"):
        board = {"name": "b", "core": "M7", "clock_mhz": 480, "flash_bytes": 1 << 21,
                 "ram_bytes": 1 << 20, "cycles_per_mac": 2.0, key: float("inf")}
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(board))
        with pytest.raises(ExportError, match=rf"{key}: Input should be a finite number"):
            load_board(path)
