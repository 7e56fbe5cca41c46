"""`tinyvision train` end to end from a COCO instances file (multi-label presence with a negative
class) and from a Pascal VOC folder (largest object, cropped for a classifier)."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from helpers import tiny_config
from helpers import square_images, voc_xml, write_coco, write_png
from tinyvision.cli import app

pytestmark = pytest.mark.slow


def run_train(tmp_path, source: dict, **data) -> dict:
    raw = tiny_config(tmp_path, tmp_path / "runs")
    raw["data"].update(source=source, **data)
    raw["train"]["fine_tune"]["epochs"] = 1
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny"
    return {"summary": json.loads((run / "summary.json").read_text()),
            "manifest": (run / "manifest.jsonl").read_text().splitlines()}


def test_train_from_coco_presence_labels(tmp_path):
    images = square_images(40, size=64)
    annotations = []
    for i in range(40):
        if i % 4 in (0, 1):
            annotations.append((i, "person", [5, 5, 30, 40]))
        if i % 4 in (1, 2):
            annotations.append((i, "car", [20, 30, 40, 30]))
        if i % 4 == 3:
            annotations.append((i, "dog", [10, 10, 20, 20]))
    folder = tmp_path / "coco"
    write_coco(folder, images, annotations)
    out = run_train(tmp_path, {"format": "coco", "annotations": str(folder / "instances.json"),
                               "images": str(folder / "images"), "classes": ["person", "car"],
                               "negative": {}})
    header = json.loads(out["manifest"][0])
    assert header["task"] == "multilabel" and set(header["classes"]) == {"person", "car", "negative"}
    assert out["summary"]["task"] == "multilabel"
    assert out["summary"]["arena_bytes"] > 0


def test_train_from_voc_largest_object_cropped(tmp_path):
    voc = tmp_path / "voc"
    for i in range(36):
        name = ["cat", "dog", "bird"][i % 3]
        write_png(voc / "images" / f"{i}.png", (80, 60), ((i * 7) % 255, 90, 160))
        objects = [(name, (10, 10, 50, 40)), ("cat", (60, 40, 70, 50))]  # the small one is ignored
        (voc / "annotations").mkdir(parents=True, exist_ok=True)
        (voc / "annotations" / f"{i}.xml").write_text(voc_xml(f"{i}.png", (80, 60), objects))
    raw_source = {"format": "voc", "root": str(voc), "mode": "largest"}
    out = run_train(tmp_path, raw_source, crop_to_box=True)
    header = json.loads(out["manifest"][0])
    assert header["task"] == "multiclass" and set(header["classes"]) == {"cat", "dog", "bird"}
    rows = [json.loads(line) for line in out["manifest"][1:]]
    assert all(row["box"] == [9.0, 9.0, 50.0, 40.0] for row in rows)  # VOC corners are 1-based
