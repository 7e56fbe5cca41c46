"""`inspect_manifest`: counts, co-occurrence, box histograms, problems, and the PNG grid."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from helpers import write_png
from tinyvision.data.inspect import inspect_manifest, pick_samples
from tinyvision.data.manifest import Manifest, Sample


def multilabel(tmp_path: Path) -> Manifest:
    samples = []
    for i in range(12):
        labels = ("person", "car") if i % 4 == 0 else ("person",) if i % 2 else ("car",)
        path = write_png(tmp_path / f"m{i}.png", (50, 40), (20 * i, 100, 50))
        samples.append(Sample(str(path), labels, "train" if i < 10 else "val"))
    samples.append(Sample(str(tmp_path / "gone.png"), ("car",), "val"))
    return Manifest(["person", "car"], "multilabel", samples)


def test_counts_cooccurrence_and_problems(tmp_path):
    report = inspect_manifest(multilabel(tmp_path))
    assert report.counts["train"] == {"person": 8, "car": 5}
    assert report.counts["val"] == {"person": 1, "car": 2}
    assert report.cooccurrence == [[9, 3], [3, 7]]
    assert report.box_sides is None and report.box_fractions is None and report.grid is None
    text = "\n".join(report.problems)
    assert "gone.png: file not found" in text
    assert "fewer than 10 training images: person (8), car (5)" in text


def test_boxes_histograms_grid_and_summary(tmp_path):
    samples = []
    for i, (w, h, box) in enumerate([(200, 100, (10, 10, 40, 40)), (200, 100, (0, 0, 200, 100)),
                                     (100, 100, (50, 50, 60, 55))]):
        path = write_png(tmp_path / f"d{i}.png", (w, h))
        samples.append(Sample(str(path), (("car", "dog")[i % 2],), "train", box, (w, h)))
    # An image displayed rotated (EXIF orientation 6): stored 80x40, shown 40x80.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (80, 40), (0, 90, 200)).save(tmp_path / "rot.jpg", exif=exif)
    samples.append(Sample(str(tmp_path / "rot.jpg"), ("dog",), "train", (5, 5, 35, 75), (40, 80)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    samples.append(Sample(str(tmp_path / "broken.png"), ("car",), "train", (0, 0, 5, 5), (9, 9)))
    samples.append(Sample(str(tmp_path / "d0.png"), ("car",), "val", (150, 150, 300, 300), (200, 100)))
    manifest = Manifest(["car", "dog"], "detection", samples)
    report = inspect_manifest(manifest, tmp_path / "out", samples=6)
    assert sum(report.box_sides.counts) == 6
    assert report.box_sides.counts[3] == 1  # the 30x30 box: side 30, in 16-32
    assert sum(report.box_fractions.counts) == 6 and report.box_fractions.counts[-1] >= 1
    text = "\n".join(report.problems)
    assert "broken.png: cannot be decoded" in text
    assert "d0.png: listed 2 times" in text
    assert "box [150, 150, 300, 300] lies mostly outside the image" in text
    grid = Image.open(report.grid)
    assert grid.size == (6 * 160, 1 * (160 + 28))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == ["car", "dog"] and summary["problems"] == report.problems


def test_grid_shows_every_class(tmp_path):
    samples = [Sample(f"/x/a{i}.png", ("common",), "train") for i in range(50)]
    samples += [Sample("/x/rare.png", ("rare",), "train")]
    manifest = Manifest(["common", "rare"], "multiclass", samples)
    picked = pick_samples(manifest, 4, seed=1)
    assert len(picked) == 4 and 50 in picked
    assert picked == pick_samples(manifest, 4, seed=1)
