"""Class-per-folder images -> Manifest.

Layouts: `root/<class>/<image>` (split later by `assign_splits`), or
`root/{train,val,test}/<class>/<image>` (splits taken as given). An image file name present in
several class folders of one split becomes one multi-label sample carrying all those labels.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tinyvision.data.cache import image_extensions
from tinyvision.data.manifest import SPLITS, Manifest, Sample
from tinyvision.errors import DataError

log = logging.getLogger("tinyvision")


def load_folder(root: str | Path, extensions: tuple[str, ...] | list[str] | None = None,
                task: str = "auto") -> Manifest:
    """Scan `root` and return a manifest; samples get a split only in the split-folder layout.

    `extensions`: the files read as images (default: every format Pillow decodes); other files
    are skipped and counted by extension in one warning. `task` is "auto" (multi-label when any
    file name is in several class folders, else multi-class), "multiclass" or "multilabel".
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a folder; set "
                        "data.source.root to a folder holding one subfolder per class.")
    extensions = tuple(sorted(e.lower() for e in (extensions or image_extensions())))
    skipped: Counter[str] = Counter()
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    if split_dirs:
        layout = [(d.name, d) for d in split_dirs]
    else:
        layout = [("", root)]

    samples: list[Sample] = []
    classes: set[str] = set()
    for split, folder in layout:
        by_name: dict[str, tuple[str, list[str]]] = {}  # file name -> (first path, labels)
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for image in sorted(class_dir.iterdir()):
                if not image.is_file():
                    continue
                if image.suffix.lower() not in extensions:
                    skipped[image.suffix.lower() or image.name] += 1
                    continue
                classes.add(class_dir.name)
                path, labels = by_name.setdefault(image.name, (str(image.resolve()), []))
                if class_dir.name not in labels:
                    labels.append(class_dir.name)
        samples += [Sample(path, tuple(sorted(labels)), split) for path, labels in by_name.values()]

    if skipped:
        listed = ", ".join(f"{n} {ext}" for ext, n in skipped.most_common())
        log.warning("%s: skipped %d file(s) that are not images of a known format (%s).", root,
                    sum(skipped.values()), listed)
    if not samples:
        shown = ", ".join(extensions) if len(extensions) < 12 else "any image format"
        raise DataError(f"No images ({shown}) found in class folders under {root}. "
                        f"Expected {root}/<class>/<image> or {root}/train/<class>/<image>.")
    if len(classes) < 2:
        raise DataError(f"Found only one class folder ({sorted(classes)}) under {root}; a classifier "
                        "needs at least two classes (add a folder of negative examples).")
    multilabel = any(len(s.labels) > 1 for s in samples)
    if task == "detection":
        raise DataError(f"model.task=detection needs one box per image, but the class folders under "
                        f"{root} give image labels only; use a source with boxes (coco or voc with "
                        "mode: largest, or a CSV with x1,y1,x2,y2 columns).")
    if task == "auto":
        task = "multilabel" if multilabel else "multiclass"
    elif task == "multiclass" and multilabel:
        clash = next(s for s in samples if len(s.labels) > 1)
        raise DataError(f"model.task=multiclass but {Path(clash.path).name} is in several class "
                        f"folders {list(clash.labels)}; remove the duplicates or set "
                        "model.task=multilabel.")
    manifest = Manifest(sorted(classes), task, samples)
    return manifest
