"""What a model's outputs are, from its task and class count, and one way to unpack them.

- multiclass / multilabel: one output, the class scores (N, classes);
- detection with two or more classes: the class scores, then the box (N, 4: normalised x1, y1,
  x2, y2);
- detection with one class: the box alone (a softmax over one value would always answer 1).

Keras, LiteRT and TFLM return a single output as an array and several as a list; everything that
reads outputs goes through `split_outputs`, so none of it guesses from shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLASS, BOX = "class", "box"


def output_kinds(task: str, n_classes: int) -> tuple[str, ...]:
    """The model's outputs in order: ("class",), ("class", "box") or ("box",)."""
    if task != "detection":
        return (CLASS,)
    return (BOX,) if n_classes == 1 else (CLASS, BOX)


def has_class_output(task: str, n_classes: int) -> bool:
    return CLASS in output_kinds(task, n_classes)


def class_task(task: str) -> str:
    """The task of the class output: a detection model's class output is multi-class."""
    return "multiclass" if task == "detection" else task


@dataclass(frozen=True)
class ModelOutputs:
    """A model's outputs on N images: class scores (N, classes) or None for a box-only model,
    boxes (N, 4) normalised xyxy or None for a classifier."""

    scores: np.ndarray | None
    boxes: np.ndarray | None

    def __len__(self) -> int:
        return len(self.scores if self.scores is not None else self.boxes)

    def values(self) -> tuple[np.ndarray, ...]:
        """The outputs in the model's order (what `split_outputs` unpacked)."""
        return tuple(v for v in (self.scores, self.boxes) if v is not None)

    def take(self, rows) -> ModelOutputs:
        return ModelOutputs(*(None if v is None else v[rows] for v in (self.scores, self.boxes)))


def split_outputs(values, task: str, n_classes: int) -> ModelOutputs:
    """Outputs as returned by a runtime (an array, or a list/tuple in the model's order) ->
    ModelOutputs. A ModelOutputs is returned as it is."""
    if isinstance(values, ModelOutputs):
        return values
    kinds = output_kinds(task, n_classes)
    arrays = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(arrays) != len(kinds):
        raise ValueError(f"a {task} model with {n_classes} class(es) has {len(kinds)} output(s) "
                         f"({', '.join(kinds)}), got {len(arrays)}")
    named = dict(zip(kinds, (np.asarray(a) for a in arrays)))
    return ModelOutputs(named.get(CLASS), named.get(BOX))


def join_outputs(outputs: ModelOutputs) -> np.ndarray | tuple[np.ndarray, ...]:
    """The inverse of `split_outputs`: one array, or a tuple in the model's order."""
    values = outputs.values()
    return values[0] if len(values) == 1 else values


def concat_outputs(parts: Sequence[ModelOutputs]) -> ModelOutputs:
    """Outputs of consecutive batches as one."""
    first = parts[0]
    return ModelOutputs(*(None if getattr(first, name) is None
                          else np.concatenate([getattr(p, name) for p in parts])
                          for name in ("scores", "boxes")))
