import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_class_folders, write_image
from tinyvision.data.cache import BadImage, DecodeSpec, build_cache, decode_image
from tinyvision.data.manifest import Manifest, Sample
from tinyvision.data.sources.folder import load_folder

RGB16 = DecodeSpec((16, 16))


def solid(path, colour, size=(20, 10), mode="RGB", **save):
    Image.new(mode, size, colour).save(path, **save)
    return path


def test_rgb_png_resized_exactly(tmp_path):
    image = decode_image(solid(tmp_path / "a.png", (10, 20, 30)), DecodeSpec((8, 12)))
    assert image.shape == (8, 12, 3) and image.dtype == np.uint8
    assert (image == [10, 20, 30]).all()


def test_grayscale_output(tmp_path):
    image = decode_image(solid(tmp_path / "a.png", (255, 0, 0)), DecodeSpec((8, 8), "grayscale"))
    assert image.shape == (8, 8, 1)
    assert image[0, 0, 0] == 76  # ITU-R 601-2 luma: 0.299 * 255


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, quality=100)  # pure red in CMYK
    image = decode_image(path, RGB16)
    red, green, blue = image[8, 8].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_palette_with_transparency_over_white(tmp_path):
    path = tmp_path / "p.png"
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    palette.save(path, transparency=0)  # index 0 (blue) is fully transparent
    assert (decode_image(path, RGB16) == 255).all()


def test_rgba_alpha_composited(tmp_path):
    path = solid(tmp_path / "a.png", (0, 0, 0, 128), mode="RGBA")
    assert abs(int(decode_image(path, RGB16)[0, 0, 0]) - 127) <= 1  # half black over white


def test_16_bit_grayscale_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((10, 10), 32896, np.uint16)).save(path)  # 32896 / 257 = 128
    image = decode_image(path, DecodeSpec((4, 4), "grayscale"))
    assert (image == 128).all()


def test_exif_orientation_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white in stored pixels
    stored = Image.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the white half ends up on top
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    image = decode_image(path, DecodeSpec((40, 20), "grayscale"))  # displayed: 20 wide, 40 tall
    assert image[5, 10, 0] > 200 and image[35, 10, 0] < 50


