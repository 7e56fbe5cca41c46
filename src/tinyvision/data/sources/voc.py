"""Pascal VOC XML -> Manifest (presence labels, or the largest object's class and box).

Layouts:
* VOCdevkit: `root` is a year folder (`VOC2012/` with Annotations/, JPEGImages/,
  ImageSets/Main/) or the `VOCdevkit/` folder holding several years (all are read). Splits come
  from the ImageSets/Main lists (`image_sets`, default train/val/test where they exist); without
  lists every XML is read and split later.
* Plain: `root/annotations/*.xml` + `root/images/`, or explicit `annotations` and `images` folders;
  split later.

Boxes are 1-based inclusive corners in VOC; they become pixel xyxy (see `boxes.py`), clipped to the
image. Objects marked `difficult` / `truncated` follow the `difficult` / `truncated` policies.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyvision.config import VocSource
from tinyvision.data.cache import image_extensions
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources.boxes import image_size, voc_to_xyxy
from tinyvision.data.sources.objects import (FLAG_DIFFICULT, FLAG_TRUNCATED, SPLIT_CODES,
                                             ObjectTable, Problems, escapes_root, select)
from tinyvision.errors import DataError, ImageTooLargeError

logger = logging.getLogger("tinyvision")

_CORNERS = ("xmin", "ymin", "xmax", "ymax")
_LAYOUT_HELP = ("Expected a VOCdevkit (VOCdevkit/VOC2012/Annotations, JPEGImages, ImageSets/Main), "
                "a year folder (VOC2012/), or a folder with annotations/ and images/ subfolders; "
                "or set data.source.annotations and data.source.images.")


@dataclass
class _Folder:
    """One annotations folder, its images folder, and {split: image ids} when lists exist."""

    annotations: Path
    images: Path
    sets: dict[str, list[str]] | None


@dataclass
class _Image:
    """One parsed XML file."""

    xml: str
    name: str
    path: str
    width: float
    height: float
    split: str
    objects: list[tuple[str, list[float], int, int]]  # (name, corners, flags, object number)


def load_voc(source: VocSource, task: str = "auto", seed: int = 0,
             crop_to_box: bool = False) -> Manifest:
    """The manifest a VOC source asks for."""
    problems = Problems()
    table = read_voc(source, problems)
    where = source.root or source.annotations
    policies = {FLAG_DIFFICULT: source.difficult, FLAG_TRUNCATED: source.truncated}
    manifest, _ = select(table, source, policies, task, seed, crop_to_box, problems,
                         f"Pascal VOC annotations in {where}")
    return manifest


def read_voc(source: VocSource, problems: Problems) -> ObjectTable:
    """Parse every XML of the source's layout into an object table."""
    images: list[_Image] = []
    for folder in _layout(source):
        images += _read_folder(folder, problems)
    if not images and not problems:
        raise DataError(f"No VOC XML annotations found under {source.root or source.annotations}. "
                        + _LAYOUT_HELP)
    return _table(images)


def _layout(source: VocSource) -> list[_Folder]:
    if source.annotations is not None and source.images is not None:
        for key in ("annotations", "images"):
            if not getattr(source, key).is_dir():
                raise DataError(f"data.source.{key}={getattr(source, key)} is not a folder.")
        return [_Folder(source.annotations, source.images, None)]
    root = source.root
    if root is None or not root.is_dir():
        raise DataError(f"data.source.root={root} is not a folder. " + _LAYOUT_HELP)
    if (root / "Annotations").is_dir():
        return [_year(root, source)]
    years = sorted(d for d in root.iterdir() if d.is_dir() and (d / "Annotations").is_dir())
    if years:
        return [_year(year, source) for year in years]
    if (root / "annotations").is_dir() and (root / "images").is_dir():
        return [_Folder(root / "annotations", root / "images", None)]
    raise DataError(f"{root} has no VOC layout. " + _LAYOUT_HELP)


def _year(folder: Path, source: VocSource) -> _Folder:
    """A VOCdevkit year folder; its ImageSets/Main lists give the splits."""
    main = folder / "ImageSets" / "Main"
    wanted = source.image_sets or {s: s for s in ("train", "val", "test")}
    sets = {}
    for split, name in wanted.items():
        listing = main / f"{name}.txt"
        if listing.is_file():
            sets[split] = [line.split()[0] for line in listing.read_text().splitlines()
                           if line.strip()]
        elif source.image_sets:
            raise DataError(f"Image set {listing} (data.source.image_sets.{split}={name!r}) does "
                            "not exist.")
    return _Folder(folder / "Annotations", folder / "JPEGImages", sets or None)


def _read_folder(folder: _Folder, problems: Problems) -> list[_Image]:
    """Parse the listed (or all) XML files of one folder."""
    if folder.sets is None:
        names = sorted(p for p in os.listdir(folder.annotations) if p.lower().endswith(".xml"))
        jobs = [(folder.annotations / name, "") for name in names]
    else:
        seen: dict[str, str] = {}
        jobs = []
        for split, ids in folder.sets.items():
            for image_id in ids:
                if image_id in seen:
                    problems.add(f"{folder.annotations.parent}: image {image_id} is in both the "
                                 f"{seen[image_id]} and {split} image sets")
                    continue
                seen[image_id] = split
                jobs.append((folder.annotations / f"{image_id}.xml", split))
    listing = _image_files(folder.images)
    images, fallbacks = [], []
    for xml, split in jobs:
        image = _parse(xml, folder.images, split, problems, listing, fallbacks)
        if image is not None:
            images.append(image)
    if fallbacks:
        given, used = fallbacks[0]
        logger.warning("%s: %d XML file(s) name an image that does not exist; used the image named "
                       "like the XML file instead (e.g. %s -> %s), as VOC loaders do.",
                       folder.annotations, len(fallbacks), given, used)
    return images


