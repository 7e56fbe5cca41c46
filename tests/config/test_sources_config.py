"""Config schema of the coco / voc / csv / merge sources: validation messages and path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from tinyvision import config as cfg_module
from tinyvision.config import load_config, validate_config
from tinyvision.errors import ConfigError


def with_source(source: dict) -> dict:
    return {"data": {"source": source}}


COCO = {"format": "coco", "annotations": "a.json", "images": "img", "classes": ["person", "car"]}


@pytest.mark.parametrize("source, pattern", [
    (COCO | {"min_aera": 0.01}, r"unknown key `data.source.min_aera`.*Did you mean 'min_area'"),
    (COCO | {"negative": {"sise": 3}},
     r"unknown key `data.source.negative.sise` in section data.source.negative.*'size'"),
    ({"format": "voc", "root": "x", "clases": ["a"]},
     r"unknown key `data.source.clases`.*Did you mean 'classes'"),
    ({"format": "csv", "path": "a.csv", "box_unit": "pixel"}, r"Did you mean 'box_units'"),
    ({"format": "merge", "inputs": [{"source": COCO | {"iscrowed": "ignore"}}]},
     r"unknown key `data.source.inputs.0.source.iscrowed`.*Did you mean 'iscrowd'"),
    ({"format": "merge", "inputs": [{"source": COCO, "class_mpa": {}}]},
     r"unknown key `data.source.inputs.0.class_mpa`.*Did you mean 'class_map'"),
])
def test_unknown_keys_inside_sources_suggest_close_matches(source, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config(with_source(source))


@pytest.mark.parametrize("source, pattern", [
    ({k: v for k, v in COCO.items() if k != "classes"}, r"mode 'presence' needs `classes`"),
    (COCO | {"min_area": {"persn": 0.1}}, r"min_area names 'persn'.*Did you mean 'person'"),
    (COCO | {"max_per_class": {"truck": 3}}, r"max_per_class names 'truck'"),
    (COCO | {"min_area": 1.5}, r"fraction of the image area in \[0, 1\), got 1.5"),
    (COCO | {"max_per_class": 0}, r"a cap is a number of images >= 1"),
    (COCO | {"negative": {"name": "car"}}, r"negative.name='car' is also a positive class"),
    (COCO | {"mode": "largest", "negative": True}, r"`negative` applies to mode 'presence' only"),
    (COCO | {"classes": {"vehicle": ["car"], "road": ["car", "bus"]}},
     r"category 'car' is in both 'vehicle' and 'road'"),
    (COCO | {"train_annotations": "t.json"}, r"either `annotations`.*or train_annotations"),
    ({k: v for k, v in COCO.items() if k != "annotations"}, r"`annotations` .* is required"),
    ({k: v for k, v in COCO.items() if k not in ("annotations", "images")}
     | {"val_annotations": "v.json", "val_images": "v"}, r"need `train_annotations` too"),
    ({k: v for k, v in COCO.items() if k not in ("annotations", "images")}
     | {"train_annotations": "t.json"}, r"`train_images` .* is required"),
    (COCO | {"iscrowd": "skip"}, r"iscrowd.*'include', 'ignore' or 'drop_image'"),
    ({"format": "voc", "classes": ["a"]}, r"give `root`"),
    ({"format": "merge", "inputs": []}, r"at least 1 item"),
    ({"format": "merge", "inputs": [{"source": {"format": "merge", "inputs": []}}]},
     r"does not match any of the expected tags"),
])
def test_bad_source_options(source, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config(with_source(source))


def test_shorthands_and_defaults():
    cfg = validate_config(with_source(COCO | {"negative": True, "classes": {"vehicle": "car"}}))
    source = cfg.data.source
    assert source.negative.name == "negative" and source.negative.size is None
    assert source.class_groups == {"vehicle": ["car"]}
    assert source.crowd_policy == "include"
    assert validate_config(with_source(COCO | {"mode": "largest"})).data.source.crowd_policy == "ignore"
    assert cfg.data.crop_to_box is False and cfg.data.crop_margin == 0.1


def test_option_sets_match_the_literals():
    fields = cfg_module.CocoSource.model_fields
    assert set(get_args(fields["mode"].annotation)) == cfg_module.SOURCE_MODES
    assert set(get_args(cfg_module.ObjectPolicy)) == cfg_module.OBJECT_POLICIES
    assert set(get_args(fields["on_problem"].annotation)) == cfg_module.PROBLEM_POLICIES
    merge_fields = cfg_module.MergeSource.model_fields
    assert set(get_args(merge_fields["dedupe"].annotation)) == cfg_module.DEDUPE_MODES


def test_relative_paths_of_every_source_key(tmp_path):
    path = tmp_path / "conf" / "run.yaml"
    path.parent.mkdir()
    path.write_text("data:\n  source:\n    format: coco\n    classes: [person]\n"
                    "    train_annotations: ann/train.json\n    train_images: ../img/train\n"
                    "    val_annotations: ann/val.json\n    images: /abs/images\n")
    source = load_config(path).data.source
    assert source.train_annotations == (tmp_path / "conf" / "ann" / "train.json").resolve()
    assert source.train_images == (tmp_path / "img" / "train").resolve()
    assert source.images == Path("/abs/images")
    assert source.annotation_files()[1][2] == Path("/abs/images")  # val images default to images
    path.write_text("data:\n  source:\n    format: csv\n    path: labels.csv\n    images: pics\n")
    source = load_config(path).data.source
    assert source.path == (tmp_path / "conf" / "labels.csv").resolve()
    assert source.images == (tmp_path / "conf" / "pics").resolve()


def test_crop_options_validate():
    with pytest.raises(ConfigError, match=r"data.crop_margin.*less than or equal to 2"):
        validate_config({"data": {"source": COCO, "crop_margin": 5}})


def _box_csv(tmp_path: Path) -> Path:
    """Two classes, three grey 20x10 images each, one box per row."""
    from PIL import Image

    rows = []
    for label in ("cat", "dog"):
        for i in range(3):
            Image.new("RGB", (20, 10), (128, 128, 128)).save(tmp_path / f"{label}{i}.png")
            rows.append(f"{label}{i}.png,2,1,12,8,{label}")
    path = tmp_path / "boxes.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_model_task_detection_is_explicit_and_checked(tmp_path):
    from tinyvision.data.sources import build_manifest
    from tinyvision.errors import DataError

    boxes = _box_csv(tmp_path)
    base = {"data": {"source": {"format": "csv", "path": str(boxes)}, "val_fraction": 0.0,
                     "test_fraction": 0.0}}
    for task, expected in (("detection", "detection"), ("auto", "detection"),
                           ("multiclass", "multiclass")):
        cfg = validate_config({**base, "model": {"task": task}})
        manifest = build_manifest(cfg.data, cfg.seed, cfg.model.task)
        assert manifest.task == expected
        assert manifest.samples[0].box is not None  # kept for crop_to_box or the box head
    with pytest.raises(ConfigError, match=r"model.task=detection predicts the box, so the image "
                                          r"cannot be cropped"):
        validate_config({"data": {**base["data"], "crop_to_box": True},
                         "model": {"task": "detection"}})
    folders = tmp_path / "folders"
    for label in ("cat", "dog"):
        (folders / label).mkdir(parents=True)
        (tmp_path / f"{label}0.png").rename(folders / label / "a.png")
    cfg = validate_config({"data": {"source": {"format": "folder", "root": str(folders)}},
                           "model": {"task": "detection"}})
    with pytest.raises(DataError, match=r"model.task=detection needs one box per image, but the "
                                        r"class folders under .*folders give image labels only"):
        build_manifest(cfg.data, cfg.seed, cfg.model.task)