def test_jpeg_draft_mode_matches_full_decode(tmp_path):
    big = write_image(tmp_path / "big.jpg", (90, 160, 200), size=(800, 600))
    small = decode_image(big, DecodeSpec((48, 64)))
    with Image.open(big) as im:
        full = np.asarray(im.convert("RGB").resize((64, 48), Image.Resampling.BILINEAR))
    assert np.abs(small.astype(int) - full).mean() < 3


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot decode"),
    (b"this is not an image at all", "cannot decode"),
])
def test_unreadable_files(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        decode_image(path, RGB16)


def test_truncated_jpeg(tmp_path):
    path = write_image(tmp_path / "t.jpg", size=(200, 200))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(BadImage, match="truncated|cannot decode"):
        decode_image(path, RGB16)


def test_decompression_bomb_refused_in_our_words_only(tmp_path, caplog):
    """95 MP: over tinyvision's limit, under Pillow's own error limit (Pillow only warns). The
    refusal is said once, by tinyvision; Pillow's DecompressionBombWarning is not repeated."""
    path = tmp_path / "bomb.png"
    Image.new("1", (10_000, 9_500)).save(path)  # 95 MP, a few kB on disk
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning, Pillow's included, fails the test
        with pytest.raises(BadImage, match="90 MP limit"):
            decode_image(path, RGB16)
    write_image(tmp_path / "ok.png")
    manifest = Manifest(["a"], "multiclass", [Sample(str(path), ("a",), "train"),
                                              Sample(str(tmp_path / "ok.png"), ("a",), "train")])
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        cache = build_cache(manifest, RGB16, tmp_path / "cache", workers=2, progress=False)
    assert not [w for w in shown if issubclass(w.category, Image.DecompressionBombWarning)]
    assert [reason for _, reason in cache.bad] == ["10000x9500 pixels is over the 90 MP limit "
                                                   "(possible decompression bomb)"]
    said = [r.getMessage() for r in caplog.records if "bomb.png" in r.getMessage()]
    assert len(said) == 1 and "90 MP limit" in said[0]


def test_resize_modes(tmp_path):
    path = tmp_path / "wide.png"
    pixels = np.zeros((10, 40, 3), np.uint8)
    pixels[:, 15:25] = 255  # white band in the centre
    Image.fromarray(pixels).save(path)
    crop = decode_image(path, DecodeSpec((10, 10), resize="center_crop"))
    assert crop[5, 1:9].min() > 200  # only the central square is kept: mostly the white band
    box = decode_image(path, DecodeSpec((20, 20), resize="letterbox"))
    assert (box[0, :, 0] == 128).all() and (box[19, :, 0] == 128).all()  # padded top and bottom
    assert box[10, 10, 0] == 255


def test_crop_to_box_with_margin(tmp_path):
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[40:60, 40:60] = 255
    path = tmp_path / "box.png"
    Image.fromarray(pixels).save(path)
    spec = DecodeSpec((20, 20), crop_to_box=True, crop_margin=0.0)
    assert decode_image(path, spec, box=(40, 40, 60, 60)).min() == 255
    with_margin = decode_image(path, DecodeSpec((30, 30), crop_to_box=True, crop_margin=0.5),
                               box=(40, 40, 60, 60))
    assert with_margin[0, 0, 0] == 0 and with_margin[15, 15, 0] == 255


def test_cache_lists_bad_images_and_keeps_good_ones(tmp_path):
    root = make_class_folders(tmp_path / "img", per_class=3, classes=("red", "blue"))
    (root / "red" / "zero.jpg").write_bytes(b"")
    cmyk = root / "blue" / "cmyk.jpg"
    Image.new("CMYK", (20, 20), (255, 0, 0, 0)).save(cmyk)
    manifest = load_folder(root)
    cache = build_cache(manifest, RGB16, tmp_path / "cache", workers=2, progress=False)
    bad_paths = [p for p, _ in cache.bad]
    assert bad_paths == [str((root / "red" / "zero.jpg").resolve())]
    assert cache.valid.sum() == len(manifest) - 1
    cyan = cache.images[manifest.paths.index(str(cmyk.resolve()))]
    assert cyan[..., 0].mean() < 60 and cyan[..., 2].mean() > 200


def test_cache_reused_then_rebuilt_when_an_image_changes(tmp_path):
    root = make_class_folders(tmp_path / "img", per_class=2, classes=("red", "blue"))
    manifest = load_folder(root)
    first = build_cache(manifest, RGB16, tmp_path / "cache", progress=False)
    second = build_cache(manifest, RGB16, tmp_path / "cache", progress=False)
    assert not first.reused and second.reused and second.path == first.path
    np.testing.assert_array_equal(first.images, second.images)

    changed = manifest.samples[0].path
    solid(changed, (1, 2, 3), size=(40, 30))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # mtime surely differs
    third = build_cache(manifest, RGB16, tmp_path / "cache", progress=False)
    assert not third.reused and third.path != first.path
    assert (third.images[0] == [1, 2, 3]).all()

    other_size = build_cache(manifest, DecodeSpec((8, 8)), tmp_path / "cache", progress=False)
    assert not other_size.reused and other_size.images.shape == (4, 8, 8, 3)


def test_interrupted_cache_build_is_not_reused(tmp_path):
    root = make_class_folders(tmp_path / "img", per_class=2, classes=("red", "blue"))
    manifest = load_folder(root)
    cache = build_cache(manifest, RGB16, tmp_path / "cache", progress=False)
    cache.path.with_suffix(".json").unlink()  # as if the build died before its metadata landed
    assert not build_cache(manifest, RGB16, tmp_path / "cache", progress=False).reused


@pytest.mark.parametrize("resize, expected", [
    ("stretch", [0.25, 0.5, 0.5, 1.0]),
    # 40x20 image letterboxed into 20x20: scale 0.5, 5-pixel bands above and below.
    ("letterbox", [0.25, 0.5, 0.5, 0.75]),
    # center crop keeps x 10..30 of the 40-pixel width: the box's x 10..20 -> 0..0.5.
    ("center_crop", [0.0, 0.5, 0.5, 1.0]),
])
def test_boxes_follow_the_resize(tmp_path, resize, expected):
    path = solid(tmp_path / "w.png", (9, 9, 9), size=(40, 20))
    spec = DecodeSpec((20, 20), resize=resize)
    manifest = Manifest(["a", "b"], "detection", [Sample(str(path), ("a",), "train", (10, 10, 20, 20))])
    cache = build_cache(manifest, spec, tmp_path / "cache", progress=False)
    np.testing.assert_allclose(cache.boxes[0], expected, atol=1e-6)
    reused = build_cache(manifest, spec, tmp_path / "cache", progress=False)
    assert reused.reused
    np.testing.assert_allclose(reused.boxes[0], expected, atol=1e-6)


# ---- what the cache is keyed on, and a full disk --------------------------------------------------
def _box_manifest(root, boxes):
    paths = [write_image(root / f"{i}.png", (200, 40, 40), seed=i) for i in range(len(boxes))]
    return Manifest(["cat"], "detection",
                    [Sample(str(p), ("cat",), "train", b) for p, b in zip(paths, boxes)])


def test_the_cache_is_keyed_on_boxes_inode_and_ctime(tmp_path):
    """Boxes live in the cache: a run with boxes never reuses one built without, a corrected box
    gives a new cache; a replaced file with the same size and mtime is noticed (inode, ctime)."""
    spec = DecodeSpec((16, 16))
    with_boxes = _box_manifest(tmp_path / "img", [(1, 1, 20, 20), (2, 2, 30, 25)])
    without = Manifest(["cat"], "multiclass",
                       [Sample(s.path, s.labels, s.split) for s in with_boxes.samples])
    classification = build_cache(without, spec, tmp_path / "cache", progress=False)
    detection = build_cache(with_boxes, spec, tmp_path / "cache", progress=False)
    assert classification.path != detection.path and not detection.reused
    assert np.isfinite(detection.boxes).all()  # not the NaN boxes of the classification cache
    corrected = Manifest(["cat"], "detection", [with_boxes.samples[0], Sample(
        with_boxes.samples[1].path, ("cat",), "train", (2, 2, 35, 25))])
    assert build_cache(corrected, spec, tmp_path / "cache", progress=False).path != detection.path
    # replace a file by another of the same size, keeping its mtime: a new inode and ctime
    first = with_boxes.samples[0].path
    stat = os.stat(first)
    replacement = write_image(tmp_path / "other.png", (40, 200, 40), seed=0)
    os.replace(replacement, first)
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = build_cache(with_boxes, spec, tmp_path / "cache", progress=False)
    assert again.path != detection.path and not again.reused


def test_stale_temporary_files_of_a_killed_run_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / f".abc.u8.{dead}.k2j4.tmp"
    stale.write_bytes(b"\0" * 100)
    live = cache / f".def.u8.{os.getpid()}.x9z1.tmp"  # a writer that is still running
    live.write_bytes(b"\0")
    manifest = Manifest(["cat"], "multiclass", [Sample(str(write_image(tmp_path / "a.png")),
                                                       ("cat",), "train")])
    build_cache(manifest, DecodeSpec((8, 8)), cache, progress=False)
    assert not stale.exists() and live.exists()


@pytest.fixture
def small_filesystem(tmp_path):
    """A 1 MiB tmpfs mounted by the test (skipped where the machine cannot mount one)."""
    import shutil
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_is_a_clear_error_not_a_crash(tmp_path, small_filesystem):
    """40 images of 96x96x3 need 1,105,920 bytes: more than the 1 MiB disk. The space is
    reserved before the memory map is written, so the process gets a message (bytes needed and
    free), not SIGBUS, and no half-written file is left."""
    from tinyvision.errors import DiskFullError

    paths = [write_image(tmp_path / "img" / f"{i}.png", seed=i) for i in range(40)]
    manifest = Manifest(["cat"], "multiclass", [Sample(str(p), ("cat",), "train") for p in paths])
    with pytest.raises(DiskFullError, match=r"The image cache needs 1,105,920 bytes in .*small, "
                                            r"but only [\d,]+ are free.*data.cache_dir"):
        build_cache(manifest, DecodeSpec((96, 96)), small_filesystem, progress=False)
    assert not list(small_filesystem.iterdir())


@pytest.mark.slow
def test_a_detection_run_never_reuses_a_classification_runs_cache_through_the_cli(tmp_path):
    """Two `tinyvision train` runs on the same images and cache folder: labels only, then boxes.
    The second builds its own cache (boxes are part of the key), so its box targets are real."""
    import json

    import yaml
    from typer.testing import CliRunner

    from helpers import tiny_config
    from tinyvision.cli import app

    rows_labels, rows_boxes = ["path,label"], ["path,x1,y1,x2,y2,label"]
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        for i in range(10):
            write_image(tmp_path / "img" / f"{name}{i}.png", colour, size=(40, 30), seed=i)
            rows_labels.append(f"{name}{i}.png,{name}")
            rows_boxes.append(f"{name}{i}.png,2,2,30,25,{name}")
    (tmp_path / "img" / "labels.csv").write_text("\n".join(rows_labels) + "\n")
    (tmp_path / "img" / "boxes.csv").write_text("\n".join(rows_boxes) + "\n")
    cache = tmp_path / "cache"
    for name, csv in (("labels", "labels.csv"), ("boxes", "boxes.csv")):
        raw = tiny_config(tmp_path / "img", tmp_path / "runs", name=name,
                          data={"source": {"format": "csv", "path": str(tmp_path / "img" / csv)},
                                "cache_dir": str(cache)})
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(raw))
        result = CliRunner().invoke(app, ["train", str(config), "--quiet"])
        # a few steps may leave the box branch too flat to export; evaluation is kept anyway
        assert result.exit_code == 0 or "export_failed" in result.output, result.output
    assert len(list(cache.glob("*.json"))) == 2
    summary = json.loads((tmp_path / "runs" / "boxes" / "summary.json").read_text())
    # with the classification cache's NaN boxes the box metrics would be NaN
    assert summary["task"] == "detection" and 0.0 <= summary["float"]["mean_iou"] <= 1.0


