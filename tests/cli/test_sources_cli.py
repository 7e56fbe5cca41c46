"""`tinyvision data build|inspect|download` through typer's test runner (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from helpers import square_images, write_coco
from tinyvision.cli.data import data_app
from tinyvision.data.manifest import Manifest

runner = CliRunner()


def coco_config(tmp_path: Path) -> Path:
    annotations = [(i, "person", [0, 0, 40, 40]) for i in range(10)]
    annotations += [(i, "car", [0, 0, 40, 40]) for i in range(10, 20)]
    annotations += [(i, "dog", [0, 0, 40, 40]) for i in range(20, 30)]
    write_coco(tmp_path / "coco", square_images(30), annotations)
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  source:\n    format: coco\n    annotations: coco/instances.json\n"
                      "    images: coco/images\n    classes: [person, car]\n    negative: true\n")
    return config


def test_build_writes_manifest_and_prints_counts(tmp_path):
    config = coco_config(tmp_path)
    result = runner.invoke(data_app, ["build", str(config), "data.source.max_per_class=8"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(tmp_path / "manifest.jsonl")
    assert manifest.classes == ["person", "car", "negative"]
    assert len(manifest) == 24  # 8 + 8 capped, 8 negatives (as many as the largest class)
    assert "negative" in result.output and "train" in result.output and "Wrote" in result.output


def test_build_errors_are_one_red_message_and_exit_1(tmp_path):
    config = coco_config(tmp_path)
    result = runner.invoke(data_app, ["build", str(config), "data.source.classes=[persn]"])
    assert result.exit_code == 1
    assert "unknown category name(s) 'persn'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(data_app, ["build", str(config), "data.source.min_aera=0.1"])
    assert result.exit_code == 1 and "Did you mean 'min_area'" in result.output


def test_inspect_a_config_and_a_manifest(tmp_path):
    config = coco_config(tmp_path)
    result = runner.invoke(data_app, ["inspect", str(config), "--samples", "6"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run_inspect" / "grid.png").is_file()
    assert "images showing both classes" in result.output
    runner.invoke(data_app, ["build", str(config), "--out", str(tmp_path / "m.jsonl")])
    result = runner.invoke(data_app, ["inspect", str(tmp_path / "m.jsonl"), "-o",
                                      str(tmp_path / "look")])
    assert result.exit_code == 0 and (tmp_path / "look" / "summary.json").is_file()


def test_download_rejects_unknown_dataset(tmp_path):
    result = runner.invoke(data_app, ["download", "imagenet", "--classes", "person"])
    assert result.exit_code != 0 and "unknown dataset 'imagenet'" in result.output
