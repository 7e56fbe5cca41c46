"""Look at a manifest before training on it: counts per split, label co-occurrence, box sizes,
problems found, and a PNG grid of sample images with their labels and boxes drawn.

Everything except the grid works from the manifest alone (plus a directory listing to find
missing files); only the grid decodes images (Pillow, EXIF orientation applied, JPEG draft mode).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinyvision.data.cache import displayed_size
from tinyvision.data.manifest import Manifest, SPLITS
from tinyvision.data.sources.boxes import BOX_OK, BOX_STATUS_TEXT, check_boxes
from tinyvision.data.sources.objects import existing_files
from tinyvision.errors import DataError
from tinyvision.files import atomic_path, atomic_write_text
from tinyvision.layout import SUMMARY_FILE

# Box side (square root of its area) in pixels; COCO calls < 32 small and > 96 large.
SIDE_BINS = (0, 8, 16, 32, 64, 96, 128, 256, 512, float("inf"))
# Box area as a fraction of the image area (needs the image size in the manifest).
FRACTION_BINS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
MIN_TRAIN_IMAGES = 10  # fewer training images of a class than this is reported
MAX_IMBALANCE = 10.0  # largest / smallest class in train above this is reported
TILE = 160
_CAPTION = 28
_PROBLEM_LIMIT = 50


@dataclass
class Histogram:
    edges: list[float]
    counts: list[int]


@dataclass
class InspectReport:
    """What `inspect_manifest` found; `to_json` is what `summary.json` holds."""

    classes: list[str]
    task: str
    counts: dict[str, dict[str, int]]
    cooccurrence: list[list[int]]  # images showing both class i and class j; diagonal: class i
    box_sides: Histogram | None
    box_fractions: Histogram | None
    problems: list[str] = field(default_factory=list)
    grid: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def inspect_manifest(manifest: Manifest, out_dir: str | Path | None = None, samples: int = 24,
                     seed: int = 0, check_files: bool = True) -> InspectReport:
    """Summarise `manifest`; with `out_dir`, also write `grid.png` and `summary.json` there."""
    labels = manifest.label_matrix().astype(np.int64)
    report = InspectReport(
        classes=list(manifest.classes), task=manifest.task,
        counts={s: c for s, c in manifest.counts().items() if s in SPLITS or any(c.values())},
        cooccurrence=(labels.T @ labels).tolist(), box_sides=_side_histogram(manifest),
        box_fractions=_fraction_histogram(manifest))
    report.problems = find_problems(manifest, check_files)
    if out_dir is not None:
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"Cannot create the output folder {out_dir}: {exc.strerror}; pass "
                            "--out with a folder you can write.") from None
        unreadable = draw_grid(manifest, out_dir / "grid.png", samples, seed)
        report.problems += [f"{path}: cannot be decoded ({why})" for path, why in unreadable]
        report.grid = str(out_dir / "grid.png")
        atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(report.to_json(), indent=2) + "\n")
    return report


# ---- figures ---------------------------------------------------------------------------------
def _boxes_and_sizes(manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    boxed = [s for s in manifest.samples if s.box is not None]
    boxes = np.array([s.box for s in boxed], np.float64).reshape(-1, 4)
    sizes = np.array([s.size if s.size is not None else (np.nan, np.nan) for s in boxed],
                     np.float64).reshape(-1, 2)
    return boxes, sizes


def _side_histogram(manifest: Manifest) -> Histogram | None:
    boxes, _ = _boxes_and_sizes(manifest)
    if not len(boxes):
        return None
    sides = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) *
                    np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    counts, _ = np.histogram(sides, bins=np.array(SIDE_BINS))
    return Histogram(list(SIDE_BINS), counts.tolist())


def _fraction_histogram(manifest: Manifest) -> Histogram | None:
    boxes, sizes = _boxes_and_sizes(manifest)
    known = np.isfinite(sizes).all(axis=1)
    if not known.any():
        return None
    boxes, sizes = boxes[known], sizes[known]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    fraction = np.clip(area / (sizes[:, 0] * sizes[:, 1]), 0.0, 1.0)
    counts, _ = np.histogram(fraction, bins=np.array(FRACTION_BINS))
    return Histogram(list(FRACTION_BINS), counts.tolist())


# ---- problems --------------------------------------------------------------------------------
def find_problems(manifest: Manifest, check_files: bool = True) -> list[str]:
    """Problems visible without decoding: inconsistent rows, missing or empty files, duplicate
    paths, boxes outside their image, classes absent from a split, too few or unbalanced classes."""
    problems: list[str] = []
    try:
        manifest.validate()
    except DataError as exc:
        problems += str(exc).splitlines()
    problems += _duplicate_paths(manifest)
    if check_files:
        problems += _file_problems(manifest)
    problems += _box_problems(manifest)
    problems += _balance_problems(manifest)
    if len(problems) > _PROBLEM_LIMIT:
        problems = problems[:_PROBLEM_LIMIT] + [f"... and {len(problems) - _PROBLEM_LIMIT} more"]
    return problems


def _duplicate_paths(manifest: Manifest) -> list[str]:
    repeated = [p for p, n in Counter(manifest.paths).items() if n > 1]
    return [f"{p}: listed {manifest.paths.count(p)} times" for p in repeated[:_PROBLEM_LIMIT]]


def _file_problems(manifest: Manifest) -> list[str]:
    paths = manifest.paths
    exists = existing_files(paths)
    problems = [f"{p}: file not found" for p, ok in zip(paths, exists.tolist()) if not ok]
    for path, ok in zip(paths, exists.tolist()):
        if ok and os.path.getsize(path) == 0:
            problems.append(f"{path}: empty file (0 bytes)")
    return problems


def _box_problems(manifest: Manifest) -> list[str]:
    rows = [s for s in manifest.samples if s.box is not None and s.size is not None]
    if not rows:
        return []
    boxes = np.array([s.box for s in rows], np.float64)
    sizes = np.array([s.size for s in rows], np.float64)
    _, status = check_boxes(boxes, sizes[:, 0], sizes[:, 1])
    return [f"{rows[i].path}: box {list(rows[i].box)} {BOX_STATUS_TEXT[int(status[i])]} "
            f"(image {rows[i].size[0]}x{rows[i].size[1]})" for i in np.flatnonzero(status != BOX_OK)]


def _balance_problems(manifest: Manifest) -> list[str]:
    counts = manifest.counts()
    problems = []
    unsplit = sum(1 for s in manifest.samples if not s.split)
    if unsplit:
        problems.append(f"{unsplit} sample(s) have no split; build the manifest with "
                        "`tinyvision data build` to assign train/val/test")
    used = [s for s in SPLITS if any(counts.get(s, {}).values())]
    for split in used:
        empty = [c for c in manifest.classes if counts[split][c] == 0]
        if empty:
            problems.append(f"split {split!r} has no image of class(es) {empty}")
    train = counts.get("train", {})
    if any(train.values()):
        few = [f"{c} ({n})" for c, n in train.items() if n < MIN_TRAIN_IMAGES]
        if few:
            problems.append(f"class(es) with fewer than {MIN_TRAIN_IMAGES} training images: "
                            f"{', '.join(few)}")
        present = [n for n in train.values() if n]
        if len(present) > 1 and max(present) / min(present) > MAX_IMBALANCE:
            problems.append(f"classes are unbalanced in train ({max(present)} vs {min(present)} "
                            "images); consider max_per_class or class weights")
    return problems


# ---- image grid ------------------------------------------------------------------------------
def pick_samples(manifest: Manifest, n: int, seed: int = 0) -> list[int]:
    """Up to `n` sample indices, round robin over the classes so that every class shows."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(manifest.samples):
        by_class[sample.labels[0] if sample.labels else ""].append(i)
    queues = [rng.sample(v, len(v)) for _, v in sorted(by_class.items())]
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop())
    return picked


