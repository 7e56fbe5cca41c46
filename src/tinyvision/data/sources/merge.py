"""Several sources -> one Manifest: classes renamed through each input's `class_map`, then
duplicates removed — the same path, and (with `dedupe: content`) the same bytes under another
path, e.g. one photo in both COCO and a scraped folder.

A duplicate becomes one sample with the union of its labels; its split, box and size come from the
first source that has them (detection samples keep the first source's sample as it is).
Content hashing only reads files whose byte size equals another file's, so photo collections,
where sizes rarely collide, cost a `stat` per file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import replace
from typing import Callable

from tinyvision.config import MergeInput, MergeSource
from tinyvision.data.manifest import Manifest, Sample
from tinyvision.errors import DataError, did_you_mean

logger = logging.getLogger(__name__)
_ANY = "*"
_CHUNK = 1 << 20


def load_merge(source: MergeSource, task: str, load: Callable[[object], Manifest]) -> Manifest:
    """Load every input with `load`, map its classes, merge and de-duplicate."""
    manifests = [load(item.source) for item in source.inputs]
    kinds = {m.task == "detection" for m in manifests}
    if len(kinds) > 1:
        raise DataError("data.source.inputs mix detection sources (one box per image) with "
                        "classification ones; merge sources of one kind.")
    samples: list[Sample] = []
    order: list[str] = []
    for number, (item, manifest) in enumerate(zip(source.inputs, manifests)):
        mapped, classes = _map_classes(manifest, item, number)
        samples += mapped
        order += [c for c in classes if c not in order]
    classes = _merged_classes(source, order, samples)
    samples = _dedupe(samples, source.dedupe, classes, detection=True in kinds)
    return Manifest(classes, _merged_task(task, manifests, samples), samples)


def _map_classes(manifest: Manifest, item: MergeInput, number: int) -> tuple[list[Sample], list[str]]:
    """The input's samples with mapped labels (samples left without a label are dropped) and its
    mapped class order."""
    mapping = item.class_map
    unknown = [k for k in mapping if k != _ANY and k not in manifest.classes]
    if unknown:
        hints = [f"{k!r}{did_you_mean(k, manifest.classes, aside=True)}" for k in unknown]
        raise DataError(f"data.source.inputs.{number}.class_map names class(es) the source does "
                        f"not have: {', '.join(hints)}. Its classes: {manifest.classes[:50]}.")

    def rename(label: str) -> str | None:
        return mapping[label] if label in mapping else mapping.get(_ANY, label)

    classes = [c for c in dict.fromkeys(rename(c) for c in manifest.classes) if c is not None]
    out, dropped = [], 0
    for sample in manifest.samples:
        labels = tuple(c for c in dict.fromkeys(rename(x) for x in sample.labels) if c is not None)
        if labels:
            out.append(replace(sample, labels=labels))
        else:
            dropped += 1
    if dropped:
        logger.info("data.source.inputs.%d: %d sample(s) left without a class by class_map were "
                    "dropped.", number, dropped)
    return out, classes


def _merged_classes(source: MergeSource, order: list[str], samples: list[Sample]) -> list[str]:
    if source.classes is None:
        return order
    extra = sorted({label for s in samples for label in s.labels} - set(source.classes))
    if extra:
        raise DataError(f"Merged labels {extra} are not in data.source.classes {source.classes}; "
                        "add them there or rename them with an input's class_map.")
    return list(source.classes)


def _dedupe(samples: list[Sample], mode: str, classes: list[str], detection: bool) -> list[Sample]:
    """Merge samples that share a path, then (mode `content`) samples whose files are equal."""
    if mode == "none":
        return samples
    keys = [os.path.normcase(os.path.normpath(s.path)) for s in samples]
    if mode == "content":
        keys = _content_keys(keys)
    merged: dict[str, Sample] = {}
    duplicates = 0
    for key, sample in zip(keys, samples):
        first = merged.get(key)
        if first is None:
            merged[key] = sample
            continue
        duplicates += 1
        if not detection:
            merged[key] = _combine(first, sample, classes)
    if duplicates:
        logger.info("Merged %d duplicate image(s) (%s).", duplicates,
                    "same path or same content" if mode == "content" else "same path")
    return list(merged.values())


def _combine(first: Sample, other: Sample, classes: list[str]) -> Sample:
    labels = tuple(sorted(set(first.labels) | set(other.labels), key=classes.index))
    return replace(first, labels=labels, split=first.split or other.split,
                   box=first.box if first.box is not None else other.box,
                   size=first.size if first.size is not None else other.size)


def _content_keys(keys: list[str]) -> list[str]:
    """Replace each key by a content hash where another file has the same byte size; files that
    cannot be read keep their path key (their source reports missing files)."""
    unique = list(dict.fromkeys(keys))
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(unique):
        try:
            by_size[os.stat(key).st_size].append(i)
        except OSError:
            continue
    digest_of: dict[str, str] = {}
    for members in by_size.values():
        if len(members) > 1:
            for i in members:
                digest = _file_digest(unique[i])
                if digest is not None:
                    digest_of[unique[i]] = "sha256:" + digest
    return [digest_of.get(k, k) for k in keys]


def _file_digest(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _merged_task(task: str, manifests: list[Manifest], samples: list[Sample]) -> str:
    if manifests and all(m.task == "detection" for m in manifests):
        return "detection"
    several = next((s for s in samples if len(s.labels) > 1), None)
    if task == "multiclass" and several is not None:
        raise DataError(f"model.task=multiclass but the merged sample {several.path} has labels "
                        f"{list(several.labels)} (after class_map and de-duplication); map the "
                        "classes apart or set model.task=multilabel.")
    if task in ("multiclass", "multilabel"):
        return task
    multilabel = several is not None or any(m.task == "multilabel" for m in manifests)
    return "multilabel" if multilabel else "multiclass"
