"""Real-photo image sets for benchmarks, cut from a Pascal VOC set (e.g. ../shared/data/raccoon-voc).

Every set is class folders under {train,val,test}/ split by source photo (70/15/15, seeded), so no
photo lends pixels to two splits:

- `crops`: the object's box (10% margin) vs box-free background regions, one crop per box and up
  to two background regions per photo (small: about 300 training images, as in many first tries);
- `crops_gray`: the same crops as grayscale photos saved as RGB JPEGs (equal channels, as the
  cameras of inspection lines give them);
- `patches`: jittered object crops vs background windows, many per photo (a few thousand images);
- `orientation`: every photo turned by 0, 90, 180 and 270 degrees, one class per angle.

    python benchmarks/real_sets.py ../shared/data/raccoon-voc /tmp/real-sets [--sets crops ...]
"""

from __future__ import annotations

import argparse
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SETS = ("crops", "crops_gray", "patches", "orientation")
CROP_SIZE = 128  # saved side of crops and patches (the model input is smaller)


def photo_split(name: str) -> str:
    """train/val/test for a photo, from a hash of its name (stable across runs and machines)."""
    bucket = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 70 else "val" if bucket < 85 else "test"


def read_voc(root: Path) -> list[tuple[Path, list[tuple[int, int, int, int]]]]:
    """(image path, [box xyxy in pixels]) for every annotated photo of a plain VOC layout."""
    photos = []
    for xml in sorted((root / "annotations").glob("*.xml")):
        tree = ET.parse(xml).getroot()
        image = root / "images" / tree.findtext("filename")
        boxes = [tuple(int(float(obj.findtext(f"bndbox/{k}"))) for k in ("xmin", "ymin", "xmax", "ymax"))
                 for obj in tree.iter("object")]
        if image.exists() and boxes:
            photos.append((image, boxes))
    return photos


def _save(image: Image.Image, path: Path, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gray:
        image = ImageOps.grayscale(image).convert("RGB")
    image.resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR).save(path, quality=92)


def _box_crop(image: Image.Image, box, margin: float = 0.1, jitter=None) -> Image.Image:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy, scale = (x1 + x2) / 2, (y1 + y2) / 2, 1 + 2 * margin
    if jitter is not None:
        cx += jitter.uniform(-0.15, 0.15) * w
        cy += jitter.uniform(-0.15, 0.15) * h
        scale *= jitter.uniform(0.8, 1.3)
    # a square window, moved (and shrunk if need be) to lie inside the photo: no black borders
    side = min(max(w, h) * scale, *image.size)
    left = min(max(cx - side / 2, 0), image.size[0] - side)
    top = min(max(cy - side / 2, 0), image.size[1] - side)
    return image.crop((int(left), int(top), int(left + side), int(top + side)))


def _free_windows(size, boxes, rng, count: int, min_side: int = 48, tries: int = 400):
    """Up to `count` square windows that overlap no box by more than 10% of their area."""
    width, height = size
    found = []
    for _ in range(tries):
        if len(found) == count:
            break
        side = int(rng.uniform(min_side, max(min_side + 1, min(width, height) * 0.6)))
        if side >= min(width, height):
            continue
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        overlap = max((max(0, min(x + side, b[2]) - max(x, b[0])) *
                       max(0, min(y + side, b[3]) - max(y, b[1])) for b in boxes), default=0)
        if overlap <= 0.1 * side * side:
            found.append((x, y, x + side, y + side))
    return found


def build(voc_root: str | Path, out: str | Path, sets=SETS, seed: int = 0) -> dict[str, Path]:
    """Write the chosen sets under `out`/<set>/; returns {set: folder}. Existing sets are kept."""
    photos, out = read_voc(Path(voc_root)), Path(out)
    folders = {}
    for name in sets:
        folder = out / name
        folders[name] = folder
        if (folder / ".done").exists():
            continue
        rng = np.random.default_rng(seed)
        for path, boxes in photos:
            split = photo_split(path.name)
            image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
            _write_photo(name, image, path.stem, boxes, split, folder, rng)
        (folder / ".done").write_text("")
    return folders


def _write_photo(name, image, stem, boxes, split, folder, rng) -> None:
    if name in ("crops", "crops_gray"):
        gray = name == "crops_gray"
        for k, box in enumerate(boxes):
            _save(_box_crop(image, box), folder / split / "object" / f"{stem}_object{k}.jpg", gray)
        for k, window in enumerate(_free_windows(image.size, boxes, rng, 2)):
            _save(image.crop(window), folder / split / "background" / f"{stem}_background{k}.jpg", gray)
    elif name == "patches":
        per_photo = 12 if split == "train" else 3
        for k in range(per_photo):
            box = boxes[k % len(boxes)]
            _save(_box_crop(image, box, jitter=rng), folder / split / "object" / f"{stem}_object{k}.jpg")
        for k, window in enumerate(_free_windows(image.size, boxes, rng, per_photo, min_side=40)):
            _save(image.crop(window), folder / split / "background" / f"{stem}_background{k}.jpg")
    elif name == "orientation":
        small = image.copy()
        small.thumbnail((160, 160))
        for angle in (0, 90, 180, 270):
            target = folder / split / f"rot{angle:03d}" / f"{stem}_rot{angle:03d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            small.rotate(angle, expand=True).save(target, quality=92)
    else:
        raise ValueError(f"unknown set {name!r}; expected one of {SETS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("voc_root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    args = parser.parse_args()
    for name, folder in build(args.voc_root, args.out, args.sets).items():
        counts = {split: sum(1 for _ in (folder / split).rglob("*.jpg"))
                  for split in ("train", "val", "test")}
        print(f"{name}: {folder} {counts}")


if __name__ == "__main__":
    main()
