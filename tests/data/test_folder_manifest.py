from collections import Counter

import pytest

from helpers import make_class_folders, write_image
from tinyvision.config import DataConfig
from tinyvision.data.manifest import Manifest, Sample, assign_splits
from tinyvision.data.sources import build_manifest
from tinyvision.data.sources.folder import load_folder
from tinyvision.errors import DataError


def test_class_folders_become_a_multiclass_manifest(colour_folders):
    manifest = load_folder(colour_folders)
    assert manifest.task == "multiclass"
    assert manifest.classes == ["blue", "green", "red"]
    assert len(manifest) == 36
    assert all(s.split == "" for s in manifest.samples)


def test_same_file_name_in_two_folders_is_multilabel(tmp_path):
    make_class_folders(tmp_path, per_class=3, classes=("red", "blue"))
    write_image(tmp_path / "red" / "both.png", (200, 0, 200))
    write_image(tmp_path / "blue" / "both.png", (200, 0, 200))
    manifest = load_folder(tmp_path)
    assert manifest.task == "multilabel"
    both = [s for s in manifest.samples if s.path.endswith("both.png")]
    assert len(both) == 1 and both[0].labels == ("blue", "red")
    with pytest.raises(DataError, match=r"both.png is in several class folders"):
        load_folder(tmp_path, task="multiclass")


def test_only_image_extensions_are_read(tmp_path):
    make_class_folders(tmp_path, per_class=2, classes=("red", "blue"))
    (tmp_path / "red" / "notes.txt").write_text("not an image")
    (tmp_path / "red" / ".hidden").mkdir()
    assert len(load_folder(tmp_path)) == 4


def test_split_folders_are_kept_and_missing_val_is_carved_from_train(tmp_path):
    make_class_folders(tmp_path / "train", per_class=10, classes=("red", "blue"))
    make_class_folders(tmp_path / "test", per_class=3, classes=("red", "blue"))
    data = DataConfig(source={"format": "folder", "root": str(tmp_path)}, val_fraction=0.2)
    manifest = build_manifest(data, seed=0)
    splits = Counter(s.split for s in manifest.samples)
    assert splits == {"train": 16, "val": 4, "test": 6}
    assert all("/test/" in s.path for s in manifest.samples if s.split == "test")


def test_seeded_split_is_stratified_and_deterministic(colour_folders):
    data = DataConfig(source={"format": "folder", "root": str(colour_folders)},
                      val_fraction=0.25, test_fraction=0.25)
    first, second = build_manifest(data, seed=3), build_manifest(data, seed=3)
    assert [s.split for s in first.samples] == [s.split for s in second.samples]
    counts = first.counts()
    for c in first.classes:  # 12 per class -> 3 val, 3 test, 6 train each
        assert (counts["train"][c], counts["val"][c], counts["test"][c]) == (6, 3, 3)
    other = build_manifest(data, seed=4)
    assert [s.split for s in other.samples] != [s.split for s in first.samples]


def test_rare_class_reaches_every_split():
    samples = [Sample(f"a{i}", ("a",)) for i in range(50)] + [Sample(f"b{i}", ("b",)) for i in range(3)]
    splits = Counter(s.split for s in assign_splits(samples, 0.1, 0.1, seed=0) if s.labels == ("b",))
    assert splits == {"train": 1, "val": 1, "test": 1}


def test_manifest_round_trip_and_matrices(tmp_path):
    manifest = Manifest(["a", "b", "c"], "multilabel",
                        [Sample("/x/1.jpg", ("a", "c"), "train"), Sample("/x/2.jpg", ("b",), "test")])
    path = tmp_path / "manifest.jsonl"
    manifest.save(path)
    loaded = Manifest.load(path)
    assert loaded.samples == manifest.samples and loaded.classes == manifest.classes
    assert loaded.fingerprint() == manifest.fingerprint()
    assert loaded.label_matrix().tolist() == [[1, 0, 1], [0, 1, 0]]
    assert loaded.split("test").paths == ["/x/2.jpg"]


def test_manifest_validation_names_bad_rows():
    manifest = Manifest(["a", "b"], "multiclass",
                        [Sample("/x/1.jpg", ("z",), "train"), Sample("/x/2.jpg", ("a", "b"), "val")])
    with pytest.raises(DataError, match=r"(?s)2 bad row\(s\).*1.jpg: unknown label\(s\) \['z'\]"
                                        r".*2.jpg: a multi-class"):
        manifest.validate()


def test_malformed_manifest_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"format": "tinyvision-manifest", "task": "multiclass", "classes": ["a"]}\n{"pa')
    with pytest.raises(DataError, match=r"malformed at line 2"):
        Manifest.load(path)


@pytest.mark.parametrize("setup, pattern", [
    ("missing", r"does not exist or is not a folder"),
    ("empty", r"No images"),
    ("one_class", r"only one class folder"),
])
def test_folder_errors(tmp_path, setup, pattern):
    root = tmp_path / "images"
    if setup == "empty":
        root.mkdir()
    if setup == "one_class":
        write_image(root / "cat" / "1.png")
    with pytest.raises(DataError, match=pattern):
        load_folder(root)


def test_every_image_format_pillow_reads_is_taken_and_other_files_are_counted(tmp_path, caplog):
    """A palette GIF, a TIFF and a WebP are images like PNGs; a notes.txt and a labels.json are
    skipped and reported in one line by extension."""
    import logging

    from PIL import Image

    root = make_class_folders(tmp_path / "images", per_class=2, classes=("red", "green"))
    Image.new("P", (20, 20), 3).save(root / "red" / "palette.gif")
    Image.new("RGB", (20, 20), (200, 0, 0)).save(root / "red" / "scan.tiff")
    Image.new("RGB", (20, 20), (0, 200, 0)).save(root / "green" / "phone.webp")
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "green" / "labels.json").write_text("{}")
    (root / "green" / "more.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="tinyvision"):
        manifest = load_folder(root)
    names = sorted(s.path.rsplit("/", 1)[-1] for s in manifest.samples)
    assert {"palette.gif", "scan.tiff", "phone.webp"} <= set(names) and len(names) == 7
    lines = [r.getMessage() for r in caplog.records if "not images" in r.getMessage()]
    assert len(lines) == 1 and "skipped 3 file(s)" in lines[0] and "2 .txt, 1 .json" in lines[0]
