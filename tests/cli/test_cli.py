import json

import pytest
import yaml
from typer.testing import CliRunner

from helpers import make_class_folders, tiny_config
from tinyvision.cli import app
from tinyvision.run.folder import new_run_dir
from tinyvision.errors import RunError

runner = CliRunner()
COMMANDS = ["train", "eval", "export", "verify", "demo", "data", "runs", "lr-find", "predict", "report"]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: tinyvision" in result.output and len(result.output.split()) > 20


def test_config_error_is_one_message_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": {"format": "folder", "root": str(tmp_path)}},
                                      "train": {"batch_sise": 8}}))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 1
    assert "Did you mean 'batch_size'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # failed before any work


def test_bad_override_fails_before_any_work(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path / "runs")))
    result = runner.invoke(app, ["train", str(config), "model.color_mode=cmyk"])
    assert result.exit_code == 1 and "model.color_mode" in result.output and "cmyk" in result.output
    assert not (tmp_path / "runs").exists()


def test_taken_run_names_get_a_suffix_unless_overwrite(tmp_path):
    first, second = new_run_dir(tmp_path, "exp"), new_run_dir(tmp_path, "exp")
    (first.root / "keep.txt").write_text("earlier run")
    assert (first.name, second.name) == ("exp", "exp-2")
    assert new_run_dir(tmp_path, "exp").name == "exp-3"
    assert (first.root / "keep.txt").exists()
    again = new_run_dir(tmp_path, "exp", overwrite=True)
    assert again.root == first.root and not (first.root / "keep.txt").exists()
    with pytest.raises(RunError, match="not allowed"):
        new_run_dir(tmp_path, "../escape")


@pytest.mark.slow
def test_train_command_end_to_end_then_stage_commands(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=10)
    config = tmp_path / "run.yaml"
    raw = tiny_config(root, tmp_path / "runs")
    raw["train"]["fine_tune"]["epochs"] = 1
    config.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["train", str(config), "name=cli", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "int8 on TFLM" in result.output and "tensor arena bytes" in result.output
    run = tmp_path / "runs" / "cli"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["int8_bytes"] == (run / "export" / "model_int8.tflite").stat().st_size

    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 0 and "macro" in result.output and "confusion matrix" in result.output
    result = runner.invoke(app, ["verify", str(run)])
    assert result.exit_code == 0 and "identically" in result.output
    result = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "cli" in result.output and "finished" in result.output


def test_stage_command_on_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 1 and "not a run directory" in result.output
