"""COCO instances JSON -> Manifest (presence labels, or the largest object's class and box).

Full COCO train2017 is ~450 MB of JSON, most of it polygon coordinates that labels never need:
parsing them all makes ~46 million Python floats (measured here: ~30 s and 4.5 GB). So the
`segmentation` values are cut out of the raw bytes before orjson parses the rest (a regex that only
accepts plain numeric polygons and flat RLE objects; anything it would mis-cut makes the JSON
invalid, and then the untouched file is parsed instead), the cyclic garbage collector is paused
while the ~1 million small dicts are created, and the fields are pulled into numpy columns at once.
Grouping, thresholds, caps and negative sampling then run vectorised in `objects.select`.
"""

from __future__ import annotations

import gc
import os
import re
from contextlib import contextmanager
from pathlib import Path
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Callable, Iterator

import numpy as np
import orjson

from tinyvision.config import CocoSource
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources.boxes import coco_to_xyxy
from tinyvision.data.sources.objects import (FLAG_CROWD, SPLIT_CODES, ObjectTable, Problems,
                                             concat_tables, escapes_root, select)
from tinyvision.errors import DataError

_SEGMENTATION = re.compile(
    rb'"segmentation"\s*:\s*(?:\[[-+0-9.eE,\s\[\]]*\]|\{[^{}]*\})')
_SEGMENTATION_NULL = b'"segmentation":null'


def load_coco(source: CocoSource, task: str = "auto", seed: int = 0,
              crop_to_box: bool = False) -> Manifest:
    """The manifest a COCO source asks for; splits as the annotation files give them."""
    return build_coco(source, task, seed, crop_to_box)[0]


def build_coco(source: CocoSource, task: str = "auto", seed: int = 0, crop_to_box: bool = False
               ) -> tuple[Manifest, dict[str, str]]:
    """The manifest, and {image path: coco_url} of its images (for `data download`)."""
    problems = Problems()
    area_key = "area" if source.area == "segmentation" else None
    tables = [read_coco(path, images, split, problems, area_key)
              for split, path, images in source.annotation_files()]
    table = concat_tables(tables)
    what = "COCO annotations " + " + ".join(str(path) for _, path, _ in source.annotation_files())
    manifest, chosen = select(table, source, {FLAG_CROWD: source.crowd_policy}, task, seed,
                              crop_to_box, problems, what)
    urls = {table.paths[i]: table.urls[i] for i in chosen.tolist() if table.urls[i]}
    return manifest, urls


def read_coco(path: str | Path, images_root: str | Path, split: str = "",
              problems: Problems | None = None, area_key: str | None = None) -> ObjectTable:
    """Read one instances file into an object table (images under `images_root`).

    Malformed entries, unknown ids and unsafe file names are added to `problems` and left out;
    the caller reports them all at once.
    """
    problems = problems if problems is not None else Problems()
    path = Path(path)
    # One pause from parsing to freeing the document: re-enabling the collector while the
    # million dicts are alive would make it traverse them all once more (~1 s).
    with _gc_paused():
        document = read_json(path)
        images = _require_list(document, "images", path)
        annotations = _require_list(document, "annotations", path)
        categories = _require_list(document, "categories", path)
        image_cols = _image_columns(images, path, problems)
        cat_ids, cat_names = _category_columns(categories, path)
        ann_cols = _annotation_columns(annotations, path, problems, area_key)
        del document, images, annotations, categories
    ids, names, width, height, urls, image_entry = image_cols
    paths = _image_paths(names, image_entry, Path(images_root), path, problems)
    keep, obj_image, obj_cat = _link(ann_cols, ids, cat_ids, names, path, problems)
    n = len(names)
    return ObjectTable(
        files=[str(path)], entry_formats=["annotations[{}]"], paths=paths, names=names,
        image_file=np.zeros(n, np.int32), width=width, height=height,
        split=np.full(n, SPLIT_CODES[split], np.int8), categories=cat_names,
        obj_image=obj_image, obj_cat=obj_cat.astype(np.int32),
        obj_box=coco_to_xyxy(ann_cols["bbox"][keep]) if keep.any() else np.zeros((0, 4)),
        obj_flags=np.where(ann_cols["iscrowd"][keep] != 0, FLAG_CROWD, 0).astype(np.uint8),
        obj_entry=ann_cols["entry"][keep],
        obj_area=ann_cols["area"][keep] if area_key else None, urls=urls)


