"""Shared core of the detection-annotation sources (COCO, Pascal VOC).

A reader turns its files into an `ObjectTable` — numpy columns, one row per image and one per
object — and `select` turns the table into a manifest: multi-label presence labels (area
thresholds, crowd/difficult/truncated policies, per-class caps, an evenly sampled negative class)
or the largest object's class and box. Everything per object is vectorised; only the images that
end up in the manifest become Python objects.

About 530 lines on purpose: the selection rules (presence, negatives, caps, largest) read one
table and share its masks; split across modules they would pass the table back and forth.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

import numpy as np

from tinyvision.config import AnnotationSource, NegativeOptions
from tinyvision.data.manifest import SPLITS, Manifest, Sample
from tinyvision.data.sources.boxes import BOX_OK, BOX_STATUS_TEXT, box_area, check_boxes
from tinyvision.errors import DataError, did_you_mean

logger = logging.getLogger(__name__)

FLAG_CROWD, FLAG_DIFFICULT, FLAG_TRUNCATED = 1, 2, 4
SPLIT_CODES = {"": -1, **{name: i for i, name in enumerate(SPLITS)}}
_SPLIT_BY_CODE = list(SPLITS) + [""]  # code -1 indexes the last entry
_EMPTY = -1  # negative-sampling bucket of images without any object


class Problems:
    """Collects user-caused problems so that one `DataError` lists them all (the first 20)."""

    LIMIT = 20

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0
        self.fatal = 0

    def add(self, line: str, fatal: bool = False) -> None:
        """Record one problem; fatal ones (e.g. a path escaping its root) cannot be skipped."""
        self.count += 1
        self.fatal += fatal
        if len(self.lines) < self.LIMIT:
            self.lines.append(line)

    def add_many(self, lines: list[str], total: int) -> None:
        """Record `total` problems of one kind of which `lines` (the first few) are spelled out."""
        for line in lines[:self.LIMIT]:
            self.add(line)
        self.count += max(0, total - min(len(lines), self.LIMIT))

    def __bool__(self) -> bool:
        return self.count > 0

    def summary(self, what: str) -> str:
        more = f"\n  ... and {self.count - len(self.lines)} more" if self.count > len(self.lines) else ""
        return f"{what} has {self.count} problem(s):\n  " + "\n  ".join(self.lines) + more

    def report(self, what: str, skip: bool,
               fix: str = "Fix or remove these entries, or set data.source.on_problem: skip to "
                          "leave them out.") -> None:
        """Raise one `DataError` naming every problem, or log a warning when skipping is allowed."""
        if not self:
            return
        if skip and not self.fatal:
            logger.warning("%s\nThese entries were left out (on_problem: skip).", self.summary(what))
            return
        raise DataError(f"{self.summary(what)}\n{fix if not self.fatal else _FATAL_FIX}")


_FATAL_FIX = ("Image paths must stay inside their images folder (no absolute paths, no '..'); "
              "fix these entries. on_problem: skip does not apply to them.")


@dataclass
class ObjectTable:
    """Images and their annotated objects as columns. Boxes are pixel xyxy as annotated."""

    files: list[str]  # annotation files, for messages
    entry_formats: list[str]  # per file: how an object entry is named, e.g. "annotations[{}]"
    paths: list[str]  # absolute image path per image
    names: list[str]  # the image as its annotation names it, for messages
    image_file: np.ndarray  # int32 per image: index into `files`
    width: np.ndarray  # float64 per image
    height: np.ndarray
    split: np.ndarray  # int8 per image: SPLIT_CODES value
    categories: list[str]
    obj_image: np.ndarray  # int64 per object: image row
    obj_cat: np.ndarray  # int32 per object: index into `categories`
    obj_box: np.ndarray  # (n, 4) float64 pixel xyxy
    obj_flags: np.ndarray  # uint8 FLAG_* bits
    obj_entry: np.ndarray  # int64 per object: entry number within its file
    obj_area: np.ndarray | None = None  # area to compare (segmentation); None: the box's area
    urls: list[str | None] = field(default_factory=list)  # per image, where known

    @property
    def n_images(self) -> int:
        return len(self.paths)

    def describe_object(self, i: int) -> str:
        image = int(self.obj_image[i])
        file = int(self.image_file[image])
        entry = self.entry_formats[file].format(int(self.obj_entry[i]))
        return f"{self.files[file]}: {entry} (image {self.names[image]!r})"

    def describe_image(self, i: int) -> str:
        return f"{self.files[int(self.image_file[i])]}: image {self.names[i]!r}"


def concat_tables(tables: list[ObjectTable]) -> ObjectTable:
    """One table from several (COCO train + val files); categories are united by name."""
    if len(tables) == 1:
        return tables[0]
    categories = list(dict.fromkeys(c for t in tables for c in t.categories))
    index = {c: i for i, c in enumerate(categories)}
    image_offsets = np.cumsum([0] + [t.n_images for t in tables])[:-1]
    file_offsets = np.cumsum([0] + [len(t.files) for t in tables])[:-1]
    cat_maps = [np.array([index[c] for c in t.categories], np.int32) for t in tables]
    areas = [t.obj_area for t in tables]
    return ObjectTable(
        files=[f for t in tables for f in t.files],
        entry_formats=[f for t in tables for f in t.entry_formats],
        paths=[p for t in tables for p in t.paths], names=[n for t in tables for n in t.names],
        image_file=np.concatenate([t.image_file + o for t, o in zip(tables, file_offsets)]),
        width=np.concatenate([t.width for t in tables]),
        height=np.concatenate([t.height for t in tables]),
        split=np.concatenate([t.split for t in tables]), categories=categories,
        obj_image=np.concatenate([t.obj_image + o for t, o in zip(tables, image_offsets)]),
        obj_cat=np.concatenate([m[t.obj_cat] for t, m in zip(tables, cat_maps)]),
        obj_box=np.concatenate([t.obj_box for t in tables]),
        obj_flags=np.concatenate([t.obj_flags for t in tables]),
        obj_entry=np.concatenate([t.obj_entry for t in tables]),
        obj_area=None if any(a is None for a in areas) else np.concatenate(areas),
        urls=[u for t in tables for u in (t.urls or [None] * t.n_images)])


# ---- selection -------------------------------------------------------------------------------
@dataclass
class _Objects:
    """Per-object columns the selection works on, after class mapping and box checks."""

    cls: np.ndarray  # int per object: output class, -1 if not a class of interest
    frac: np.ndarray  # object area / image area
    area: np.ndarray  # object area in pixels
    box: np.ndarray  # clipped pixel xyxy
    bad_image: np.ndarray  # bool per image: has a bad object of interest (dropped when skipping)


def select(table: ObjectTable, source: AnnotationSource, policies: dict[int, str], task: str,
           seed: int, crop_to_box: bool, problems: Problems, what: str) -> tuple[Manifest, np.ndarray]:
    """The manifest a source's options ask for, and the table rows of its images.

    `policies` maps FLAG_* bits to "include" / "ignore" / "drop_image". Problems found here and
    by the reader are reported together at the end (one `DataError`, or warnings when skipping).
    """
    if problems.fatal:  # unsafe paths first: nothing else about the file can be trusted
        problems.report(what, skip=False)
    classes, cls_of_cat = _class_index(table, source, what)
    objects = _check_objects(table, cls_of_cat, problems)
    rng = np.random.default_rng(seed)
    if source.mode == "presence":
        task = _presence_task(task, what)
        chosen, labels, classes = _presence(table, objects, classes, source, policies, task, rng,
                                            what)
        boxes = None
    else:
        task = _largest_task(task, crop_to_box, what)
        chosen, labels, boxes, classes = _largest(table, objects, classes, source, policies, rng)
    if source.check_images:
        keep = _existing(table, chosen, problems)
        chosen, labels = chosen[keep], labels[keep]
        boxes = boxes[keep] if boxes is not None else None
    problems.report(what, source.on_problem == "skip")
    _check_counts(labels, classes, what, problems)
    samples = _samples(table, chosen, labels, boxes, classes)
    return Manifest(classes, task, samples), chosen


def _check_counts(labels: np.ndarray, classes: list[str], what: str,
                  problems: Problems | None = None) -> None:
    """No image at all is an error (blaming problems when they removed the entries); a class
    without images is a warning (a dead output)."""
    if not len(labels) and problems:
        raise DataError(f"{what}: no image is left: {problems.count} entr(y/ies) had problems and "
                        "were left out (on_problem: skip), listed in the warning above. Fix them "
                        "(often image files that do not exist under the names the annotations "
                        "give) rather than the selection options.")
    if not len(labels):
        raise DataError(f"{what}: no image has an object of {classes} that passes the options "
                        "(min_area, iscrowd/difficult/truncated, caps); loosen them or check "
                        "`classes`.")
    empty = [c for c, n in zip(classes, labels.sum(axis=0).tolist()) if n == 0]
    if empty:
        logger.warning("%s: no image of class(es) %s passes the options; the model would never "
                       "see them.", what, empty)


def _presence_task(task: str, what: str) -> str:
    if task in ("auto", "multilabel"):
        return "multilabel"
    if task == "multiclass":
        return "multiclass"
    raise DataError(f"{what}: mode 'presence' gives image labels, not boxes, but the task is "
                    f"{task!r}; use mode: largest for single-object detection.")


def _largest_task(task: str, crop_to_box: bool, what: str) -> str:
    if task == "auto":
        return "multiclass" if crop_to_box else "detection"
    if task in ("multiclass", "detection"):
        return task
    raise DataError(f"{what}: mode 'largest' gives one label per image, but model.task="
                    f"{task!r}; use mode: presence for multi-label presence labels.")


def _class_index(table: ObjectTable, source: AnnotationSource,
                 what: str) -> tuple[list[str], np.ndarray]:
    """Output class names and, per category, its output class (-1: not of interest)."""
    groups = source.class_groups
    if groups is None:  # largest object among all categories
        return list(table.categories), np.arange(len(table.categories), dtype=np.int64)
    _require_categories(table, [m for members in groups.values() for m in members], what)
    index = {c: i for i, c in enumerate(table.categories)}
    cls_of_cat = np.full(len(table.categories), -1, np.int64)
    for k, members in enumerate(groups.values()):
        cls_of_cat[[index[m] for m in members]] = k
    return list(groups), cls_of_cat


def _require_categories(table: ObjectTable, names: list[str], what: str) -> None:
    known = set(table.categories)
    unknown = [n for n in names if n not in known]
    if not unknown:
        return
    lines = []
    for name in unknown:
        lines.append(f"{name!r}" + did_you_mean(name, table.categories, n=3, aside=True))
    raise DataError(f"{what}: unknown category name(s) {', '.join(lines)}. The annotations have "
                    f"{len(table.categories)} categories: {', '.join(table.categories[:90])}.")


def _check_objects(table: ObjectTable, cls_of_cat: np.ndarray, problems: Problems) -> _Objects:
    """Clip the boxes of objects of interest, and report bad ones (which are then left out)."""
    cls = cls_of_cat[table.obj_cat] if len(table.obj_cat) else np.zeros(0, np.int64)
    width, height = table.width[table.obj_image], table.height[table.obj_image]
    box, status = check_boxes(table.obj_box, width, height)
    bad = (status != BOX_OK) & (cls >= 0)
    problems.add_many([f"{table.describe_object(i)}: box xyxy [{_numbers(table.obj_box[i])}] "
                       f"{BOX_STATUS_TEXT[status[i]]} (image {width[i]:g}x{height[i]:g})"
                       for i in np.flatnonzero(bad)[:Problems.LIMIT]], int(bad.sum()))
    bad_image = np.zeros(table.n_images, bool)
    bad_image[table.obj_image[bad]] = True
    cls = np.where(bad, -1, cls)
    area = box_area(box) if table.obj_area is None else table.obj_area
    frac = area / np.maximum(width * height, 1e-9)
    return _Objects(cls, frac, area, box, bad_image)


def _numbers(values: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _policy_masks(table: ObjectTable, objects: _Objects,
                  policies: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """(objects to ignore, images to drop) under the crowd/difficult/truncated policies."""
    of_interest = objects.cls >= 0
    ignored = np.zeros(len(objects.cls), bool)
    dropped = objects.bad_image.copy()
    for flag, policy in policies.items():
        flagged = of_interest & ((table.obj_flags & flag) != 0)
        if policy == "ignore":
            ignored |= flagged
        elif policy == "drop_image":
            dropped[table.obj_image[flagged]] = True
    return ignored, dropped


def _per_class(value: float | int | dict | None, classes: list[str], default: float) -> np.ndarray:
    if isinstance(value, dict):
        return np.array([value.get(c, default) for c in classes], np.float64)
    return np.full(len(classes), default if value is None else value, np.float64)


def _presence(table: ObjectTable, objects: _Objects, classes: list[str], source: AnnotationSource,
              policies: dict[int, str], task: str, rng: np.random.Generator,
              what: str = "annotations") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images with at least one positive class (capped), plus sampled negatives."""
    ignored, dropped = _policy_masks(table, objects, policies)
    cls, obj_image = objects.cls, table.obj_image
    min_area = _per_class(source.min_area, classes, 0.0)
    eligible = (cls >= 0) & ~ignored
    eligible[eligible] = objects.frac[eligible] >= min_area[cls[eligible]]
    present = np.zeros((table.n_images, len(classes)), bool)
    present[obj_image[eligible], cls[eligible]] = True
    present[dropped] = False
    n_labels = present.sum(axis=1)
    positive = n_labels == 1 if task == "multiclass" else n_labels >= 1
    if task == "multiclass" and (n_labels > 1).any():
        logger.info("model.task=multiclass: left out %d image(s) showing several classes.",
                    int((n_labels > 1).sum()))
    chosen = _cap(np.flatnonzero(positive), present, source.max_per_class, classes, table.split,
                  rng)
    labels = present[chosen]
    if source.negative is None:
        return chosen, labels, classes
    if source.negative.allow_small_positives:
        blocked = (n_labels > 0) | _images_with(table, ignored)
    else:
        blocked = _images_with(table, objects.cls >= 0)
    candidates = ~blocked & ~dropped
    negatives = _negatives(table, objects, candidates, source, present[chosen], table.split[chosen],
                           rng)
    if not len(negatives):
        _no_negatives(source.negative, int(candidates.sum()), what)
        return chosen, labels, classes
    neg_labels = np.zeros((len(negatives), len(classes) + 1), bool)
    neg_labels[:, -1] = True
    labels = np.vstack([np.pad(labels, ((0, 0), (0, 1))), neg_labels])
    return np.concatenate([chosen, negatives]), labels, classes + [source.negative.name]


