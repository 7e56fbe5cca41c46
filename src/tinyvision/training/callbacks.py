"""Keras callbacks: best checkpoint across stages, the per-epoch CSV log, a rich progress bar."""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from tinyvision.data.sources.boxes import box_iou
from tinyvision.errors import RunError
from tinyvision.files import atomic_path, atomic_write_text
from tinyvision.layout import RESUME_STATE_FILE
from tinyvision.records import ResumeState


def monitor_mode(monitor: str) -> str:
    """"min" for a loss, "max" for a metric such as accuracy: how `monitor` improves."""
    return "min" if monitor.endswith("loss") else "max"


class BestCheckpoint(keras.callbacks.Callback):
    """Save weights whenever `monitor` improves; one instance spans both stages, so the file always
    holds the best model seen so far. Written to a temporary file, then renamed."""

    def __init__(self, path: Path, monitor: str) -> None:
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.mode_max = monitor_mode(monitor) == "max"
        self.best = -math.inf if self.mode_max else math.inf
        self.best_epoch: int | None = None
        self.stage = ""
        self.epoch_offset = 0
        self.target: keras.Model | None = None  # the model to save when fit trains a sub-model

    def improved(self, value: float) -> bool:
        return value > self.best if self.mode_max else value < self.best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or not self.improved(value):
            return
        self.best, self.best_epoch = float(value), self.epoch_offset + epoch + 1
        with atomic_path(self.path, suffix=".weights.h5") as tmp:
            (self.target or self.model).save_weights(tmp)


class BoxScore(keras.callbacks.Callback):
    """Detection: after each epoch, the box on the validation images, added to the epoch's logs
    as `val_iou` (mean IoU, an image whose class is wrong counting 0: the run's default
    `monitor`) and `val_iou50` (right class and IoU >= 0.5). Keras metrics see one output at a
    time, so this needs its own pass over the val split; it must come before the callbacks that
    read the logs (checkpoint, early stopping, log.csv).

    `predict()` returns the model's outputs on the val inputs (models/outputs.py order);
    `true_boxes` their boxes (NaN rows: no box, left out), `true_labels` their class indices
    (None for a box-only model)."""

    def __init__(self, predict, true_boxes: np.ndarray, true_labels: np.ndarray | None) -> None:
        super().__init__()
        self.predict = predict
        self.has_box = np.isfinite(np.asarray(true_boxes)).all(axis=1)
        self.true_boxes = np.asarray(true_boxes)[self.has_box]
        self.true_labels = None if true_labels is None else np.asarray(true_labels)[self.has_box]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or not self.has_box.any():
            return
        outputs = self.predict()
        boxes = np.asarray(outputs[-1] if isinstance(outputs, (list, tuple)) else outputs)
        overlap = box_iou(self.true_boxes, boxes[self.has_box])
        right = (np.ones(len(overlap), bool) if self.true_labels is None else
                 np.asarray(outputs[0])[self.has_box].argmax(axis=1) == self.true_labels)
        logs["val_iou"] = float(np.mean(overlap * right))
        logs["val_iou50"] = float(np.mean((overlap >= 0.5) & right))


class EpochLog(keras.callbacks.Callback):
    """`log.csv`: one row per epoch of both stages (stage, epoch, learning rate, metrics, seconds).
    The whole file is rewritten atomically each epoch, so it is never half-written."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []
        self.stage = ""
        self.epoch_offset = 0
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"stage": self.stage, "epoch": self.epoch_offset + epoch + 1,
               "learning_rate": _current_lr(self.model)}
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows.append(row)
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        out = io.StringIO()
        writer = csv.DictWriter(out, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, out.getvalue())


def _current_lr(model: keras.Model) -> float:
    optimizer = model.optimizer
    lr = optimizer.learning_rate
    return float(lr(optimizer.iterations) if callable(lr) else lr)


class RichProgress(keras.callbacks.Callback):
    """A progress bar per epoch with the live loss and metrics, then one summary line per epoch.
    `plan` (a budget.StagePlan) gives the steps of an epoch and the stage's epochs, which a
    minutes budget may change while training."""

    def __init__(self, console, plan) -> None:
        super().__init__()
        self.console, self.plan = console, plan
        self.progress = None
        self.task = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.progress.start()

    def _title(self, epoch: int) -> str:
        if not self.plan.sized:
            return f"{self.plan.stage} epoch {epoch + 1}/?"
        about = "~" if self.plan.seconds is not None else ""
        return f"{self.plan.stage} epoch {epoch + 1}/{about}{self.plan.epochs}"

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.task = self.progress.add_task(self._title(epoch), total=self.plan.steps_per_epoch,
                                           metrics="")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # `batch` is a group's last step (training/step_groups.py), which the epoch's last
        # group may pass
        self.progress.update(self.task, completed=min(batch + 1, self.plan.steps_per_epoch),
                             metrics=_format(logs))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.progress.remove_task(self.task)
        # one line per epoch in a log file too (rich wraps at 80 columns off a terminal)
        self.console.print(f"{self._title(epoch)}  {_format(logs)}", soft_wrap=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.progress.stop()


def _format(logs: dict | None) -> str:
    return "  ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")


def seed_generators(model: keras.Model) -> list:
    """Every keras.random.SeedGenerator held by a layer of `model` (Dropout and friends)."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        found += [value for value in vars(layer).values()
                  if isinstance(value, keras.random.SeedGenerator)]
    return found


