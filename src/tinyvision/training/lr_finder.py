"""Learning-rate finder (`tinyvision lr-find`): raise the rate exponentially, one step each, and
record the loss; suggest the rate where the smoothed loss falls fastest.

The sweep stops once the smoothed loss exceeds 4x its minimum (or is not finite). The suggestion
uses a centred moving average (no lag, unlike an online exponential average) and the steepest
negative slope of loss over log10(rate) before the loss minimum. Seeded: the same config gives
the same curve and suggestion.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import keras
import numpy as np

from tinyvision.config import RunConfig
from tinyvision.data.pipeline import cache_dataset
from tinyvision.errors import ConfigError, RunError
from tinyvision.files import atomic_path, atomic_write_text
from tinyvision.models.build import build_model
from tinyvision.models.outputs import has_class_output
from tinyvision.layout import BEST_WEIGHTS_FILE, CHECKPOINTS_DIR, LR_FIND_PLOT, LR_FIND_TABLE
from tinyvision.training.folded_padding import folded_padding
from tinyvision.training.fused_batchnorm import use_fused_batchnorm
from tinyvision.training.precision import build_in, policy_name
from tinyvision.training.imbalance import balance_training_data
from tinyvision.training.losses import build_loss, build_loss_weights
from tinyvision.training.optimizers import build_optimizer_state, lr_multiplier_map, make_optimizer
from tinyvision.training.trainer import JIT_COMPILE, set_trainable

log = logging.getLogger("tinyvision")

EXPLODE_FACTOR = 4.0  # stop when the smoothed loss exceeds this times its minimum
ONLINE_BETA = 0.9  # online smoothing used only for the stop rule


@dataclass
class LrFindResult:
    learning_rates: np.ndarray  # the rates actually tried (the sweep may stop early)
    losses: np.ndarray  # training loss of each step's batch, before the step
    smoothed: np.ndarray
    suggestion: float | None  # None when the loss never fell
    stopped_early: bool
    folder: Path | None = None  # the lr-find run folder holding lr_find.csv and lr_find.png


def sweep_rates(start: float, end: float, steps: int) -> np.ndarray:
    """`steps` rates from `start` to `end`, equally spaced in log scale."""
    return start * (end / start) ** (np.arange(steps) / max(steps - 1, 1))


def smooth(losses: np.ndarray, window: int | None = None) -> np.ndarray:
    """Centred moving average (odd window, edges padded with the end values)."""
    losses = np.asarray(losses, np.float64)
    n = len(losses)
    if n == 0:
        return losses
    window = min((window or max(3, n // 15)) | 1, n if n % 2 else n - 1)
    half = window // 2
    padded = np.concatenate([np.full(half, losses[0]), losses, np.full(half, losses[-1])])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def suggest_rate(learning_rates: np.ndarray, smoothed: np.ndarray) -> float | None:
    """The rate of steepest descent of `smoothed` against log10(rate), searched from the first
    tenth of the sweep up to the loss minimum; None if the loss never fell."""
    n = len(smoothed)
    if n < 5:
        return None
    lowest = int(np.argmin(smoothed))
    first = max(1, n // 10)
    if lowest <= first:
        return None
    slope = np.gradient(smoothed, np.log10(learning_rates))
    best = first + int(np.argmin(slope[first:lowest + 1]))
    return float(learning_rates[best]) if slope[best] < 0 else None


def lr_sweep(model: keras.Model, batches: Iterator, learning_rates: np.ndarray,
             on_step: Callable[[int, float, float], None] | None = None) -> LrFindResult:
    """Train a compiled `model` one batch per rate; `model.optimizer.learning_rate` must be a
    variable (a float when compiled). `on_step(step, rate, loss)` reports progress."""
    losses: list[float] = []
    average, best = 0.0, math.inf
    stopped = False
    for step, rate in enumerate(learning_rates):
        model.optimizer.learning_rate.assign(float(rate))
        batch = next(batches)
        logs = model.train_on_batch(*batch, return_dict=True)
        loss = float(logs["loss"])
        losses.append(loss)
        if on_step is not None:
            on_step(step, float(rate), loss)
        average = ONLINE_BETA * average + (1 - ONLINE_BETA) * loss
        smoothed = average / (1 - ONLINE_BETA ** (step + 1))
        best = min(best, smoothed)
        if not math.isfinite(loss) or smoothed > EXPLODE_FACTOR * best:
            stopped = step < len(learning_rates) - 1
            break
    rates = np.asarray(learning_rates[:len(losses)], np.float64)
    values = np.asarray(losses, np.float64)
    finite = np.isfinite(values)
    rates, values = rates[finite], values[finite]
    curve = smooth(values) if len(values) else values
    return LrFindResult(rates, values, curve, suggest_rate(rates, curve), stopped)


def find_lr(cfg: RunConfig, data, on_step: Callable[[int, float, float], None] | None = None
            ) -> LrFindResult:
    """The sweep of `train.lr_find` on a model built from `cfg` and `data` (a `TrainData`), fresh
    or from `lr_find.weights`, with the configured optimizer, loss, class weights and
    oversampling."""
    settings = cfg.train.lr_find
    keras.utils.set_random_seed(cfg.seed)
    model = build_in(policy_name(cfg.train.precision),
                     lambda: build_model(cfg.model, len(data.classes), data.task))
    use_fused_batchnorm(model)
    data, class_weight = balance_training_data(cfg, data)
    if settings.weights:
        load_start_weights(model, settings.weights)
    set_trainable(model, cfg, settings.stage)
    multipliers = lr_multiplier_map(cfg, model) if settings.stage == "fine_tune" else None
    model.compile(optimizer=make_optimizer(cfg.train, float(settings.start), multipliers),
                  loss=build_loss(cfg.train, data.task, len(data.classes), class_weight),
                  loss_weights=build_loss_weights(cfg.train, data.task, len(data.classes)),
                  jit_compile=JIT_COMPILE)
    build_optimizer_state(model)
    boxes = data.boxes  # detection: (N, 4) normalised xyxy
    class_targets = (data.targets[data.train] if has_class_output(data.task, len(data.classes))
                     else None)
    dataset = cache_dataset(data.images, data.train, class_targets,
                            cfg.train.batch_size, shuffle=True, seed=cfg.seed, repeat=True,
                            augment=cfg.train.augment,
                            boxes=None if boxes is None else boxes[data.train])
    rates = sweep_rates(settings.start, settings.end, settings.steps)
    with folded_padding(model):
        return lr_sweep(model, iter(dataset.as_numpy_iterator()), rates, on_step)


def start_weights_file(source: str | Path) -> Path:
    """The weights file `lr_find.weights` names: a run directory's best checkpoint, or a file."""
    path = Path(source)
    if path.is_dir():
        best = path / CHECKPOINTS_DIR / BEST_WEIGHTS_FILE
        if not best.exists():
            raise RunError(f"{best} does not exist; run `tinyvision train` first.")
        return best
    if not path.is_file():
        raise ConfigError(f"train.lr_find.weights={str(source)!r}: no such run directory or "
                          "file. Give a run directory (runs/NAME) or a .weights.h5 file.")
    return path