def _image_files(folder: Path) -> dict[str, list[str]]:
    """{file stem: [file names]} of the images folder, to find an image the XML misnames."""
    by_stem: dict[str, list[str]] = {}
    extensions = image_extensions()
    if folder.is_dir():
        for name in sorted(os.listdir(folder)):
            if os.path.splitext(name)[1].lower() in extensions:
                by_stem.setdefault(os.path.splitext(name)[0], []).append(name)
    return by_stem


def _parse(xml: Path, images: Path, split: str, problems: Problems,
           listing: dict[str, list[str]] | None = None,
           fallbacks: list[tuple[str, str]] | None = None) -> _Image | None:
    """One XML file, or None (with a problem) when it cannot be used at all.

    An image that `<filename>` names but the folder lacks (a set converted from PNG to JPEG keeps
    000088.png in its XML) is looked up by the XML file's name (the image-set ID) with any
    image extension the folder has; each such fallback is added to `fallbacks`."""
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        problems.add(f"{xml}: listed in the image sets but the file does not exist")
        return None
    except ET.ParseError as exc:
        problems.add(f"{xml}: not valid XML ({exc})")
        return None
    name = (root.findtext("filename") or "").strip() or f"{xml.stem}.jpg"
    if escapes_root(name):
        problems.add(f"{xml}: filename {name!r} escapes the images folder {images}", fatal=True)
        return None
    path = os.path.join(os.path.abspath(images), name)
    if listing is not None and not os.path.exists(path):
        stem = os.path.splitext(os.path.basename(name))[0]
        found = listing.get(xml.stem) or listing.get(stem)
        if found:
            fallbacks.append((name, found[0]))
            name, path = found[0], os.path.join(os.path.abspath(images), found[0])
    size = _size(root, xml, path, problems)
    if size is None:
        return None
    objects = []
    for number, obj in enumerate(root.findall("object"), start=1):
        parsed = _object(obj)
        if isinstance(parsed, str):
            problems.add(f"{xml}: object #{number} {parsed}")
        else:
            objects.append((*parsed, number))
    return _Image(str(xml), name, path, size[0], size[1], split, objects)


def _size(root: ET.Element, xml: Path, path: str, problems: Problems) -> tuple[float, float] | None:
    """(width, height) from <size>, or from the image header when <size> is missing or zero."""
    try:
        width = float(root.findtext("size/width") or 0)
        height = float(root.findtext("size/height") or 0)
    except ValueError:
        width = height = 0.0
    if width > 0 and height > 0:
        return width, height
    try:
        return tuple(float(v) for v in image_size(path))  # type: ignore[return-value]
    except ImageTooLargeError as exc:
        problems.add(f"{xml}: {exc}")
        return None
    except DataError:
        problems.add(f"{xml}: <size> is missing or zero and the image {path} cannot be read to "
                     "measure it")
        return None


def _object(obj: ET.Element) -> tuple[str, list[float], int] | str:
    """(name, VOC corners, flags) of one <object>, or what is wrong with it."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        return "has no <name>"
    box = obj.find("bndbox")
    if box is None:
        return f"({name!r}) has no <bndbox>"
    try:
        corners = [float(box.findtext(k)) for k in _CORNERS]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        found = {k: box.findtext(k) for k in _CORNERS}
        return f"({name!r}) has a bad <bndbox> {found}; expected numbers xmin, ymin, xmax, ymax"
    flags = (FLAG_DIFFICULT if _flag(obj, "difficult") else 0) | \
        (FLAG_TRUNCATED if _flag(obj, "truncated") else 0)
    return name, corners, flags


def _flag(obj: ET.Element, tag: str) -> bool:
    text = (obj.findtext(tag) or "0").strip().lower()
    return text in ("1", "true", "yes") or (text.replace(".", "", 1).isdigit() and float(text) > 0)


def _table(images: list[_Image]) -> ObjectTable:
    categories = sorted({o[0] for im in images for o in im.objects})
    index = {c: i for i, c in enumerate(categories)}
    rows = [(i, index[o[0]], o[1], o[2], o[3]) for i, im in enumerate(images) for o in im.objects]
    n = len(images)
    corners = np.array([r[2] for r in rows], np.float64).reshape(-1, 4)
    return ObjectTable(
        files=[im.xml for im in images], entry_formats=["object #{}"] * n,
        paths=[im.path for im in images], names=[im.name for im in images],
        image_file=np.arange(n, dtype=np.int32),
        width=np.array([im.width for im in images], np.float64),
        height=np.array([im.height for im in images], np.float64),
        split=np.array([SPLIT_CODES[im.split] for im in images], np.int8), categories=categories,
        obj_image=np.array([r[0] for r in rows], np.int64),
        obj_cat=np.array([r[1] for r in rows], np.int32),
        obj_box=voc_to_xyxy(corners),
        obj_flags=np.array([r[3] for r in rows], np.uint8),
        obj_entry=np.array([r[4] for r in rows], np.int64))
