"""What a run folder may cause on the user's machine, through the CLI (docs/security.md): verify
runs no build file and no TFLM tree of the run's own; runs train into a folder with a space;
`overwrite: true` replaces only a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import fake_tflm_tree, handbuilt_run, make_class_folders, tiny_config
from typer.testing import CliRunner

from tinyvision.cli import app
from tinyvision.deploy import tflm_build

runner = CliRunner()


@pytest.fixture
def user_tree(tmp_path, monkeypatch) -> Path:
    """The user's own (stand-in) TFLM tree, its library cache under tmp_path."""
    monkeypatch.setenv(tflm_build.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(tflm_build.SOURCE_ENV, raising=False)
    return fake_tflm_tree(tmp_path / "tflm")


def _plant(run_root: Path, marker: Path) -> None:
    """A TFLM tree inside the run folder, named by a relative verify.tflm_source in its
    config.yaml, and a Makefile and main.cc of its own in export/app: each would touch `marker`
    (or a file beside it) if tinyvision ran it."""
    evil = run_root / "evil"
    (evil / "tensorflow").mkdir(parents=True)
    (evil / "build.sh").write_text(f"#!/bin/sh\ntouch {marker}-build.sh\n")
    (evil / "build.sh").chmod(0o755)
    (evil / "tflm_flags.mk").write_text(f"$(shell touch {marker}-flags.mk)\n")
    config = yaml.safe_load((run_root / "config.yaml").read_text())
    config["verify"]["tflm_source"] = "evil"
    (run_root / "config.yaml").write_text(yaml.safe_dump(config))
    app_dir = run_root / "export" / "app"
    (app_dir / "Makefile").write_text(f"all:\n\ttouch {marker}-Makefile\n")
    (app_dir / "main.cc").write_text(f'int main() {{ return system("touch {marker}-main"); }}\n')


def _planted(marker: Path) -> list[str]:
    return sorted(p.name for p in marker.parent.glob(f"{marker.name}-*"))


def test_verify_runs_no_build_file_and_no_tree_of_the_run_folder(tmp_path, user_tree,
                                                                  monkeypatch):
    _, run, _, _ = handbuilt_run(tmp_path)
    marker = tmp_path / "PWNED"
    _plant(run.root, marker)
    result = runner.invoke(app, ["verify", str(run.root)])
    assert result.exit_code == 0, result.output
    assert _planted(marker) == []
    output = " ".join(result.output.split())
    assert "compiled TFLM application not checked" in output
    assert "verify.tflm_source" in output and "--trust-model-code" in output

    # the user's own tree: the application is compiled from files written afresh, and checked
    result = runner.invoke(app, ["verify", str(run.root), "--tflm-source", str(user_tree)])
    assert result.exit_code == 0, result.output
    assert "input tensors and output bytes equal the Python path's" in " ".join(
        result.output.split())
    assert _planted(marker) == []
    compiled = [json.loads(line) for line in (user_tree / "compiled.jsonl").read_text().splitlines()]
    assert compiled and not any(Path(c["cwd"]).is_relative_to(run.root) for c in compiled)
    assert json.loads(run.verify.read_text())["app"]["tflm_source"] == str(user_tree)

    # the same from $TINYVISION_TFLM_SOURCE
    monkeypatch.setenv(tflm_build.SOURCE_ENV, str(user_tree))
    result = runner.invoke(app, ["verify", str(run.root)])
    assert result.exit_code == 0 and _planted(marker) == []
    # only consent on the command uses the run's own tree (whose build.sh then runs)
    monkeypatch.delenv(tflm_build.SOURCE_ENV)
    runner.invoke(app, ["verify", str(run.root), "--trust-model-code"])
    assert "PWNED-build.sh" in _planted(marker)


@pytest.mark.slow
def test_a_run_trains_and_verifies_into_a_folder_with_a_space(tmp_path, user_tree, monkeypatch):
    """The whole of `tinyvision train`, the compiled application included, into `runs dir/`."""
    root = make_class_folders(tmp_path / "images", per_class=8)
    raw = tiny_config(root, tmp_path / "runs dir", verify={"tflm_samples": 3, "app_frames": 3})
    raw["train"]["fine_tune"]["epochs"] = 1
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv(tflm_build.SOURCE_ENV, str(user_tree))
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs dir" / "tiny" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["app"]["checked"]
    assert summary["app"]["inputs_equal"] and summary["app"]["outputs_equal"]


@pytest.mark.slow
def test_overwrite_replaces_a_run_folder_and_nothing_else(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=8)
    raw = tiny_config(root, tmp_path / "runs", overwrite=True)
    raw["train"]["fine_tune"]["epochs"] = 1
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    thesis = tmp_path / "runs" / "tiny"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "chapters" / "one.tex").write_text("years of work")
    (thesis / "config.yaml").write_text("title: my thesis\n")  # a config.yaml of another tool
    result = runner.invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"{thesis} exists and is not a tinyvision run folder" in output
    assert (thesis / "chapters" / "one.tex").read_text() == "years of work"
    assert sorted(p.name for p in thesis.iterdir()) == ["chapters", "config.yaml"]

    link = tmp_path / "runs" / "linked"  # a link to a folder elsewhere is not replaced either
    link.symlink_to(thesis / "chapters")
    result = runner.invoke(app, ["train", str(config), "--quiet", "name=linked"])
    assert result.exit_code == 1 and "symbolic link" in " ".join(result.output.split())
    assert (thesis / "chapters" / "one.tex").exists()

    # a run folder is replaced: the second run of the same name starts from an empty folder
    result = runner.invoke(app, ["train", str(config), "--quiet", "name=mine"])
    assert result.exit_code == 0, result.output
    (tmp_path / "runs" / "mine" / "note.txt").write_text("left by the first run")
    result = runner.invoke(app, ["train", str(config), "--quiet", "name=mine"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs" / "mine" / "note.txt").exists()
    assert (tmp_path / "runs" / "mine" / "summary.json").is_file()