def test_cached_images_index_like_the_array_they_hold_and_keep_nothing_mapped(tmp_path):
    """The cache file read by positioned reads gives what numpy indexing of the same array gives,
    for every kind of index a stage uses; a copy survives pickling (worker processes)."""
    import pickle

    from tinyvision.data.cache import CachedImages

    truth = np.random.default_rng(0).integers(0, 256, (23, 4, 5, 3), dtype=np.uint8)
    path = tmp_path / "images.u8"
    path.write_bytes(truth.tobytes())
    images = CachedImages(path, truth.shape)
    assert len(images) == 23 and images.shape == truth.shape and images.dtype == np.uint8
    for key in (0, 22, -1, slice(3, 9), slice(None, None, 4), np.array([5, 1, 2, 3, 20, 5]),
                np.array([], np.int64), np.array([[1, 2], [7, 0]]), truth[:, 0, 0, 0] > 128,
                [4, 3, 2]):
        np.testing.assert_array_equal(images[key], truth[key])
    np.testing.assert_array_equal(np.asarray(images), truth)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(images))[[2, 9]], truth[[2, 9]])
    with pytest.raises(IndexError):
        images[23]
    with pytest.raises(IndexError):
        images[np.array([0, 40])]
    maps = Path("/proc/self/maps").read_text()
    assert str(path) not in maps  # nothing of the file is mapped into the process
