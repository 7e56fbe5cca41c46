"""CSV source: label rows and box rows, headers, splits, normalised boxes, bad rows."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from helpers import write_png
from tinyvision.config import CsvSource
from tinyvision.data.sources.csv import load_csv
from tinyvision.errors import DataError


def csv_source(path: Path, **options) -> CsvSource:
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    return CsvSource.model_validate({"format": "csv", "path": str(path), **options})


def write_csv(folder: Path, text: str, images=("a.png", "b.png", "c.png")) -> Path:
    for name in images:
        write_png(folder / name, (100, 80))
    path = folder / "labels.csv"
    path.write_text(text)
    return path


def by_name(manifest) -> dict[str, tuple]:
    return {Path(s.path).name: s.labels for s in manifest.samples}


def test_label_rows_multilabel_and_repeated_paths(tmp_path):
    path = write_csv(tmp_path, "a.png,red\nb.png,green;blue\na.png, blue \n")
    manifest = load_csv(csv_source(path))
    assert manifest.task == "multilabel" and manifest.classes == ["blue", "green", "red"]
    assert by_name(manifest) == {"a.png": ("blue", "red"), "b.png": ("blue", "green")}
    assert all(Path(s.path).is_absolute() and s.split == "" for s in manifest.samples)


def test_header_split_column_images_root_and_absolute_paths(tmp_path):
    write_png(tmp_path / "pics" / "a.png")
    elsewhere = write_png(tmp_path / "other" / "z.png")
    path = tmp_path / "list.csv"
    path.write_text(f"path,label,split\na.png,cat,train\n{elsewhere},dog,VAL\n")
    manifest = load_csv(csv_source(path, images=tmp_path / "pics", classes=["dog", "cat"]))
    assert manifest.task == "multiclass" and manifest.classes == ["dog", "cat"]
    assert {Path(s.path).name: (s.labels, s.split) for s in manifest.samples} == {
        "a.png": (("cat",), "train"), "z.png": (("dog",), "val")}


def test_box_rows_keep_the_largest_object(tmp_path):
    path = write_csv(tmp_path, "a.png,10,20,50,60,car\na.png,0,0,5,5,person\nb.png,0,0,30,30,person\n")
    manifest = load_csv(csv_source(path))
    assert manifest.task == "detection" and manifest.classes == ["car", "person"]
    got = {Path(s.path).name: (s.labels, s.box, s.size) for s in manifest.samples}
    assert got["a.png"] == (("car",), (10.0, 20.0, 50.0, 60.0), (100, 80))
    cropped = load_csv(csv_source(path), crop_to_box=True)
    assert cropped.task == "multiclass" and cropped.samples[0].box is not None


def test_normalised_boxes_and_header_aliases(tmp_path):
    path = write_csv(tmp_path, "image,xmin,ymin,xmax,ymax,class\nb.png,0.1,0.25,0.5,0.75,car\n")
    manifest = load_csv(csv_source(path, box_units="normalized"))
    assert manifest.samples[0].box == pytest.approx((10.0, 20.0, 50.0, 60.0))


def test_box_partly_outside_is_clipped(tmp_path):
    path = write_csv(tmp_path, "a.png,60,0,120,80,car\n")
    assert load_csv(csv_source(path)).samples[0].box == (60.0, 0.0, 100.0, 80.0)


def test_bad_rows_in_one_summary(tmp_path):
    path = write_csv(tmp_path, "\n".join([
        "a.png,10,20,50,60,car",
        "b.png,10,20,50",  # too few columns
        "c.png,1,2,x,4,car",  # not numbers
        "a.png,50,20,10,60,car",  # degenerate
        "b.png,200,200,300,300,car",  # outside
        "nothere.png,1,1,5,5,car",  # missing file
        "c.png,1,1,5,5,",  # no label
        "c.png,1,1,5,5,truck",  # not in classes
    ]) + "\n")
    with pytest.raises(DataError) as caught:
        load_csv(csv_source(path, classes=["car", "person"]))
    message = str(caught.value)
    assert "7 problem(s)" in message
    for pattern in [r"labels.csv:2: 4 column\(s\), expected 6",
                    r"labels.csv:3: box \['1', '2', 'x', '4'\] is not four numbers",
                    r"labels.csv:4: box \[50, 20, 10, 60\] is degenerate",
                    r"labels.csv:5: box .* lies mostly outside the image \(image 100x80\)",
                    r"labels.csv:6: image .*nothere.png not found",
                    r"labels.csv:7: empty label",
                    r"labels.csv:8: label\(s\) \['truck'\] not in data.source.classes"]:
        assert re.search(pattern, message), pattern


def test_bad_split_and_conflicting_splits(tmp_path):
    path = write_csv(tmp_path, "path,label,split\na.png,x,validation\nb.png,x,train\nb.png,y,test\n")
    with pytest.raises(DataError, match=r"(?s)labels.csv:2: split 'validation' is not one of .*did you "
                                        r"mean 'val'.*labels.csv:4: b.png is in split 'test' here "
                                        r"but 'train' on line 3"):
        load_csv(csv_source(path))


def test_multiclass_task_refuses_multilabel_rows_and_skip_drops_them(tmp_path, caplog):
    path = write_csv(tmp_path, "a.png,x;y\nb.png,x\nc.png,y\n")
    with pytest.raises(DataError, match=r"a.png has several labels \['x', 'y'\] but model.task="):
        load_csv(csv_source(path), task="multiclass")
    with caplog.at_level(logging.WARNING):
        manifest = load_csv(csv_source(path, on_problem="skip"), task="multiclass")
    assert by_name(manifest) == {"b.png": ("x",), "c.png": ("y",)} and "left out" in caplog.text


def test_shape_errors(tmp_path):
    with pytest.raises(DataError, match=r"does not exist"):
        load_csv(csv_source(tmp_path / "none.csv"))
    path = write_csv(tmp_path, "a.png,x,train\n")
    with pytest.raises(DataError, match=r"has 3 columns; expected 2 \(path,label\) or 6"):
        load_csv(csv_source(path))
    path.write_text("path,label,colour\na.png,x,red\n")
    with pytest.raises(DataError, match=r"unknown header column\(s\) \['colour'\]"):
        load_csv(csv_source(path))
    path.write_text("a.png,x\n")
    with pytest.raises(DataError, match=r"no box columns, so it cannot train detection"):
        load_csv(csv_source(path), task="detection")


def test_semicolon_delimited_file(tmp_path):
    path = write_csv(tmp_path, "a.png;x|y\n")
    manifest = load_csv(csv_source(path, delimiter=";", label_separator="|"))
    assert by_name(manifest) == {"a.png": ("x", "y")}


def test_a_decompression_bomb_in_a_box_row_is_a_reported_problem(tmp_path):
    """A box row sends tinyvision to the image header to check the box; a bomb there is that
    row's problem (skippable), not a traceback."""
    from helpers import write_bomb_png

    write_bomb_png(tmp_path / "bomb.png")
    write_png(tmp_path / "fine.png", (100, 80))
    path = tmp_path / "boxes.csv"
    path.write_text("path,x1,y1,x2,y2,label\nbomb.png,1,1,9,9,cat\nfine.png,1,1,50,50,dog\n"
                    "fine.png,10,10,60,60,cat\n")
    with pytest.raises(DataError, match=r"boxes.csv:2: image .*bomb.png is refused as a "
                                        r"decompression bomb"):
        load_csv(csv_source(path))
    manifest = load_csv(csv_source(path, on_problem="skip"))
    assert [s.path.rsplit("/", 1)[-1] for s in manifest.samples] == ["fine.png"]
