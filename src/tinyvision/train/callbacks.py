"""Keras callbacks: best checkpoint across stages, the per-epoch CSV log, a rich progress bar."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import keras

from tinyvision.runs import atomic_path, atomic_write_text


class BestCheckpoint(keras.callbacks.Callback):
    """Save weights whenever `monitor` improves; one instance spans both stages, so the file always
    holds the best model seen so far. Written to a temporary file, then renamed."""

    def __init__(self, path: Path, monitor: str) -> None:
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.mode_max = not monitor.endswith("loss")
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
    """A progress bar per epoch with the live loss and metrics, then one summary line per epoch."""

    def __init__(self, console, steps: int, epochs: int, stage: str) -> None:
        super().__init__()
        self.console, self.steps, self.epochs, self.stage = console, steps, epochs, stage
        self.progress = None
        self.task = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.progress.start()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        description = f"{self.stage} epoch {epoch + 1}/{self.epochs}"
        self.task = self.progress.add_task(description, total=self.steps, metrics="")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.progress.update(self.task, completed=batch + 1, metrics=_format(logs))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.progress.remove_task(self.task)
        self.console.print(f"{self.stage} epoch {epoch + 1}/{self.epochs}  {_format(logs)}")

    def on_train_end(self, logs: dict | None = None) -> None:
        self.progress.stop()


def _format(logs: dict | None) -> str:
    return "  ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