# ---- parsing ---------------------------------------------------------------------------------
def read_json(path: Path) -> dict:
    """Parse a COCO file, skipping the segmentation polygons (see the module docstring)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"COCO annotation file {path} does not exist; check data.source "
                        "annotations (paths are relative to the config file).") from None
    except OSError as exc:
        raise DataError(f"Cannot read COCO annotation file {path}: {exc.strerror}.") from exc
    stripped = _SEGMENTATION.sub(_SEGMENTATION_NULL, raw)
    del raw
    with _gc_paused():
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            document = _parse_untouched(path)
    if not isinstance(document, dict):
        raise DataError(f"{path} is not a COCO instances file: the top level is a "
                        f"{type(document).__name__}, expected an object with images, "
                        "annotations and categories.")
    return document


def _parse_untouched(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}. Re-download or re-export it.") from None


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: creating a million small dicts otherwise triggers
    collections that traverse all of them again and again (measured: parsing ~2.5x slower)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _require_list(document: dict, key: str, path: Path) -> list:
    value = document.get(key)
    if not isinstance(value, list):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise DataError(f"{path} is not a COCO instances file: `{key}` is {found}, expected a list. "
                        "Use an instances_*.json file (captions and keypoints files lack boxes).")
    return value


def _image_columns(images: list, path: Path, problems: Problems
                   ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, list, np.ndarray]:
    """(ids, file names, widths, heights, coco_urls, entry numbers) of the well-formed images."""
    cols, entry = _columns(images, _IMAGE_SPEC, _image_problem, "images", path, problems)
    ids = cols["id"]
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dupes = unique[counts > 1]
        problems.add_many([f"{path}: image id {d} appears in several images entries"
                           for d in dupes[:Problems.LIMIT].tolist()], len(dupes))
    good = images if len(entry) == len(images) else [images[i] for i in entry.tolist()]
    urls = [im.get("coco_url") for im in good]
    return ids, cols["file_name"], cols["width"], cols["height"], urls, entry


def _category_columns(categories: list, path: Path) -> tuple[np.ndarray, list[str]]:
    """(ids, names) of the categories; a malformed category list is an error of its own."""
    for i, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_number(category.get("id"), integer=True) \
                or not isinstance(category.get("name"), str):
            raise DataError(f"{path}: categories[{i}] needs an integer `id` and a string `name`; "
                            f"got {str(category)[:120]}.")
    ids = [c["id"] for c in categories]
    names = [c["name"] for c in categories]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise DataError(f"{path}: category ids and names must be unique.")
    return np.array(ids, np.int64), names


def _annotation_columns(annotations: list, path: Path, problems: Problems,
                        area_key: str | None) -> dict[str, np.ndarray]:
    """Columns of the well-formed annotations: image_id, category_id, bbox, area, iscrowd, entry."""
    spec = _ANNOTATION_SPEC + (((area_key, "number"),) if area_key else ())
    cols, entry = _columns(annotations, spec, _annotation_problem, "annotations", path, problems)
    good = annotations if len(entry) == len(annotations) else [annotations[i] for i in entry.tolist()]
    crowd = map(bool, map(dict.get, good, repeat("iscrowd")))  # absent, 0 or null: not crowd
    cols["iscrowd"] = np.fromiter(crowd, bool, len(good))
    cols["entry"] = entry
    if area_key:
        cols["area"] = cols.pop(area_key)
    return cols


# Columns read from each entry and what they must hold.
_IMAGE_SPEC = (("id", "int"), ("file_name", "name"), ("width", "size"), ("height", "size"))
_ANNOTATION_SPEC = (("image_id", "int"), ("category_id", "int"), ("bbox", "box"))


def _columns(entries: list, spec: tuple, check: Callable[[object, tuple], str | None], name: str,
             path: Path, problems: Problems) -> tuple[dict, np.ndarray]:
    """(columns, entry numbers) of the well-formed entries. One pass per column over all entries;
    only when that finds a malformed one are entries checked one by one (each bad one becomes a
    problem naming `name[i]`) and the good ones read again."""
    cols = _fast_columns(entries, spec)
    if cols is not None:
        return cols, np.arange(len(entries), dtype=np.int64)
    keys = tuple(key for key, _ in spec)
    good = []
    for i, entry in enumerate(entries):
        issue = check(entry, keys)
        if issue:
            problems.add(f"{path}: {name}[{i}] {issue}")
        else:
            good.append(i)
    cols = _fast_columns([entries[i] for i in good], spec)
    if cols is None:  # the per-entry check let something through that the columns refuse
        raise AssertionError(f"{path}: {name} entries passed their checks but not the columns")
    return cols, np.array(good, np.int64)


def _fast_columns(entries: list, spec: tuple) -> dict | None:
    """Every column as an array (a list of str for names), or None if any entry is malformed.

    Types are checked per column with one `set(map(type, ...))`, then `np.fromiter` converts
    (several times faster than `np.array` on lists of Python numbers)."""
    cols: dict = {}
    n = len(entries)
    try:
        for key, kind in spec:
            values = list(map(itemgetter(key), entries))
            if kind == "name":
                if not set(map(type, values)) <= {str} or not all(values):
                    return None
                cols[key] = values
            elif kind == "box":
                if set(map(len, values)) - {4}:
                    return None
                boxes = np.fromiter(chain.from_iterable(values), np.float64, 4 * n).reshape(n, 4)
                if not np.isfinite(boxes).all():
                    return None
                cols[key] = boxes
            else:
                allowed = {int} if kind == "int" else {int, float}
                if not set(map(type, values)) <= allowed:
                    return None
                array = np.fromiter(values, np.int64 if kind == "int" else np.float64, n)
                if kind != "int" and (not np.isfinite(array).all() or
                                      (kind == "size" and (array <= 0).any())):
                    return None
                cols[key] = array
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return cols


def _is_number(value: object, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float)) and \
        np.isfinite(value)


def _image_problem(entry: object, keys: tuple) -> str | None:
    if not isinstance(entry, dict):
        return f"is not an object: {str(entry)[:80]}"
    missing = [k for k in keys if k not in entry]
    if missing:
        return f"(id {entry.get('id')!r}) has no {', '.join(missing)}"
    if not _is_number(entry["id"], integer=True):
        return f"has a non-integer id {entry['id']!r}"
    if not isinstance(entry["file_name"], str) or not entry["file_name"]:
        return f"(id {entry['id']}) has a bad file_name {entry['file_name']!r}"
    for key in ("width", "height"):
        if not _is_number(entry[key]) or entry[key] <= 0:
            return f"(id {entry['id']}, {entry['file_name']!r}) has {key}={entry[key]!r}; " \
                   "expected a positive number of pixels"
    return None


def _annotation_problem(entry: object, keys: tuple) -> str | None:
    if not isinstance(entry, dict):
        return f"is not an object: {str(entry)[:80]}"
    label = f"(id {entry.get('id')!r})"
    missing = [k for k in keys if k not in entry]
    if missing:
        return f"{label} has no {', '.join(missing)}"
    for key in ("image_id", "category_id"):
        if not _is_number(entry[key], integer=True):
            return f"{label} has a non-integer {key} {entry[key]!r}"
    box = entry["bbox"]
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        return f"{label} has bbox {str(box)[:60]}; expected [x, y, width, height] numbers"
    if "area" in keys and not _is_number(entry["area"]):
        return f"{label} has a non-numeric area {entry['area']!r}"
    return None


# ---- linking ---------------------------------------------------------------------------------
def _image_paths(names: list[str], entry: np.ndarray, root: Path, path: Path,
                 problems: Problems) -> list[str]:
    """Absolute image paths; a file_name that is absolute or climbs out with '..' is refused."""
    root_text = os.path.abspath(root)
    for i, name in enumerate(names):
        if escapes_root(name):
            problems.add(f"{path}: images[{entry[i]}] file_name {name!r} escapes the images "
                         f"folder {root_text}", fatal=True)
    prefix = os.path.join(root_text, "")
    return [prefix + name for name in names]


def _link(cols: dict[str, np.ndarray], image_ids: np.ndarray, cat_ids: np.ndarray,
          names: list[str], path: Path, problems: Problems
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask of annotations kept, their image rows, their category indices); annotations that
    name an unknown image or category are problems."""
    image_row = _lookup(image_ids, cols["image_id"])
    cat_index = _lookup(cat_ids, cols["category_id"])
    for what, index, key in (("image", image_row, "image_id"), ("category", cat_index, "category_id")):
        bad = np.flatnonzero(index < 0)
        problems.add_many([f"{path}: annotations[{cols['entry'][i]}] has {key} "
                           f"{cols[key][i]}, which no {what} entry has" for i in bad[:Problems.LIMIT]],
                          len(bad))
    keep = (image_row >= 0) & (cat_index >= 0)
    return keep, image_row[keep], cat_index[keep]


def _lookup(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted id in `ids` (first occurrence), -1 where absent."""
    if not len(ids):
        return np.full(len(wanted), -1, np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, wanted), 0, len(ids) - 1)
    return np.where(sorted_ids[pos] == wanted, order[pos], -1)