def _no_negatives(options: NegativeOptions, candidates: int, what: str) -> None:
    """No image qualifies as a negative: a class the config named is an error with the reason;
    the default one is dropped with a warning rather than kept as an output that never fires."""
    reason = (f"{what}: no image qualifies for the negative class {options.name!r} "
              f"({candidates} candidate(s): every image shows a positive class, or the "
              "negative.from_categories have none)")
    if "name" in options.model_fields_set:
        raise DataError(f"{reason}. Remove data.source.negative, or let more images qualify "
                        "(negative.allow_small_positives: true, negative.include_empty: true, "
                        "other negative.from_categories).")
    logger.warning("%s; the negative class is left out.", reason)


def _images_with(table: ObjectTable, object_mask: np.ndarray) -> np.ndarray:
    out = np.zeros(table.n_images, bool)
    out[table.obj_image[object_mask]] = True
    return out


def _cap(rows: np.ndarray, labels: np.ndarray, caps: int | dict | None, classes: list[str],
         split: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seeded undersampling to at most `caps` images per class; each split group (annotation
    file) gets its share of a cap in proportion to its images of that class."""
    if caps is None or not len(rows):
        return rows
    cap = _per_class(caps, classes, np.inf)
    groups = split[rows]
    totals = labels[rows].sum(axis=0)
    kept = []
    for code in np.unique(groups):
        members = rows[groups == code]
        counts = labels[members].sum(axis=0)
        share = np.where(np.isinf(cap), np.inf, np.round(cap * counts / np.maximum(totals, 1)))
        kept.append(members[_undersample(labels[members], share, rng)])
    return np.sort(np.concatenate(kept))


def _undersample(labels: np.ndarray, cap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask of rows to keep so that no class exceeds its cap. Rows are visited rarest class
    first (random within), and one is kept only if all its classes still have room, so a
    rare class is not starved by a common one it co-occurs with."""
    counts = labels.sum(axis=0)
    over = counts > cap
    keep = np.ones(len(labels), bool)
    if not over.any():
        return keep
    touches = labels[:, over].any(axis=1)
    rows = np.flatnonzero(touches)
    rarest = np.where(labels[rows], counts, np.iinfo(np.int64).max).min(axis=1)
    order = rows[np.lexsort((rng.random(len(rows)), rarest))]
    keep[rows] = False
    taken = np.zeros(labels.shape[1], np.int64)
    cap_list, taken_list = cap.tolist(), taken.tolist()
    for row in order.tolist():
        classes = np.flatnonzero(labels[row]).tolist()
        if all(taken_list[c] < cap_list[c] for c in classes):
            keep[row] = True
            for c in classes:
                taken_list[c] += 1
    return keep


def _negatives(table: ObjectTable, objects: _Objects, candidates: np.ndarray,
               source: AnnotationSource, positive_labels: np.ndarray, positive_split: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Negative images, per split group, sampled round robin across the other categories."""
    options = source.negative
    buckets_img, buckets = _negative_buckets(table, objects, candidates, options)
    groups = np.unique(np.concatenate([table.split[candidates], positive_split]))
    largest = {g: int(positive_labels[positive_split == g].sum(axis=0).max(initial=0)) for g in groups}
    total_largest = sum(largest.values())
    chosen = []
    for g in groups:
        in_group = table.split[buckets_img] == g
        if options.size is None:
            want = largest[g]
        elif total_largest:
            want = round(options.size * largest[g] / total_largest)
        else:
            want = round(options.size * np.mean(table.split[candidates] == g))
        picked = _round_robin(buckets_img[in_group], buckets[in_group], want, rng)
        if len(picked) < want:
            logger.warning("Only %d negative image(s) available for split %r, %d wanted.",
                           len(picked), _SPLIT_BY_CODE[g] or "(unsplit)", want)
        chosen.append(picked)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _negative_buckets(table: ObjectTable, objects: _Objects, candidates: np.ndarray,
                      options: NegativeOptions) -> tuple[np.ndarray, np.ndarray]:
    """(image, bucket) pairs of negative candidates: a bucket per category shown, plus one for
    images without objects when `include_empty`."""
    if options.from_categories is not None:
        _require_categories(table, options.from_categories, "negative.from_categories")
        index = {c: i for i, c in enumerate(table.categories)}
        allowed = np.zeros(len(table.categories), bool)
        allowed[[index[c] for c in options.from_categories]] = True
    else:
        allowed = np.ones(len(table.categories), bool)
    in_pool = candidates[table.obj_image] & allowed[table.obj_cat] & (objects.cls < 0)
    keys = np.unique(table.obj_image[in_pool] * len(table.categories) + table.obj_cat[in_pool])
    image, bucket = keys // max(len(table.categories), 1), keys % max(len(table.categories), 1)
    if options.include_empty:
        counts = np.bincount(table.obj_image, minlength=table.n_images)
        empty = np.flatnonzero(candidates & (counts == 0))
        image = np.concatenate([image, empty])
        bucket = np.concatenate([bucket, np.full(len(empty), _EMPTY)])
    return image, bucket


def _round_robin(image: np.ndarray, bucket: np.ndarray, want: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Up to `want` distinct images: round r takes the r-th image (random order) of every bucket
    (buckets in random order), skipping images already taken."""
    if want <= 0 or not len(image):
        return np.zeros(0, np.int64)
    order = np.lexsort((rng.random(len(image)), bucket))
    image, bucket = image[order], bucket[order]
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    sizes = np.diff(np.r_[starts, len(image)])
    rank = np.arange(len(image)) - np.repeat(starts, sizes)
    bucket_rank = np.repeat(rng.permutation(len(starts)), sizes)
    sequence = image[np.lexsort((bucket_rank, rank))]
    _, first = np.unique(sequence, return_index=True)
    return sequence[np.sort(first)][:want]


def _largest(table: ObjectTable, objects: _Objects, classes: list[str], source: AnnotationSource,
             policies: dict[int, str], rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Per image, the largest object of interest (area >= min_area), capped per class."""
    ignored, dropped = _policy_masks(table, objects, policies)
    cls = objects.cls
    min_area = _per_class(source.min_area, classes, 0.0)
    eligible = (cls >= 0) & ~ignored
    eligible[eligible] = objects.frac[eligible] >= min_area[cls[eligible]]
    eligible &= ~dropped[table.obj_image]
    idx = np.flatnonzero(eligible)
    idx = idx[np.lexsort((-objects.area[idx], table.obj_image[idx]))]
    image = table.obj_image[idx]
    best = idx[np.r_[True, image[1:] != image[:-1]]] if len(idx) else idx
    if source.class_groups is None:  # every category: keep those that occur, in category order
        present = np.unique(cls[best])
        classes = [classes[c] for c in present]
        remap = np.full(len(table.categories), -1, np.int64)
        remap[present] = np.arange(len(present))
        best_cls = remap[cls[best]]
    else:
        best_cls = cls[best]
    onehot = np.zeros((table.n_images, len(classes)), bool)
    onehot[table.obj_image[best], best_cls] = True
    image = table.obj_image[best]
    keep_rows = _cap(image, onehot, source.max_per_class, classes, table.split, rng)
    keep = np.isin(image, keep_rows)
    return image[keep], onehot[image[keep]], objects.box[best[keep]], classes


def _existing(table: ObjectTable, chosen: np.ndarray, problems: Problems) -> np.ndarray:
    """Mask of chosen images whose file exists; each missing one is a problem."""
    paths = [table.paths[i] for i in chosen.tolist()]
    keep = existing_files(paths)
    for row in np.flatnonzero(~keep).tolist():
        problems.add(f"{table.describe_image(int(chosen[row]))}: {paths[row]} not found")
    return keep


def existing_files(paths: list[str]) -> np.ndarray:
    """Which of `paths` exist as files: one directory listing per folder, not a stat per image
    (much faster on network and overlay file systems)."""
    listings: dict[str, set[str]] = {}
    keep = np.ones(len(paths), bool)
    for row, path in enumerate(paths):
        folder, _, name = path.rpartition(os.sep)
        listing = listings.get(folder)
        if listing is None:
            try:
                listing = listings[folder] = set(os.listdir(folder))
            except OSError:
                listing = listings[folder] = set()
        if name not in listing:
            keep[row] = False
    return keep


def escapes_root(name: str) -> bool:
    """True for an image name that is absolute or climbs out of its root with '..'."""
    if name[:1] in ("/", "\\") or name[1:2] == ":":
        return True
    return ".." in name and ".." in re.split(r"[/\\]", name)


def _samples(table: ObjectTable, chosen: np.ndarray, labels: np.ndarray,
             boxes: np.ndarray | None, classes: list[str]) -> list[Sample]:
    """Samples of the chosen images; rows with equal labels share one label tuple."""
    packed = np.packbits(labels, axis=1)
    keys = packed.view(f"V{max(packed.shape[1], 1)}").ravel().tolist() if packed.size else \
        [b""] * len(chosen)
    tuples: dict[bytes, tuple[str, ...]] = {}
    for row, key in enumerate(keys):
        if key not in tuples:
            tuples[key] = tuple(classes[c] for c in np.flatnonzero(labels[row]))
    split = [_SPLIT_BY_CODE[c] for c in table.split[chosen].tolist()]
    sizes = zip(table.width[chosen].astype(np.int64).tolist(),
                table.height[chosen].astype(np.int64).tolist())
    box_list = [tuple(b) for b in boxes.tolist()] if boxes is not None else [None] * len(chosen)
    paths = table.paths
    return [Sample(paths[image], tuples[key], s, box, size)
            for image, key, s, box, size in zip(chosen.tolist(), keys, split, box_list, sizes)]
