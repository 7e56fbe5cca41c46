"""COCO source: presence thresholds, crowds, negatives, caps, splits, largest object, bad input."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest

from helpers import coco_document, square_images, write_coco, write_png
from tinyvision.config import CocoSource, DataConfig
from tinyvision.data.sources import build_manifest
from tinyvision.data.sources.coco import build_coco, load_coco, read_json
from tinyvision.errors import DataError


def source(path: Path, **options) -> CocoSource:
    options.setdefault("images", str(path.parent / "images"))
    options.setdefault("classes", ["person", "car"])
    return CocoSource.model_validate({"format": "coco", "annotations": str(path), **options})


def labels_by_name(manifest) -> dict[str, tuple[str, ...]]:
    return {Path(s.path).name: s.labels for s in manifest.samples}


# ---- presence --------------------------------------------------------------------------------
@pytest.fixture
def threshold_coco(tmp_path: Path) -> Path:
    return write_coco(tmp_path, square_images(4), [
        (0, "person", [0, 0, 10, 10]),  # 1 % of the image
        (0, "car", [50, 50, 3, 3]),  # 0.09 %
        (1, "car", [10, 10, 20, 20]),  # 4 %
        (2, "person", [5, 5, 5, 5]),  # 0.25 %
        (3, "dog", [0, 0, 50, 50]),
    ])


def test_presence_per_class_min_area(threshold_coco):
    manifest = load_coco(source(threshold_coco, min_area={"person": 0.005, "car": 0.01}))
    assert manifest.task == "multilabel" and manifest.classes == ["person", "car"]
    assert labels_by_name(manifest) == {"img000.png": ("person",), "img001.png": ("car",)}
    assert all(s.size == (100, 100) and s.box is None for s in manifest.samples)


def test_presence_without_threshold_counts_every_object(threshold_coco):
    manifest = load_coco(source(threshold_coco))
    assert labels_by_name(manifest) == {"img000.png": ("person", "car"), "img001.png": ("car",),
                                        "img002.png": ("person",)}


def test_presence_one_number_applies_to_every_class(threshold_coco):
    manifest = load_coco(source(threshold_coco, min_area=0.005))
    assert labels_by_name(manifest) == {"img000.png": ("person",), "img001.png": ("car",)}


def test_multiclass_task_keeps_single_label_images(threshold_coco):
    manifest = load_coco(source(threshold_coco), task="multiclass")
    assert manifest.task == "multiclass"
    assert labels_by_name(manifest) == {"img001.png": ("car",), "img002.png": ("person",)}


def test_class_groups_merge_categories(threshold_coco):
    manifest = load_coco(source(threshold_coco, classes={"animal": ["dog", "cat"],
                                                         "vehicle": ["car", "bicycle"]}))
    assert manifest.classes == ["animal", "vehicle"]
    assert labels_by_name(manifest) == {"img000.png": ("vehicle",), "img001.png": ("vehicle",),
                                        "img003.png": ("animal",)}


@pytest.fixture
def crowd_coco(tmp_path: Path) -> Path:
    return write_coco(tmp_path, square_images(3), [
        (0, "person", [0, 0, 50, 50], 1),  # a crowd region only
        (1, "person", [0, 0, 20, 20]),
        (2, "dog", [0, 0, 20, 20]),
    ])


@pytest.mark.parametrize("policy, person_images, negatives", [
    ("include", {"img000.png", "img001.png"}, {"img002.png"}),
    ("ignore", {"img001.png"}, {"img002.png"}),  # a crowd of people is no negative either
    ("drop_image", {"img001.png"}, {"img002.png"}),
])
def test_iscrowd_policies(crowd_coco, policy, person_images, negatives):
    manifest = load_coco(source(crowd_coco, classes=["person"], iscrowd=policy,
                                negative={"size": 5}))
    labels = labels_by_name(manifest)
    assert {n for n, lab in labels.items() if lab == ("person",)} == person_images
    assert {n for n, lab in labels.items() if lab == ("negative",)} == negatives


# ---- negatives -------------------------------------------------------------------------------
@pytest.fixture
def negatives_coco(tmp_path: Path) -> Path:
    """12 person images; negatives to choose from: 20 dog, 3 cat, 3 bird, 2 empty images."""
    annotations = [(i, "person", [0, 0, 30, 30]) for i in range(12)]
    kinds = ["dog"] * 20 + ["cat"] * 3 + ["bird"] * 3
    annotations += [(12 + i, kind, [0, 0, 30, 30]) for i, kind in enumerate(kinds)]
    # Image 40 shows a tiny person next to a dog; 38 and 39 have no objects at all.
    annotations += [(40, "dog", [0, 0, 30, 30]), (40, "person", [0, 0, 1, 1])]
    return write_coco(tmp_path, square_images(41), annotations)


def negative_kinds(manifest, path: Path) -> Counter:
    doc = json.loads(path.read_text())
    first = {}
    for a in doc["annotations"]:
        first.setdefault(f"img{a['image_id'] - 10:03d}.png", a["category_id"])
    names = {c["id"]: c["name"] for c in doc["categories"]}
    return Counter(names[first[n]] if n in first else "empty"
                   for n, labels in labels_by_name(manifest).items() if labels == ("negative",))


def test_negatives_sampled_evenly_across_other_categories(negatives_coco):
    manifest = load_coco(source(negatives_coco, classes=["person"], min_area=0.01, negative=True))
    assert manifest.classes == ["person", "negative"]
    # As many negatives as the largest class (12), round robin over dog, cat, bird and empty:
    # not 12 dogs.
    assert negative_kinds(manifest, negatives_coco) == {"dog": 4, "cat": 3, "bird": 3, "empty": 2}


def test_negative_size_and_determinism(negatives_coco):
    src = source(negatives_coco, classes=["person"], negative={"size": 5, "name": "background"})
    first, again = load_coco(src, seed=3), load_coco(src, seed=3)
    assert first.samples == again.samples and first.classes == ["person", "background"]
    background = [s for s in first.samples if s.labels == ("background",)]
    assert len(background) == 5


def test_negatives_from_listed_categories_warn_when_short(negatives_coco, caplog):
    src = source(negatives_coco, classes=["person"],
                 negative={"from_categories": ["cat"], "include_empty": False})
    with caplog.at_level(logging.WARNING):
        manifest = load_coco(src)
    assert negative_kinds(manifest, negatives_coco) == {"cat": 3}
    assert "Only 3 negative image(s)" in caplog.text


def test_small_positives_block_negatives_unless_allowed(negatives_coco):
    options = dict(classes=["person"], min_area=0.01, negative={"from_categories": ["dog"],
                                                                "size": 100})
    strict = labels_by_name(load_coco(source(negatives_coco, **options)))
    assert "img040.png" not in strict  # its 1x1 person rules it out
    options["negative"]["allow_small_positives"] = True
    lenient = labels_by_name(load_coco(source(negatives_coco, **options)))
    assert lenient["img040.png"] == ("negative",)


def test_unknown_negative_category(negatives_coco):
    with pytest.raises(DataError, match=r"unknown category name\(s\) 'dgo' \(did you mean 'dog'"):
        load_coco(source(negatives_coco, classes=["person"], negative={"from_categories": ["dgo"]}))


# ---- caps and splits -------------------------------------------------------------------------
@pytest.fixture
def caps_coco(tmp_path: Path) -> Path:
    """20 person-only, 4 person+car and 3 car-only images."""
    annotations = [(i, "person", [0, 0, 30, 30]) for i in range(24)]
    annotations += [(i, "car", [40, 40, 30, 30]) for i in range(20, 27)]
    return write_coco(tmp_path, square_images(27), annotations)


def test_cap_undersamples_common_class_without_starving_rare_one(caps_coco):
    manifest = load_coco(source(caps_coco, max_per_class={"person": 10}), seed=0)
    counts = Counter(label for s in manifest.samples for label in s.labels)
    assert counts == {"person": 10, "car": 7}


def test_cap_for_every_class_and_seeding(caps_coco):
    a = load_coco(source(caps_coco, max_per_class=3), seed=0)
    counts = Counter(label for s in a.samples for label in s.labels)
    assert counts["person"] <= 3 and counts["car"] <= 3 and counts["car"] == 3
    assert a.samples == load_coco(source(caps_coco, max_per_class=3), seed=0).samples
    picks = {tuple(s.path for s in load_coco(source(caps_coco, max_per_class=3), seed=s).samples)
             for s in range(6)}
    assert len(picks) > 1


def test_split_files_keep_splits_and_share_caps_and_negatives(tmp_path):
    train = write_coco(tmp_path / "train", square_images(50, "t"),
                       [(i, "person", [0, 0, 30, 30]) for i in range(30)] +
                       [(i, "dog", [0, 0, 30, 30]) for i in range(30, 50)])
    val = write_coco(tmp_path / "val", square_images(20, "v"),
                     [(i, "person", [0, 0, 30, 30]) for i in range(10)] +
                     [(i, "dog", [0, 0, 30, 30]) for i in range(10, 20)])
    src = CocoSource.model_validate({
        "format": "coco", "classes": ["person"], "max_per_class": 20, "negative": True,
        "train_annotations": str(train), "train_images": str(tmp_path / "train" / "images"),
        "val_annotations": str(val), "val_images": str(tmp_path / "val" / "images")})
    manifest = load_coco(src)
    counts = Counter((s.split, s.labels[0]) for s in manifest.samples)
    # The cap of 20 is shared 30:10 -> 15 train + 5 val; negatives match each split's largest class.
    assert counts == {("train", "person"): 15, ("val", "person"): 5,
                      ("train", "negative"): 15, ("val", "negative"): 5}
    assert all(Path(s.path).parent.parent.name == s.split for s in manifest.samples)


def test_build_manifest_splits_one_file_and_is_reproducible(caps_coco):
    data = DataConfig.model_validate({"source": {
        "format": "coco", "annotations": str(caps_coco), "images": str(caps_coco.parent / "images"),
        "classes": ["person", "car"]}, "val_fraction": 0.2, "test_fraction": 0.2})
    manifest = build_manifest(data, seed=1)
    assert {s.split for s in manifest.samples} == {"train", "val", "test"}
    assert manifest.fingerprint() == build_manifest(data, seed=1).fingerprint()


def test_urls_of_chosen_images(tmp_path):
    path = write_coco(tmp_path, square_images(2), [(0, "person", [0, 0, 30, 30])],
                      url_base="http://127.0.0.1:1/train2017")
    manifest, urls = build_coco(source(path, classes=["person"]))
    assert urls == {manifest.samples[0].path: "http://127.0.0.1:1/train2017/img000.png"}


# ---- largest object --------------------------------------------------------------------------
@pytest.fixture
def largest_coco(tmp_path: Path) -> Path:
    return write_coco(tmp_path, square_images(4), [
        (0, "person", [0, 0, 10, 10]), (0, "car", [20, 30, 30, 40]),
        (1, "dog", [0, 0, 50, 50]),
        (2, "person", [0, 0, 90, 90], 1), (2, "person", [5, 6, 10, 12]),
        (3, "car", [95, 0, 10, 10]),  # half outside the image: clipped
    ])


def test_largest_object_class_and_box(largest_coco):
    manifest = load_coco(source(largest_coco, mode="largest"))
    assert manifest.task == "detection"
    got = {Path(s.path).name: (s.labels, s.box) for s in manifest.samples}
    assert got == {"img000.png": (("car",), (20.0, 30.0, 50.0, 70.0)),
                   "img002.png": (("person",), (5.0, 6.0, 15.0, 18.0)),  # crowd ignored
                   "img003.png": (("car",), (95.0, 0.0, 100.0, 10.0))}


def test_largest_over_all_categories_and_crop_to_box(largest_coco):
    manifest = load_coco(source(largest_coco, mode="largest", classes=None), crop_to_box=True)
    assert manifest.task == "multiclass" and manifest.classes == ["person", "car", "dog"]
    assert labels_by_name(manifest)["img001.png"] == ("dog",)
    assert all(s.box is not None for s in manifest.samples)


def test_largest_min_area_and_task_checks(largest_coco):
    manifest = load_coco(source(largest_coco, mode="largest", min_area={"car": 0.15}))
    assert labels_by_name(manifest) == {"img000.png": ("person",), "img002.png": ("person",)}
    with pytest.raises(DataError, match=r"mode 'largest' gives one label per image"):
        load_coco(source(largest_coco, mode="largest"), task="multilabel")
    with pytest.raises(DataError, match=r"mode 'presence' gives image labels"):
        load_coco(source(largest_coco), task="detection")


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("file_name", ["/etc/passwd", "../outside.png", "sub/../../x.png",
                                       "C:\\x.png"])
def test_file_name_escaping_images_root_is_refused(tmp_path, file_name):
    images = square_images(2)
    images[1]["file_name"] = file_name
    path = write_coco(tmp_path, images, [(0, "person", [0, 0, 30, 30])], write_images=False)
    write_png(tmp_path / "images" / "img000.png")
    with pytest.raises(DataError, match=r"images\[1\] file_name .* escapes the images folder"):
        load_coco(source(path, on_problem="skip"))


def test_unknown_category_names_suggest_close_matches(threshold_coco):
    with pytest.raises(DataError, match=r"unknown category name\(s\) 'persn' \(did you mean "
                                        r"'person'\?\), 'truck'.*6 categories: person, bicycle"):
        load_coco(source(threshold_coco, classes=["persn", "truck"]))


def test_every_problem_in_one_summary(tmp_path):
    images = square_images(5) + [{"file_name": "noimage.png", "height": 100}]
    path = write_coco(tmp_path, images, [
        (0, "person", [0, 0, 30, 30]),
        (1, "person", [150, 150, 20, 20]),  # outside the image
        (2, "car", [10, 10, 0, 5]),  # degenerate
        (3, "person", [0, 0, 30, 30]),  # its image file is missing
    ], write_images=False)
    doc = json.loads(path.read_text())
    doc["annotations"] += [
        {"id": 1, "image_id": 10, "category_id": 1},  # no bbox
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [1, 2, 3]},
        {"id": 3, "image_id": 999, "category_id": 1, "bbox": [1, 2, 3, 4]},
        {"id": 4, "image_id": 10, "category_id": 77, "bbox": [1, 2, 3, 4]},
        "not an object",
    ]
    path.write_text(json.dumps(doc))
    for i in (0, 1, 2, 4):
        write_png(tmp_path / "images" / f"img{i:03d}.png")
    with pytest.raises(DataError) as caught:
        load_coco(source(path))
    message = str(caught.value)
    for pattern in [r"9 problem\(s\)", r"images\[5\] \(id 15\) has no width",
                    r"annotations\[4\] \(id 1\) has no bbox",
                    r"annotations\[5\] \(id 2\) has bbox \[1, 2, 3\]",
                    r"annotations\[6\] has image_id 999, which no image entry has",
                    r"annotations\[7\] has category_id 77, which no category entry has",
                    r"annotations\[8\] is not an object",
                    r"annotations\[1\] \(image 'img001.png'\): box .* lies mostly outside the image",
                    r"annotations\[2\] \(image 'img002.png'\): box .* is degenerate",
                    r"image 'img003.png'.*img003.png not found", r"on_problem: skip"]:
        assert re.search(pattern, message), pattern


def test_long_problem_lists_are_capped(tmp_path):
    path = write_coco(tmp_path, square_images(30), [(i, "person", [0, 0, 30, 30])
                                                    for i in range(30)], write_images=False)
    with pytest.raises(DataError, match=r"30 problem\(s\):(\n  .*){20}\n  \.\.\. and 10 more"):
        load_coco(source(path))


def test_skip_leaves_bad_entries_out_with_a_warning(tmp_path, caplog):
    path = write_coco(tmp_path, square_images(3), [
        (0, "person", [0, 0, 30, 30]), (1, "person", [150, 150, 20, 20]),
        (2, "person", [0, 0, 30, 30])], write_images=False)
    for i in (0, 1):
        write_png(tmp_path / "images" / f"img{i:03d}.png")
    with caplog.at_level(logging.WARNING):
        manifest = load_coco(source(path, classes=["person"], on_problem="skip"))
    assert labels_by_name(manifest) == {"img000.png": ("person",)}
    assert "2 problem(s)" in caplog.text and "left out" in caplog.text


def test_unreadable_or_foreign_files(tmp_path):
    path = tmp_path / "bad.json"
    with pytest.raises(DataError, match=r"bad.json does not exist"):
        load_coco(source(path))
    path.write_text('{"images": [}')
    with pytest.raises(DataError, match=r"bad.json is not valid JSON"):
        load_coco(source(path))
    path.write_text('{"images": [], "categories": []}')
    with pytest.raises(DataError, match=r"`annotations` is missing, expected a list"):
        load_coco(source(path))


def test_check_images_off_allows_missing_files(tmp_path):
    path = write_coco(tmp_path, square_images(2), [(0, "person", [0, 0, 30, 30])],
                      write_images=False)
    assert len(load_coco(source(path, check_images=False))) == 1


# ---- parsing ---------------------------------------------------------------------------------
def test_segmentations_are_skipped_in_any_formatting(tmp_path):
    annotations = [(0, "person", [0, 0, 30, 30]), (1, "car", [0, 0, 40, 40], 1)]
    compact = write_coco(tmp_path / "a", square_images(2), annotations)
    pretty = write_coco(tmp_path / "b", square_images(2), annotations, indent=2)
    doc = read_json(pretty)
    assert [a["segmentation"] for a in doc["annotations"]] == [None, None]
    assert labels_by_name(load_coco(source(compact))) == labels_by_name(load_coco(source(pretty)))


def test_unusual_segmentations_fall_back_to_a_full_parse(tmp_path):
    doc = coco_document(square_images(1), [(0, "person", [0, 0, 30, 30])])
    doc["annotations"][0]["segmentation"] = [[1, 2], ["odd", {"x": "}"}]]
    doc["images"][0]["file_name"] = 'we"ird "segmentation": [[1]].png'
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc))
    parsed = read_json(path)
    assert parsed["annotations"][0]["segmentation"] == [[1, 2], ["odd", {"x": "}"}]]
    assert parsed["images"][0]["file_name"] == 'we"ird "segmentation": [[1]].png'


def test_area_from_segmentation(threshold_coco):
    # The fixture's segmentation area is half the box: img000's person (1 %) becomes 0.5 %.
    by_box = load_coco(source(threshold_coco, classes=["person"], min_area=0.006))
    assert labels_by_name(by_box) == {"img000.png": ("person",)}
    with pytest.raises(DataError, match=r"no image has an object of \['person'\]"):
        load_coco(source(threshold_coco, classes=["person"], min_area=0.006, area="segmentation"))


def test_nothing_qualifies_is_an_error_and_an_empty_class_a_warning(threshold_coco, caplog):
    with pytest.raises(DataError, match=r"no image has an object of \['person', 'car'\] that "
                                        r"passes the options"):
        load_coco(source(threshold_coco, min_area=0.5))
    with caplog.at_level(logging.WARNING):
        manifest = load_coco(source(threshold_coco, min_area={"car": 0.5}))
    assert manifest.classes == ["person", "car"]
    assert "no image of class(es) ['car'] passes the options" in caplog.text


def test_a_negative_class_no_image_qualifies_for_is_dropped_or_refused(tmp_path, caplog):
    """Every image shows a person or a car: `negative: true` is dropped with a warning (no dead
    output); a negative class the config names is an error that says why."""
    import logging

    path = write_coco(tmp_path, square_images(4), [
        (0, "person", [0, 0, 30, 30]), (1, "car", [0, 0, 30, 30]),
        (2, "person", [0, 0, 30, 30]), (3, "car", [0, 0, 30, 30])])
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        manifest = load_coco(source(path, negative=True))
    assert manifest.classes == ["person", "car"]
    assert any("no image qualifies for the negative class 'negative'" in r.getMessage()
               and "left out" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match=r"no image qualifies for the negative class 'background'"
                                        r".*Remove data.source.negative"):
        load_coco(source(path, negative={"name": "background"}))