def load_start_weights(model: keras.Model, source: str | Path) -> None:
    """Weights for the sweep's model from `lr_find.weights`; the error says which file and why it
    does not fit."""
    path = start_weights_file(source)
    try:
        model.load_weights(path)
    except Exception as exc:  # Keras raises ValueError/KeyError... naming the layer that differs
        raise ConfigError(f"train.lr_find.weights={str(source)!r}: {path} does not fit the model "
                          f"of this config ({' '.join(str(exc).split())[:400]}). Use the config "
                          "that trained those weights.") from None


def save_lr_find(result: LrFindResult, folder: Path) -> tuple:
    """Write `lr_find.csv` (step, rate, loss, smoothed) and `lr_find.png` into `folder`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
    for step, row in enumerate(zip(result.learning_rates, result.losses, result.smoothed)):
        writer.writerow([step, *(f"{v:.6g}" for v in row)])
    csv_path, png_path = Path(folder) / LR_FIND_TABLE, Path(folder) / LR_FIND_PLOT
    atomic_write_text(csv_path, out.getvalue())
    _plot(result, png_path)
    return csv_path, png_path


def _plot(result: LrFindResult, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.learning_rates, result.losses, color="0.75", lw=1, label="loss per step")
    ax.plot(result.learning_rates, result.smoothed, color="C0", lw=2, label="smoothed")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="C3", ls="--",
                   label=f"suggested {result.suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if len(result.smoothed):  # keep the explosion from flattening the interesting part
        low = result.smoothed.min()
        high = max(min(result.smoothed.max(), 2 * result.smoothed[0]), low + 1e-6)
        ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