class EpochSeeds(keras.callbacks.Callback):
    """Set every layer's random state from (seed, epoch) at the start of each epoch, so an epoch's
    dropout masks do not depend on how many epochs ran before in this process (resume)."""

    def __init__(self, target: keras.Model, seed: int, epoch_offset: int) -> None:
        super().__init__()
        self.generators = seed_generators(target)
        self.seed, self.epoch_offset = seed, epoch_offset

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        global_epoch = self.epoch_offset + epoch
        for number, generator in enumerate(self.generators):
            generator.state.assign(np.array([self.seed + 7919 * number, global_epoch], np.uint32)
                                   .astype(generator.state.dtype))


class _ResumableCounters:
    """Mixin for a Keras callback whose counters (the `COUNTERS` attributes) are saved with each
    epoch's resume state and restored when a killed run resumes mid-stage."""

    COUNTERS: tuple[str, ...] = ()

    def __init__(self, *args, restore: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.restore = restore

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        for name in self.COUNTERS if self.restore else ():
            setattr(self, name, self.restore[name])

    def state(self) -> dict:
        return {name: None if getattr(self, name) is None else float(getattr(self, name))
                for name in self.COUNTERS}


class ResumableEarlyStopping(_ResumableCounters, keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters can be restored when a killed run resumes mid-stage."""

    COUNTERS = ("wait", "best")


class ResumablePlateau(_ResumableCounters, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters can be restored when a killed run resumes mid-stage. The
    lowered rate itself is an optimizer variable, restored with the optimizer's state."""

    COUNTERS = ("wait", "best", "cooldown_counter")


class ResumeCheckpoint(keras.callbacks.Callback):
    """After each epoch: the model's weights, the optimizer's state and the trainer's counters, so
    `tinyvision train --resume` continues where a killed run stopped. Weights and optimizer go to
    files named by epoch; `state.json` is written last and names them, so a kill at any moment
    leaves the previous complete state in place."""

    def __init__(self, folder: Path, target: keras.Model, stage: str, epoch_offset: int,
                 counters) -> None:
        super().__init__()
        self.folder, self.target, self.stage = Path(folder), target, stage
        self.epoch_offset, self.counters = epoch_offset, counters

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        save_resume_state(self.folder, self.target, self.model.optimizer, self.stage, epoch + 1,
                          self.epoch_offset, finished=False, counters=self.counters())


def save_resume_state(folder: Path, target: keras.Model, optimizer, stage: str, stage_epochs: int,
                      epoch_offset: int, finished: bool, counters: dict) -> None:
    """Weights and optimizer files, then state.json naming them (ResumeState, with `counters`:
    its best, best_epoch, log, early_stopping, plateau, planned_steps and schedule fields)."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{stage}-{stage_epochs}{'-end' if finished else ''}"
    # plain arrays in get_weights() order: 8 ms a save against 80 for Keras' .weights.h5, which
    # a tiny set (hundreds of short epochs) paid after every epoch (load_resume_weights reads both)
    weights, opt = folder / f"last-{tag}.weights.npz", folder / f"last-{tag}.optimizer.npz"
    with atomic_path(weights, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, *target.get_weights())
    if optimizer is not None:
        with atomic_path(opt, suffix=".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, *[np.asarray(v.numpy()) for v in optimizer.variables])
    ResumeState(stage=stage, stage_epochs=stage_epochs, epoch_offset=epoch_offset,
                finished=finished, weights=weights.name,
                optimizer=opt.name if optimizer is not None else None,
                **counters).write(folder / RESUME_STATE_FILE)
    for old in folder.glob("last-*"):  # only the files state.json names are kept
        if old.name not in (weights.name, opt.name):
            old.unlink(missing_ok=True)


def load_resume_state(folder: Path) -> ResumeState | None:
    """The saved state of a killed run, or None; a state of another version (or unreadable) is
    refused with what to do, not half-read."""
    path = Path(folder) / RESUME_STATE_FILE
    try:
        return ResumeState.read(path)
    except RunError as exc:
        raise RunError(f"{exc} The run cannot resume.") from None


def load_resume_weights(model: keras.Model, path: Path) -> None:
    """The weights a resume state names: arrays in `get_weights()` order (.npz), or a Keras
    weights file (.weights.h5: a best checkpoint, or a state saved before the arrays)."""
    path = Path(path)
    if path.suffix != ".npz":
        with warnings.catch_warnings():  # the file's optimizer state is not needed, only weights
            warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
            model.load_weights(path)
        return
    values = _saved_arrays(path)
    shapes = [tuple(w.shape) for w in model.weights]
    if [v.shape for v in values] != shapes:
        raise RunError(f"{path} holds {len(values)} weights that do not fit the model's "
                       f"{len(shapes)}; the run's config changed since it was killed. Start a "
                       "new run instead of resuming.")
    model.set_weights(values)


def _saved_arrays(path: Path) -> list[np.ndarray]:
    """The arrays `np.savez(handle, *arrays)` wrote, in their order."""
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def restore_optimizer(optimizer, variables_file: Path, trainable_variables) -> None:
    """Give a freshly compiled optimizer the saved state (moments, iteration count)."""
    optimizer.build(trainable_variables)
    values = _saved_arrays(variables_file)
    if len(values) != len(optimizer.variables):
        raise RunError(f"{variables_file} holds {len(values)} optimizer variables but the "
                       f"optimizer has {len(optimizer.variables)}; the run's config changed since "
                       "it was killed. Start a new run instead of resuming.")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
