"""Pascal VOC source: both layouts, image sets, difficult/truncated, box conversion, bad input."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from helpers import voc_xml, write_bomb_png, write_png
from tinyvision.config import DataConfig, VocSource
from tinyvision.data.sources import build_manifest
from tinyvision.data.sources.voc import load_voc
from tinyvision.errors import DataError


def voc(**options) -> VocSource:
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    options.setdefault("classes", ["person", "car"])
    return VocSource.model_validate({"format": "voc", **options})


def by_name(manifest) -> dict[str, tuple]:
    return {Path(s.path).stem: (s.labels, s.split, s.box) for s in manifest.samples}


def write_year(folder: Path, images: dict[str, list[tuple]], sets: dict[str, list[str]],
               size=(100, 80)) -> Path:
    for image_id, objects in images.items():
        (folder / "Annotations").mkdir(parents=True, exist_ok=True)
        (folder / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(f"{image_id}.jpg", size, objects))
        write_png(folder / "JPEGImages" / f"{image_id}.jpg", size)
    main = folder / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for name, ids in sets.items():
        (main / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return folder


@pytest.fixture
def devkit(tmp_path: Path) -> Path:
    write_year(tmp_path / "VOCdevkit" / "VOC2012", {
        "2008_000001": [("person", (1, 1, 50, 50))],
        "2008_000002": [("car", (10, 10, 60, 40)), ("person", (1, 1, 80, 70), 1)],  # difficult
        "2008_000003": [("dog", (1, 1, 30, 30))],
        "2008_000004": [("person", (5, 5, 40, 60), 0, 1)],  # truncated
        "2008_000005": [("person", (5, 5, 40, 60))],  # in no image set
    }, {"train": ["2008_000001", "2008_000002", "2008_000003"], "val": ["2008_000004"]})
    return tmp_path / "VOCdevkit"


def test_devkit_splits_and_difficult_ignored(devkit):
    manifest = load_voc(voc(root=devkit / "VOC2012", negative=True))
    assert manifest.task == "multilabel" and manifest.classes == ["person", "car", "negative"]
    got = {k: v[:2] for k, v in by_name(manifest).items()}
    # The difficult person of image 2 neither counts nor lets image 2 be a negative.
    assert got == {"2008_000001": (("person",), "train"), "2008_000002": (("car",), "train"),
                   "2008_000003": (("negative",), "train"),
                   "2008_000004": (("person",), "val")}
    assert all(s.size == (100, 80) for s in manifest.samples)


def test_devkit_root_reads_every_year(devkit):
    write_year(devkit / "VOC2007", {"000001": [("car", (1, 1, 20, 20))]}, {"test": ["000001"]})
    manifest = load_voc(voc(root=devkit))
    assert by_name(manifest)["000001"][:2] == (("car",), "test")
    assert len(manifest) == 4


@pytest.mark.parametrize("difficult, truncated, expected", [
    ("include", "include", {"2008_000001": ("person",), "2008_000002": ("person", "car"),
                            "2008_000004": ("person",)}),
    ("ignore", "drop_image", {"2008_000001": ("person",), "2008_000002": ("car",)}),
    ("drop_image", "ignore", {"2008_000001": ("person",)}),
])
def test_difficult_and_truncated_policies(devkit, difficult, truncated, expected):
    manifest = load_voc(voc(root=devkit / "VOC2012", difficult=difficult, truncated=truncated))
    assert {k: v[0] for k, v in by_name(manifest).items()} == expected


def test_largest_object_converts_one_based_corners(devkit):
    manifest = load_voc(voc(root=devkit / "VOC2012", mode="largest", classes=None))
    got = by_name(manifest)
    assert manifest.task == "detection" and manifest.classes == ["car", "dog", "person"]
    # VOC (xmin=1, xmax=50) is pixels 1..50 inclusive: pixel xyxy (0, 0, 50, 50).
    assert got["2008_000001"] == (("person",), "train", (0.0, 0.0, 50.0, 50.0))
    assert got["2008_000002"] == (("car",), "train", (9.0, 9.0, 60.0, 40.0))  # difficult ignored


def test_image_sets_mapping(devkit):
    main = devkit / "VOC2012" / "ImageSets" / "Main"
    (main / "trainval.txt").write_text("2008_000001\n2008_000005\n")
    manifest = load_voc(voc(root=devkit / "VOC2012", image_sets={"train": "trainval"},
                            classes=["person"]))
    assert {k: v[1] for k, v in by_name(manifest).items()} == {"2008_000001": "train",
                                                               "2008_000005": "train"}
    with pytest.raises(DataError, match=r"image_sets.val='nope'.*does not exist"):
        load_voc(voc(root=devkit / "VOC2012", image_sets={"val": "nope"}))


def write_plain(root: Path, files: dict[str, str], images=()) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / "annotations" / name).write_text(text)
    for name in images:
        write_png(root / "images" / name, (100, 80))
    return root


def test_plain_layout_and_seeded_split(tmp_path):
    files = {f"a{i}.xml": voc_xml(f"a{i}.png", (100, 80), [("person", (1, 1, 40, 40))])
             for i in range(10)}
    files |= {f"b{i}.xml": voc_xml(f"b{i}.png", (100, 80), [("car", (1, 1, 40, 40))])
              for i in range(10)}
    root = write_plain(tmp_path / "plain", files, [f"{k}{i}.png" for k in "ab" for i in range(10)])
    data = DataConfig.model_validate({"source": voc(root=root).model_dump(),
                                      "val_fraction": 0.2, "test_fraction": 0.2})
    manifest = build_manifest(data, seed=0)
    counts = Counter((s.split, s.labels) for s in manifest.samples)
    assert counts == {("train", ("person",)): 6, ("val", ("person",)): 2, ("test", ("person",)): 2,
                      ("train", ("car",)): 6, ("val", ("car",)): 2, ("test", ("car",)): 2}
    explicit = load_voc(voc(annotations=root / "annotations", images=root / "images"))
    assert len(explicit) == 20


def test_missing_size_is_read_from_the_image_and_boxes_are_clipped(tmp_path):
    root = write_plain(tmp_path / "p", {"a.xml": voc_xml("a.png", None, [("car", (51, 1, 120, 80))])},
                       ["a.png"])
    manifest = load_voc(voc(root=root, mode="largest", classes=["car"]))
    assert manifest.samples[0].size == (100, 80)
    assert manifest.samples[0].box == (50.0, 0.0, 100.0, 80.0)


def test_bad_annotations_in_one_summary(tmp_path):
    files = {
        "ok.xml": voc_xml("ok.png", (100, 80), [("person", (1, 1, 40, 40))]),
        "broken.xml": "<annotation><object>",
        "degenerate.xml": voc_xml("d.png", (100, 80), [("person", (50, 10, 20, 40))]),
        "outside.xml": voc_xml("o.png", (100, 80), [("car", (150, 100, 190, 140))]),
        "nobox.xml": "<annotation><filename>n.png</filename><size><width>9</width><height>9"
                     "</height></size><object><name>car</name><bndbox><xmin>a</xmin></bndbox>"
                     "</object></annotation>",
        "nosize.xml": voc_xml("missing.png", None, [("car", (1, 1, 5, 5))]),
    }
    root = write_plain(tmp_path / "p", files, ["ok.png", "d.png", "o.png", "n.png"])
    with pytest.raises(DataError) as caught:
        load_voc(voc(root=root))
    message = str(caught.value)
    assert "5 problem(s)" in message
    for pattern in ["broken.xml: not valid XML", "degenerate.xml: object #1 .* is degenerate",
                    "outside.xml: object #1 .* lies mostly outside the image",
                    r"nobox.xml: object #1 \('car'\) has a bad <bndbox>",
                    "nosize.xml: <size> is missing or zero"]:
        assert re.search(pattern, message), pattern


def test_filename_escaping_images_folder_is_refused(tmp_path):
    root = write_plain(tmp_path / "p", {"x.xml": voc_xml("../../etc/x.png", (9, 9),
                                                         [("car", (1, 1, 5, 5))])})
    with pytest.raises(DataError, match=r"x.xml: filename '../../etc/x.png' escapes"):
        load_voc(voc(root=root, on_problem="skip"))


def test_listed_image_without_xml_and_unknown_layout(devkit, tmp_path):
    main = devkit / "VOC2012" / "ImageSets" / "Main"
    (main / "val.txt").write_text("2008_000004\n2008_999999\n")
    with pytest.raises(DataError, match=r"2008_999999.xml: listed in the image sets but the file "
                                        r"does not exist"):
        load_voc(voc(root=devkit / "VOC2012"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"has no VOC layout.*VOCdevkit/VOC2012/Annotations"):
        load_voc(voc(root=tmp_path / "empty"))


def test_unknown_class_name(devkit):
    with pytest.raises(DataError, match=r"unknown category name\(s\) 'Person' \(did you mean "
                                        r"'person'\?\)"):
        load_voc(voc(root=devkit / "VOC2012", classes=["Person"]))


# ---- messy real datasets ------------------------------------------------------------------------
def _converted_to_jpeg(root: Path, n: int = 6) -> Path:
    """A set converted from PNG to JPEG: every XML still names `<id>.png`, the folder holds
    `<id>.jpg` (as a public raccoon/pets set ships)."""
    for i in range(n):
        image_id = f"{i:06d}"
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{image_id}.xml").write_text(
            voc_xml(f"{image_id}.png", (100, 80), [("person" if i % 2 else "car",
                                                    (10, 10, 60, 60))]))
        write_png(root / "images" / f"{image_id}.jpg", (100, 80))
    return root


def test_a_filename_that_does_not_exist_falls_back_to_the_xml_name(tmp_path, caplog):
    """Through the CLI: `data build` finds 000001.jpg for <filename>000001.png</filename>, and
    says once how many XML files needed the fallback."""
    import logging

    import yaml
    from typer.testing import CliRunner

    from tinyvision.cli import app

    root = _converted_to_jpeg(tmp_path / "voc")
    config = tmp_path / "voc.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": {
        "format": "voc", "root": str(root), "classes": ["person", "car"], "on_problem": "skip"}}}))
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        manifest = load_voc(voc(root=root))
    messages = [r.getMessage() for r in caplog.records if "XML file(s) name an image" in
                r.getMessage()]
    assert len(messages) == 1 and "6 XML file(s)" in messages[0]
    assert "000000.png -> 000000.jpg" in messages[0]
    result = CliRunner().invoke(app, ["data", "build", str(config)])  # the CLI path, as a user
    assert result.exit_code == 0, result.output
    assert "multilabel, 6 images" in " ".join(result.output.split())
    assert sorted(Path(s.path).name for s in manifest.samples) == \
        [f"{i:06d}.jpg" for i in range(6)]


def test_problems_that_remove_every_entry_are_blamed_not_the_options(tmp_path):
    """XMLs naming images that exist under no name: with on_problem: skip nothing is left, and
    the error says the problems removed the entries, with their count."""
    root = _converted_to_jpeg(tmp_path / "voc", n=4)
    for image in (root / "images").iterdir():
        image.rename(image.with_name("other_" + image.name))
    with pytest.raises(DataError, match=r"no image is left: 4 entr\(y/ies\) had problems and were "
                                        r"left out \(on_problem: skip\)"):
        load_voc(voc(root=root, on_problem="skip"))


def test_a_decompression_bomb_without_size_is_a_reported_problem(tmp_path):
    """An XML without <size> sends tinyvision to the image header; a bomb there is a problem of
    that XML, not a traceback."""
    root = tmp_path / "voc"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "bomb.xml").write_text(voc_xml("bomb.png", None, [("person", (1, 1,
                                                                                   9, 9))]))
    (root / "annotations" / "fine.xml").write_text(voc_xml("fine.png", (100, 80), [
        ("person", (1, 1, 50, 50)), ("car", (20, 20, 90, 70))]))
    write_png(root / "images" / "fine.png", (100, 80))
    write_bomb_png(root / "images" / "bomb.png")
    with pytest.raises(DataError, match=r"bomb.xml: image .*bomb.png is refused as a "
                                        r"decompression bomb"):
        load_voc(voc(root=root))
