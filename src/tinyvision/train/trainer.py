"""Two-stage transfer learning.

Stage 1 ("head") freezes the backbone and trains the head. Stage 2 ("fine_tune") unfreezes the
backbone from a block, layer name or index and trains on at a lower learning rate, BatchNorm kept in
inference mode for pretrained weights. One best checkpoint spans both stages; the best weights are
restored at the end. Each stage has its optimizer and schedule (default: AdamW, linear warm-up then
cosine decay; train/optimizers.py, train/schedules.py) and early stopping. Losses and class
weights come from train/losses.py and train/imbalance.py.
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
from tinyvision.train.callbacks import (BestCheckpoint, EpochLog, EpochSeeds, ResumableEarlyStopping,
                                       ResumeCheckpoint, RichProgress, load_resume_state,
                                       restore_optimizer, save_resume_state)
from tinyvision.train.distribute import make_strategy
from tinyvision.train.features import extract_features, feature_dataset, split_at_features
from tinyvision.train.imbalance import balance_training_data
from tinyvision.train.losses import build_loss, build_loss_weights
from tinyvision.train.optimizers import build_optimizer
from tinyvision.train.schedules import schedule_callbacks


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
    boxes: np.ndarray | None = None  # detection: float32 (N, 4) normalised xyxy in the cached image


@dataclass
class TrainResult:
    model: keras.Model
    best_epoch: int | None
    best_value: float | None
    monitor: str
    history: list[dict] = field(default_factory=list)


def train_model(cfg: RunConfig, data: TrainData, run: RunDir, console=None,
                resume: bool = False) -> TrainResult:
    """Build the model from `cfg.model` and train it in two stages; returns the best model.

    Model, optimizer and training run inside the `train.strategy` tf.distribute scope. With
    `resume`, training continues from the run's last saved epoch (checkpoints/state.json) and ends
    where an uninterrupted run with the same seed ends.
    """
    with make_strategy(cfg.train.strategy).scope():
        return _train_model(cfg, data, run, console, load_resume_state(run.checkpoints) if resume
                            else None)


STAGES = ("head", "fine_tune")


def _train_model(cfg: RunConfig, data: TrainData, run: RunDir, console, state: dict | None
                 ) -> TrainResult:
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.model, len(data.classes), data.task)
    data, class_weight = balance_training_data(cfg, data)
    monitor = _monitor_name(cfg, data, model)
    checkpoint = BestCheckpoint(run.best_weights, monitor)
    epoch_log = EpochLog(run.log)
    if state is not None:
        checkpoint.best, checkpoint.best_epoch = state["best"], state["best_epoch"]
        epoch_log.rows = state["log"]
        _load_weights(model, run.checkpoints / state["weights"])
    done_epochs = 0
    for stage in STAGES:
        if getattr(cfg.train, stage).epochs == 0:
            continue
        first, fitted = 0, []
        if state is not None:
            if STAGES.index(stage) < STAGES.index(state["stage"]):
                continue  # finished before the run was killed
            done_epochs = state["epoch_offset"]
            if state["finished"]:
                done_epochs += state["stage_epochs"]
                state = None
                continue
            first = state["stage_epochs"]
        # Killed after the stage's last epoch (or the one early stopping ended it at) but before
        # the stage was closed: nothing is left to fit, only the closing below.
        if state is None or not (_stopped_early(state, cfg)
                                 or first >= getattr(cfg.train, stage).epochs):
            fitted = _fit_stage(cfg, data, model, stage, done_epochs, first, class_weight,
                                monitor, checkpoint, epoch_log, run, console, state).epoch
        stage_epochs = first + len(fitted)
        if run.best_weights.exists():  # the next stage starts from the best weights so far
            _load_weights(model, run.best_weights)
        save_resume_state(run.checkpoints, model, None, stage, stage_epochs, done_epochs,
                          finished=True, counters=_counters(checkpoint, epoch_log, None))
        done_epochs += stage_epochs
        state = None
    return TrainResult(model, checkpoint.best_epoch,
                       None if checkpoint.best_epoch is None else checkpoint.best,
                       monitor, epoch_log.rows)


def _fit_stage(cfg, data, model, stage, epoch_offset, first, class_weight, monitor, checkpoint,
               epoch_log, run, console, state):
    """Compile and fit one stage from its epoch `first` (0, or later when resuming)."""
    _set_trainable(model, cfg, stage)
    epochs = getattr(cfg.train, stage).epochs
    steps = _steps_per_epoch(len(data.train), cfg)
    fit_model, train_ds, val_ds = _stage_inputs(cfg, data, model, stage, epoch_offset + first, steps)
    # A head on cached features takes microseconds per step, so Keras' per-step Python overhead
    # would dominate: run a whole epoch per call instead.
    fit_model.compile(optimizer=build_optimizer(cfg, stage, fit_model, steps, epochs),
                      loss=build_loss(cfg.train, data.task, class_weight),
                      loss_weights=build_loss_weights(cfg.train, data.task),
                      metrics=_metrics(data.task),
                      steps_per_execution=steps if fit_model is not model else 1)
    if state is not None:
        restore_optimizer(fit_model.optimizer, run.checkpoints / state["optimizer"],
                          fit_model.trainable_variables)
    checkpoint.target = model
    for callback in (checkpoint, epoch_log):
        callback.stage, callback.epoch_offset = stage, epoch_offset
    stopping = ResumableEarlyStopping(monitor, patience=cfg.train.patience,
                                      mode="min" if monitor.endswith("loss") else "max",
                                      restore=state["early_stopping"] if state else None)
    plateau = schedule_callbacks(getattr(cfg.train, stage).schedule, monitor,
                                 restore=state.get("plateau") if state else None)
    callbacks = [EpochSeeds(model, cfg.seed, epoch_offset), checkpoint, epoch_log, stopping,
                 *plateau]
    if console is not None:
        callbacks.append(RichProgress(console, steps, epochs, stage))
    callbacks.append(ResumeCheckpoint(run.checkpoints, model, stage, epoch_offset,
                                      lambda: _counters(checkpoint, epoch_log, stopping, plateau)))
    return fit_model.fit(train_ds, epochs=epochs, initial_epoch=first, steps_per_epoch=steps,
                         validation_data=val_ds, callbacks=callbacks, verbose=0, shuffle=False)


def _stopped_early(state: dict, cfg: RunConfig) -> bool:
    """Early stopping had ended the stage when the run was killed."""
    stopping = state.get("early_stopping") or {}
    return stopping.get("wait", 0) >= cfg.train.patience and state["stage_epochs"] > 1


def _counters(checkpoint: BestCheckpoint, epoch_log: EpochLog, stopping, plateau=()) -> dict:
    return {"best": checkpoint.best, "best_epoch": checkpoint.best_epoch, "log": epoch_log.rows,
            "early_stopping": stopping.state() if stopping is not None else None,
            "plateau": plateau[0].state() if plateau else None}


def _stage_inputs(cfg: RunConfig, data: TrainData, model: keras.Model, stage: str,
                  first_epoch: int, steps: int):
    """(model to fit, train dataset, val dataset) for a stage.

    The head stage without augmentation fits only the head, on backbone features computed once
    (`train.head.cache_features`); otherwise the whole model is fitted on images from the cache.
    """
    batch, seed = cfg.train.batch_size, cfg.seed
    train_y, val_y = _targets(data, data.train), _targets(data, data.val)
    stream = {"shuffle": True, "repeat": True, "seed": seed, "steps_per_epoch": steps,
              "first_epoch": first_epoch}
    if stage == "head" and cfg.train.head.cache_features and not cfg.train.augment:
        extractor, head = split_at_features(model)
        # one call for both splits (the extractor is traced once), each image once (oversampling
        # repeats train images)
        unique, where = np.unique(np.concatenate([data.train, data.val]), return_inverse=True)
        features = extract_features(extractor, data.images, unique)[where]
        train_features, val_features = features[:len(data.train)], features[len(data.train):]
        train_ds = feature_dataset(train_features, train_y, batch, **stream)
        val_ds = feature_dataset(val_features, val_y, batch) if len(data.val) else None
        return head, train_ds, val_ds
    boxes = (lambda idx: None) if data.boxes is None else (lambda idx: data.boxes[idx])
    train_ds = cache_dataset(data.images, data.train, data.targets[data.train], batch,
                             augment=cfg.train.augment, boxes=boxes(data.train), **stream)
    val_ds = (cache_dataset(data.images, data.val, data.targets[data.val], batch,
                            boxes=boxes(data.val)) if len(data.val) else None)
    return model, train_ds, val_ds


def _targets(data: TrainData, indices: np.ndarray):
    """What the model is fitted to: class targets, plus the box for a detection model."""
    if data.boxes is None:
        return data.targets[indices]
    return data.targets[indices], data.boxes[indices]


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


def _monitor_name(cfg: RunConfig, data: TrainData, model: keras.Model) -> str:
    """`train.monitor` as Keras logs it: without `val_` when there is no val split; a detection
    model's accuracy is its class output's (`<first output name>_accuracy`)."""
    monitor = cfg.train.monitor if len(data.val) else cfg.train.monitor.removeprefix("val_")
    if data.task == "detection" and monitor.endswith("accuracy"):
        monitor = monitor.replace("accuracy", f"{model.output_names[0]}_accuracy")
    return monitor


def _metrics(task: str) -> list | dict:
    if task == "detection":  # outputs [class, box]: accuracy of the class output only
        return [[keras.metrics.CategoricalAccuracy(name="accuracy")], []]
    if task == "multilabel":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    return [keras.metrics.CategoricalAccuracy(name="accuracy")]
