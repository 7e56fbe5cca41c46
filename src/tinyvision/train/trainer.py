"""Two-stage transfer learning.

Stage 1 ("head") freezes the backbone and trains the head. Stage 2 ("fine_tune") unfreezes the
backbone from a block, layer name or index and trains on at a lower learning rate, BatchNorm kept in
inference mode for pretrained weights. One best checkpoint spans both stages; the best weights are
restored at the end. Each stage has linear warm-up then cosine decay, and early stopping.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from tinyvision.config import RunConfig
from tinyvision.data.pipeline import cache_dataset
from tinyvision.models.build import build_model, is_head_layer, resolve_unfreeze_index
from tinyvision.runs import RunDir
from tinyvision.train.callbacks import BestCheckpoint, EpochLog, RichProgress


@dataclass
class TrainData:
    """Decoded images plus targets and the sample indices of each split (bad images removed)."""

    images: np.ndarray  # uint8 (N, H, W, C), usually the cache memmap
    targets: np.ndarray  # float32 (N, classes)
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    classes: list[str]
    task: str


@dataclass
class TrainResult:
    model: keras.Model
    best_epoch: int | None
    best_value: float | None
    monitor: str
    history: list[dict] = field(default_factory=list)


def train_model(cfg: RunConfig, data: TrainData, run: RunDir, console=None) -> TrainResult:
    """Build the model from `cfg.model` and train it in two stages; returns the best model."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model, len(data.classes), data.task)
    monitor = cfg.train.monitor if len(data.val) else cfg.train.monitor.removeprefix("val_")
    checkpoint = BestCheckpoint(run.best_weights, monitor)
    epoch_log = EpochLog(run.log)
    stages = [("head", cfg.train.head.epochs, cfg.train.head.learning_rate),
              ("fine_tune", cfg.train.fine_tune.epochs, cfg.train.fine_tune.learning_rate)]
    done_epochs = 0
    for stage, epochs, learning_rate in stages:
        if epochs == 0:
            continue
        _set_trainable(model, cfg, stage)
        steps = _steps_per_epoch(len(data.train), cfg)
        model.compile(optimizer=_optimizer(cfg, learning_rate, steps * epochs, steps),
                      loss=_loss(cfg, data.task), metrics=_metrics(data.task))
        for callback in (checkpoint, epoch_log):
            callback.stage, callback.epoch_offset = stage, done_epochs
        callbacks = [checkpoint, epoch_log,
                     keras.callbacks.EarlyStopping(monitor, patience=cfg.train.patience,
                                                   mode="min" if monitor.endswith("loss") else "max")]
        if console is not None:
            callbacks.append(RichProgress(console, steps, epochs, stage))
        train_ds = cache_dataset(data.images, data.train, data.targets[data.train],
                                 cfg.train.batch_size, shuffle=True, seed=cfg.seed + done_epochs,
                                 repeat=True)
        val_ds = (cache_dataset(data.images, data.val, data.targets[data.val], cfg.train.batch_size)
                  if len(data.val) else None)
        history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, validation_data=val_ds,
                            callbacks=callbacks, verbose=0, shuffle=False)
        done_epochs += len(history.epoch)
        if run.best_weights.exists():  # the next stage starts from the best weights so far
            _load_weights(model, run.best_weights)
    return TrainResult(model, checkpoint.best_epoch,
                       None if checkpoint.best_epoch is None else checkpoint.best,
                       monitor, epoch_log.rows)


def _load_weights(model: keras.Model, path) -> None:
    with warnings.catch_warnings():  # the file's optimizer state is not needed, only the weights
        warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
        model.load_weights(path)


def _set_trainable(model: keras.Model, cfg: RunConfig, stage: str) -> None:
    """Stage "head": only head layers train. Stage "fine_tune": layers from the unfreeze point on
    train too; BatchNorm follows `fine_tune.batchnorm` (Keras runs a frozen BN in inference mode)."""
    start = (len(model.layers) if stage == "head" else
             resolve_unfreeze_index(model, cfg.model.backbone, cfg.train.fine_tune.unfreeze_from))
    policy = cfg.train.fine_tune.batchnorm
    train_bn = policy == "train" or (policy == "auto" and not cfg.model.pretrained)
    for index, layer in enumerate(model.layers):
        trainable = is_head_layer(layer) or index >= start
        if isinstance(layer, keras.layers.BatchNormalization) and not train_bn:
            trainable = False
        layer.trainable = trainable


def _steps_per_epoch(n_train: int, cfg: RunConfig) -> int:
    steps = max(1, math.ceil(n_train / cfg.train.batch_size))
    return min(steps, cfg.train.max_steps_per_epoch or steps)


def _optimizer(cfg: RunConfig, learning_rate: float, total_steps: int,
               steps_per_epoch: int) -> keras.optimizers.Optimizer:
    warmup = min(int(cfg.train.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate * 0.01 if warmup else learning_rate,
        decay_steps=max(total_steps - warmup, 1), alpha=0.01,
        warmup_target=learning_rate if warmup else None, warmup_steps=warmup)
    if cfg.train.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.train.weight_decay)
    return keras.optimizers.Adam(schedule)


def _loss(cfg: RunConfig, task: str) -> keras.losses.Loss:
    if task == "multilabel":
        return keras.losses.BinaryCrossentropy(label_smoothing=cfg.train.label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing)


def _metrics(task: str) -> list:
    if task == "multilabel":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    return [keras.metrics.CategoricalAccuracy(name="accuracy")]


def predict_scores(model: keras.Model, images: np.ndarray, indices: np.ndarray,
                   batch_size: int = 128) -> np.ndarray:
    """Model outputs (probabilities) for `images[indices]`, in order."""
    if len(indices) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    dummy = np.zeros((len(indices), 1), np.float32)
    ds = cache_dataset(images, indices, dummy, batch_size).map(lambda x, y: x)
    return model.predict(ds, verbose=0)