def draw_grid(manifest: Manifest, path: Path, n: int = 24, seed: int = 0,
              columns: int = 6) -> list[tuple[str, str]]:
    """Write a grid of `n` samples with labels (and boxes) to `path`; returns unreadable files."""
    from PIL import Image, ImageDraw

    picked = pick_samples(manifest, n, seed)
    columns = max(1, min(columns, len(picked)))
    rows = max(1, -(-len(picked) // columns))
    canvas = Image.new("RGB", (columns * TILE, rows * (TILE + _CAPTION)), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    unreadable = []
    for k, index in enumerate(picked):
        sample = manifest.samples[index]
        x, y = (k % columns) * TILE, (k // columns) * (TILE + _CAPTION)
        try:
            _draw_tile(canvas, draw, sample, x, y)
        except Exception as exc:  # any decoding failure is reported, not raised
            unreadable.append((sample.path, f"{type(exc).__name__}: {exc}"))
            draw.rectangle([x + 4, y + 4, x + TILE - 4, y + TILE - 4], outline=(200, 60, 60))
            draw.text((x + 10, y + TILE // 2), "unreadable", fill=(230, 80, 80))
        caption = ", ".join(sample.labels) + (f" [{sample.split}]" if sample.split else "")
        draw.text((x + 4, y + TILE + 4), caption[:26], fill=(235, 235, 235))
        draw.text((x + 4, y + TILE + 15), Path(sample.path).name[:26], fill=(150, 150, 150))
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
    return unreadable


def _draw_tile(canvas, draw, sample, x: int, y: int) -> None:
    """Paste one image, fitted into a tile, and draw its box scaled the same way."""
    from PIL import Image, ImageOps

    with Image.open(sample.path) as image:
        width, height = displayed_size(image)
        image.draft("RGB", (TILE, TILE))  # JPEG: decode at a reduced scale
        image = ImageOps.exif_transpose(image).convert("RGB")
    scale = min(TILE / image.width, TILE / image.height)
    shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    ox, oy = x + (TILE - shown.width) // 2, y + (TILE - shown.height) // 2
    canvas.paste(shown, (ox, oy))
    if sample.box is not None:
        sx, sy = shown.width / width, shown.height / height
        x1, y1, x2, y2 = sample.box
        draw.rectangle([ox + x1 * sx, oy + y1 * sy, ox + x2 * sx - 1, oy + y2 * sy - 1],
                       outline=(255, 60, 60), width=2)
