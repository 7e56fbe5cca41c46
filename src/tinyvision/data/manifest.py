"""The manifest: one table of samples (image path, labels, optional box, split) plus the class list.

Every annotation source produces a `Manifest`; everything downstream (cache, pipeline, training,
evaluation) reads only this. Saved as JSON lines: a header line, then one line per sample.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyvision.errors import DataError
from tinyvision.files import atomic_write_text

SPLITS = ("train", "val", "test")
TASKS = frozenset({"multiclass", "multilabel", "detection"})
MANIFEST_FORMAT = "tinyvision-manifest"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """One image and what it shows.

    `box` is the object's box in pixels of the original (EXIF-rotated) image, as (x1, y1, x2, y2)
    with x2 > x1 and y2 > y1; detection manifests have one, and so may classification samples
    that are cropped to their object (`data.crop_to_box`). `size` is the image's (width, height)
    as its annotation gave it, when known (COCO, VOC): it lets tools relate boxes to the image
    without decoding it.
    """

    path: str
    labels: tuple[str, ...]
    split: str = ""
    box: tuple[float, float, float, float] | None = None
    size: tuple[int, int] | None = None

    def with_split(self, split: str) -> Sample:
        """A copy in another split; `dataclasses.replace` costs ~4x more, which adds up to
        seconds on COCO-sized manifests."""
        copy = object.__new__(Sample)
        copy.__dict__.update(self.__dict__)
        copy.__dict__["split"] = split
        return copy

    def to_json(self) -> dict:
        row: dict = {"path": self.path, "labels": list(self.labels), "split": self.split}
        if self.box is not None:
            row["box"] = [float(v) for v in self.box]
        if self.size is not None:
            row["size"] = [int(v) for v in self.size]
        return row


@dataclass
class Manifest:
    """Samples plus the ordered class list; class index i is output unit i of the model."""

    classes: list[str]
    task: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"Unknown task={self.task!r}; expected one of {sorted(TASKS)}.")
        if len(set(self.classes)) != len(self.classes):
            dupes = sorted(c for c, n in Counter(self.classes).items() if n > 1)
            raise DataError(f"Class names must be unique; repeated: {dupes}.")
        for name in self.classes:
            _check_utf8(name)

    # ---- views -------------------------------------------------------------------------------
    def split(self, name: str) -> Manifest:
        """The samples of one split, same classes and task."""
        if name not in SPLITS:
            raise DataError(f"Unknown split={name!r}; expected one of {list(SPLITS)}.")
        return Manifest(self.classes, self.task, [s for s in self.samples if s.split == name])

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.samples]

    def label_matrix(self) -> np.ndarray:
        """Multi-hot float32 matrix (samples x classes); one-hot for multi-class manifests."""
        index = {c: i for i, c in enumerate(self.classes)}
        y = np.zeros((len(self.samples), len(self.classes)), np.float32)
        for row, sample in enumerate(self.samples):
            for label in sample.labels:
                y[row, index[label]] = 1.0
        return y

    def boxes(self) -> np.ndarray:
        """Boxes as float32 (samples x 4), pixel xyxy; NaN where a sample has none."""
        out = np.full((len(self.samples), 4), np.nan, np.float32)
        for row, sample in enumerate(self.samples):
            if sample.box is not None:
                out[row] = sample.box
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split: {split: {class: n}}."""
        table: dict[str, dict[str, int]] = {s: {c: 0 for c in self.classes} for s in SPLITS}
        for sample in self.samples:
            for label in sample.labels:
                table.setdefault(sample.split, {c: 0 for c in self.classes})[label] += 1
        return table

    def fingerprint(self) -> str:
        """Hash of the classes, task and every row: equal manifests have equal fingerprints."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.task, self.classes]).encode())
        for sample in self.samples:
            digest.update(json.dumps(sample.to_json(), sort_keys=True).encode())
        return digest.hexdigest()[:16]

    # ---- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise `DataError` naming the first bad rows if labels, splits or boxes are inconsistent."""
        known = set(self.classes)
        problems = []
        for sample in self.samples:
            unknown = [label for label in sample.labels if label not in known]
            if unknown:
                problems.append(f"{sample.path}: unknown label(s) {unknown}")
            if sample.split not in SPLITS:
                problems.append(f"{sample.path}: split={sample.split!r} is not one of {list(SPLITS)}")
            if self.task == "multiclass" and len(sample.labels) != 1:
                problems.append(f"{sample.path}: a multi-class sample needs exactly one label, "
                                f"got {list(sample.labels)}")
            if self.task == "detection":
                if sample.box is None or len(sample.labels) != 1:
                    problems.append(f"{sample.path}: a detection sample needs one label and a box")
                elif not (sample.box[2] > sample.box[0] and sample.box[3] > sample.box[1]):
                    problems.append(f"{sample.path}: degenerate box {list(sample.box)}")
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DataError(f"The manifest has {len(problems)} bad row(s):\n  {shown}{more}")

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write JSON lines atomically (temporary file, then rename)."""
        header = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                  "task": self.task, "classes": self.classes}
        lines = [json.dumps(header)] + [json.dumps(s.to_json()) for s in self.samples]
        atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise DataError(f"Cannot read manifest {path}: {exc.strerror}.") from exc
        except UnicodeDecodeError:
            raise DataError(f"Manifest {path} is not a UTF-8 text file (a manifest is JSON "
                            "lines); pass a manifest made by `tinyvision data build`, or a "
                            "config.") from None
        if not lines:
            raise DataError(f"Manifest {path} is empty; rebuild it with `tinyvision data build`.")
        number = 1  # the line being read, for the error message
        try:
            header = json.loads(lines[0])
            if header.get("format") != MANIFEST_FORMAT:
                raise ValueError("missing header")
            if header.get("version", MANIFEST_VERSION) != MANIFEST_VERSION:
                raise DataError(f"Manifest {path} is version {header.get('version')!r}; this "
                                f"tinyvision reads version {MANIFEST_VERSION}. Rebuild it with "
                                "`tinyvision data build` (or a tinyvision of its version).")
            samples = []
            for number, line in enumerate(lines[1:], start=2):  # noqa: B007 (read in `except`)
                if not line.strip():
                    continue
                row = json.loads(line)
                box = tuple(row["box"]) if row.get("box") is not None else None
                size = tuple(row["size"]) if row.get("size") is not None else None
                samples.append(Sample(row["path"], tuple(row["labels"]), row.get("split", ""), box,
                                      size))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            where = "line 1 (header)" if number == 1 else f"line {number}"
            raise DataError(f"Manifest {path} is malformed at {where}: {exc}.") from exc
        return cls(list(header["classes"]), header["task"], samples)


def _check_utf8(name: str) -> None:
    """A class name must be text: one read from a folder named in another encoding (Latin-1
    bytes on a UTF-8 system) would pass training and then fail the C export."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise DataError(f"Class name {shown!r} is not valid UTF-8 (a folder or label named in "
                        "another encoding, e.g. Latin-1); rename it in UTF-8 (e.g. with "
                        "`convmv -f latin1 -t utf8`) before building the data.") from None


def assign_splits(samples: list[Sample], val_fraction: float, test_fraction: float,
                  seed: int) -> list[Sample]:
    """Seeded split stratified by class: each class is cut into train/val/test separately.

    Multi-label samples are stratified by their rarest label so that rare classes reach every split.
    Samples that already carry a split keep it.
    """
    frequency = Counter(label for s in samples for label in s.labels)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        if not sample.split:
            key = min(sample.labels, key=lambda c: (frequency[c], c)) if sample.labels else ""
            groups[key].append(i)
    rng = random.Random(seed)
    out = list(samples)
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        n = len(members)
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        # Every split that is asked for gets at least one sample of a class that has enough.
        if test_fraction > 0 and n_test == 0 and n >= 3:
            n_test = 1
        if val_fraction > 0 and n_val == 0 and n >= 3:
            n_val = 1
        for rank, i in enumerate(members):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out[i] = out[i].with_split(split)
    return out
