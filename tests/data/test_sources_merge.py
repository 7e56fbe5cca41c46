"""Merging sources: class maps, de-duplication by path and by content, task and class checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import square_images, write_coco, write_png
from tinyvision.config import DataConfig, load_config
from tinyvision.data.sources import build_manifest, load_source
from tinyvision.errors import DataError


def merged(*inputs, **options) -> DataConfig:
    return DataConfig.model_validate({"source": {"format": "merge", "inputs": list(inputs),
                                                 **options}})


def csv_input(path: Path, text: str, **class_map) -> dict:
    path.write_text(text)
    item = {"source": {"format": "csv", "path": str(path)}}
    if class_map:
        item["class_map"] = class_map
    return item


@pytest.fixture
def coco_input(tmp_path: Path) -> dict:
    annotations = [(0, "person", [0, 0, 40, 40]), (1, "car", [0, 0, 40, 40]),
                   (2, "dog", [0, 0, 40, 40])]
    path = write_coco(tmp_path / "coco", square_images(3), annotations)
    return {"source": {"format": "coco", "annotations": str(path),
                       "images": str(tmp_path / "coco" / "images"),
                       "classes": ["person", "car"], "negative": True}}


@pytest.fixture
def car_folders(tmp_path: Path) -> Path:
    """A Stanford-Cars-like folder: one folder per car model."""
    for m, model in enumerate(("audi_a4", "bmw_x5")):
        for i in range(2):
            write_png(tmp_path / "cars" / model / f"{model}_{i}.png", (60, 40), (i * 40, m, 10))
    return tmp_path / "cars"


def names(manifest) -> dict[str, tuple]:
    return {Path(s.path).name: s.labels for s in manifest.samples}


def test_folder_of_car_models_merged_into_coco_car(coco_input, car_folders):
    data = merged(coco_input, {"source": {"format": "folder", "root": str(car_folders)},
                               "class_map": {"*": "car"}})
    manifest = load_source(data)
    assert manifest.classes == ["person", "car", "negative"] and manifest.task == "multilabel"
    assert names(manifest) == {"img000.png": ("person",), "img001.png": ("car",),
                               "img002.png": ("negative",), "audi_a4_0.png": ("car",),
                               "audi_a4_1.png": ("car",), "bmw_x5_0.png": ("car",),
                               "bmw_x5_1.png": ("car",)}


def test_same_path_in_two_sources_is_one_sample_with_both_labels(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png", colour=(1, 2, 3))
    first = csv_input(tmp_path / "one.csv", "a.png,cat\nb.png,cat\n")
    second = csv_input(tmp_path / "two.csv", "path,label,split\na.png,dog,val\n")
    manifest = load_source(merged(first, second))
    assert manifest.task == "multilabel" and manifest.classes == ["cat", "dog"]
    assert {Path(s.path).name: (s.labels, s.split) for s in manifest.samples} == {
        "a.png": (("cat", "dog"), "val"), "b.png": (("cat",), "")}


def test_same_bytes_under_another_name_is_a_duplicate(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "other.png", colour=(9, 9, 9))  # same size on disk, other bytes
    shutil.copy(tmp_path / "a.png", tmp_path / "copy_of_a.png")
    first = csv_input(tmp_path / "one.csv", "a.png,cat\nother.png,cat\n")
    second = csv_input(tmp_path / "two.csv", "copy_of_a.png,dog\n")
    by_content = names(load_source(merged(first, second)))
    assert by_content == {"a.png": ("cat", "dog"), "other.png": ("cat",)}
    by_path = names(load_source(merged(first, second, dedupe="path")))
    assert by_path == {"a.png": ("cat",), "other.png": ("cat",), "copy_of_a.png": ("dog",)}


def test_class_map_drops_renames_and_checks_names(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / name, colour=(ord(name[0]), 0, 0))
    item = csv_input(tmp_path / "one.csv", "a.png,kitten\nb.png,puppy\nc.png,ferret\n",
                     kitten="cat", puppy="dog", ferret=None)
    manifest = load_source(merged(item))
    assert names(manifest) == {"a.png": ("cat",), "b.png": ("dog",)}
    assert manifest.task == "multiclass"
    item["class_map"] = {"kiten": "cat"}
    with pytest.raises(DataError, match=r"inputs.0.class_map names class\(es\) the source does "
                                        r"not have: 'kiten' \(did you mean 'kitten'\?\)"):
        load_source(merged(item))


def test_explicit_class_order_and_unlisted_labels(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png", colour=(3, 3, 3))
    item = csv_input(tmp_path / "one.csv", "a.png,cat\nb.png,dog\n")
    assert load_source(merged(item, classes=["dog", "cat"])).classes == ["dog", "cat"]
    with pytest.raises(DataError, match=r"Merged labels \['dog'\] are not in data.source.classes"):
        load_source(merged(item, classes=["cat"]))


def test_kinds_and_tasks_must_agree(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png", colour=(3, 3, 3))
    labels = csv_input(tmp_path / "one.csv", "a.png,cat\n")
    boxes = csv_input(tmp_path / "two.csv", "b.png,1,1,20,20,dog\n")
    with pytest.raises(DataError, match=r"mix detection sources .* with classification ones"):
        load_source(merged(labels, boxes))
    other = csv_input(tmp_path / "three.csv", "a.png,dog\n")
    with pytest.raises(DataError, match=r"model.task=multiclass but the merged sample .*a.png has "
                                        r"labels \['cat', 'dog'\]"):
        load_source(merged(labels, other), task="multiclass")


def test_merge_from_yaml_resolves_nested_paths_and_builds(tmp_path, coco_input, car_folders):
    config = tmp_path / "run.yaml"
    config.write_text(
        "data:\n  source:\n    format: merge\n    inputs:\n"
        "      - source: {format: coco, annotations: coco/instances.json, images: coco/images,\n"
        "                 classes: [person, car], negative: true}\n"
        "      - source: {format: folder, root: cars}\n        class_map: {'*': car}\n"
        "  val_fraction: 0.2\n  test_fraction: 0.2\n")
    cfg = load_config(config)
    inner = cfg.data.source.inputs[0].source
    assert inner.annotations == (tmp_path / "coco" / "instances.json").resolve()
    assert cfg.data.source.inputs[1].source.root == car_folders.resolve()
    manifest = build_manifest(cfg.data, cfg.seed, cfg.model.task)
    assert len(manifest) == 7 and {s.split for s in manifest.samples} <= {"train", "val", "test"}
