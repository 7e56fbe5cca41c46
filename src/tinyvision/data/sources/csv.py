"""CSV -> Manifest, in two forms told apart by the column count (or the header):

* `path,label[;label...]` — classification; several labels make a multi-label sample, and rows
  naming the same image add up their labels;
* `path,x1,y1,x2,y2,label` — one object per row, pixel xyxy (or normalised with
  `box_units: normalized`); an image on several rows keeps its largest object.

An optional header row names the columns (`path`, `label`, `x1`..`y2` or `xmin`..`ymax`, and an
optional `split` column with train/val/test). Relative paths are relative to `images` (default: the
CSV's folder); absolute paths are allowed because a CSV is the user's own file list.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyvision.config import CsvSource
from tinyvision.data.manifest import SPLITS, Manifest, Sample
from tinyvision.data.sources.boxes import (BOX_OK, BOX_STATUS_TEXT, box_area, check_boxes,
                                           image_size, normalized_to_xyxy)
from tinyvision.data.sources.objects import Problems, existing_files
from tinyvision.errors import DataError, ImageTooLargeError, did_you_mean

_ALIASES = {"path": "path", "image": "path", "file": "path", "file_name": "path",
            "filename": "path", "label": "label", "labels": "label", "class": "label",
            "x1": "x1", "y1": "y1", "x2": "x2", "y2": "y2", "xmin": "x1", "ymin": "y1",
            "xmax": "x2", "ymax": "y2", "split": "split"}
_BOX_COLUMNS = ("x1", "y1", "x2", "y2")
_POSITIONAL = {2: ("path", "label"), 6: ("path", "x1", "y1", "x2", "y2", "label")}


@dataclass
class _Entry:
    """What the rows say about one image."""

    path: str
    line: int
    labels: list[str] = field(default_factory=list)
    split: str = ""
    box: tuple[float, float, float, float] | None = None
    size: tuple[int, int] | None = None


def load_csv(source: CsvSource, task: str = "auto", crop_to_box: bool = False) -> Manifest:
    """The manifest of a CSV file (see the module docstring for its forms)."""
    rows = _read_rows(source.path, source.delimiter)
    columns, rows = _columns(rows, source.path)
    has_boxes = "x1" in columns
    root = os.path.abspath(source.images or source.path.parent)
    problems = Problems()
    entries: dict[str, _Entry] = {}
    for line, cells in rows:
        _add_row(entries, line, cells, columns, root, source, problems)
    if not entries and not problems:
        raise DataError(f"{source.path} has no data rows.")
    classes = source.classes or sorted({x for e in entries.values() for x in e.labels})
    if source.check_images:
        exists = existing_files(list(entries))
        for entry, ok in zip(list(entries.values()), exists.tolist()):
            if not ok:
                problems.add(f"{source.path}:{entry.line}: image {entry.path} not found")
                del entries[entry.path]
    task = _task(task, has_boxes, crop_to_box, entries, source, problems)
    problems.report(f"CSV {source.path}", source.on_problem == "skip",
                    "Fix these rows, or set data.source.on_problem: skip to leave them out.")
    samples = [Sample(e.path, tuple(sorted(set(e.labels), key=classes.index)), e.split, e.box,
                      e.size) for e in entries.values() if e.labels]
    return Manifest(classes, task, samples)


def _read_rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [(n, [c.strip() for c in row]) for n, row in
                    enumerate(csv.reader(handle, delimiter=delimiter), start=1)
                    if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise DataError(f"CSV file {path} does not exist; check data.source.path.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read CSV file {path}: {exc}.") from exc


def _columns(rows: list[tuple[int, list[str]]], path: Path
             ) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """{column: index} from the header, or from the column count when there is none."""
    if not rows:
        raise DataError(f"{path} is empty; expected rows `path,label` or `path,x1,y1,x2,y2,label`.")
    first = [c.lower() for c in rows[0][1]]
    if first and first[0] in _ALIASES and _ALIASES[first[0]] == "path":
        unknown = [c for c in first if c not in _ALIASES]
        if unknown:
            raise DataError(f"{path}: unknown header column(s) {unknown}; allowed: "
                            f"{sorted(set(_ALIASES))}.")
        columns = {_ALIASES[c]: i for i, c in enumerate(first)}
        present = [c for c in _BOX_COLUMNS if c in columns]
        if "label" not in columns or present and len(present) != 4:
            raise DataError(f"{path}: the header {rows[0][1]} needs `path`, `label` and either "
                            "all of x1,y1,x2,y2 or none.")
        return columns, rows[1:]
    width = len(rows[0][1])
    if width not in _POSITIONAL:
        raise DataError(f"{path}:{rows[0][0]} has {width} columns; expected 2 (path,label) or 6 "
                        "(path,x1,y1,x2,y2,label), or a header row naming the columns.")
    return {name: i for i, name in enumerate(_POSITIONAL[width])}, rows


def _add_row(entries: dict[str, _Entry], line: int, cells: list[str], columns: dict[str, int],
             root: str, source: CsvSource, problems: Problems) -> None:
    where = f"{source.path}:{line}"
    expected = max(columns.values()) + 1
    if len(cells) != expected:
        problems.add(f"{where}: {len(cells)} column(s), expected {expected}")
        return
    name = cells[columns["path"]]
    split = cells[columns["split"]].lower() if "split" in columns else ""
    labels = [x.strip() for x in cells[columns["label"]].split(source.label_separator) if x.strip()]
    if not name or not labels:
        problems.add(f"{where}: empty {'path' if not name else 'label'}; every row needs an image "
                     "and a label (name images without any class with a class such as `negative`)")
        return
    unknown = [x for x in labels if source.classes is not None and x not in source.classes]
    if unknown:
        problems.add(f"{where}: label(s) {unknown} not in data.source.classes"
                     + did_you_mean(unknown[0], source.classes, aside=True))
        return
    if split and split not in SPLITS:
        problems.add(f"{where}: split {split!r} is not one of {list(SPLITS)}"
                     + did_you_mean(split, SPLITS, cutoff=0.3, aside=True))
        return
    path = os.path.normpath(os.path.join(root, name))
    entry = entries.setdefault(path, _Entry(path, line, split=split))
    if split and entry.split != split:
        problems.add(f"{where}: {name} is in split {split!r} here but {entry.split!r} on line "
                     f"{entry.line}")
        return
    if "x1" in columns:
        _add_box(entry, [cells[columns[c]] for c in _BOX_COLUMNS], labels, where, source, problems)
    else:
        entry.labels += [x for x in labels if x not in entry.labels]


def _add_box(entry: _Entry, values: list[str], labels: list[str], where: str, source: CsvSource,
             problems: Problems) -> None:
    """Keep this row's box if it is the image's largest so far."""
    if len(labels) != 1:
        problems.add(f"{where}: a box row needs one label, got {labels}")
        return
    try:
        box = np.array([float(v) for v in values])
    except ValueError:
        problems.add(f"{where}: box {values} is not four numbers x1,y1,x2,y2")
        return
    try:
        width, height = entry.size or _size_or_none(entry.path)
    except ImageTooLargeError as exc:
        problems.add(f"{where}: {exc}")
        return
    if width is None and source.box_units == "normalized":
        problems.add(f"{where}: cannot read {entry.path} to scale its normalised box")
        return
    if source.box_units == "normalized":
        box = normalized_to_xyxy(box, width, height)
    if width is not None:
        clipped, status = check_boxes(box[None], np.array([width]), np.array([height]))
        if status[0] != BOX_OK:
            problems.add(f"{where}: box [{', '.join(values)}] {BOX_STATUS_TEXT[int(status[0])]} "
                         f"(image {width}x{height})")
            return
        box, entry.size = clipped[0], (width, height)
    elif not (box[2] > box[0] and box[3] > box[1]):
        problems.add(f"{where}: box [{', '.join(values)}] is degenerate (x2 <= x1 or y2 <= y1)")
        return
    if entry.box is None or box_area(box) > box_area(entry.box):
        entry.box, entry.labels = tuple(float(v) for v in box), labels


def _size_or_none(path: str) -> tuple[int, int] | tuple[None, None]:
    """The image's size from its header, to check boxes against; (None, None) if unreadable
    (a missing file is reported by the existence check). An over-large image raises
    ImageTooLargeError, reported as a problem of its row."""
    try:
        return image_size(path)
    except ImageTooLargeError:
        raise
    except DataError:
        return None, None


def _task(task: str, has_boxes: bool, crop_to_box: bool, entries: dict[str, _Entry],
          source: CsvSource, problems: Problems) -> str:
    if has_boxes:
        if task == "multilabel":
            raise DataError(f"{source.path} has one box per row (single-object labels), but "
                            "model.task=multilabel; use a `path,label;label` CSV instead.")
        return task if task in ("multiclass", "detection") else \
            ("multiclass" if crop_to_box else "detection")
    if task == "detection":
        raise DataError(f"{source.path} has no box columns, so it cannot train detection; add "
                        "x1,y1,x2,y2 columns.")
    several = [e for e in entries.values() if len(e.labels) > 1]
    if task == "multiclass":
        for entry in several:
            problems.add(f"{source.path}:{entry.line}: {entry.path} has several labels "
                         f"{entry.labels} but model.task=multiclass")
            entry.labels = []
        return task
    return "multilabel" if several or task == "multilabel" else "multiclass"
