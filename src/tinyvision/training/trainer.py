"""Training in stages, as the recipe set them up (training/recipes.py).

Stage 1 ("head") freezes the backbone and trains the head. Stage 2 ("fine_tune") unfreezes the
backbone from a block, layer name or index and trains on at a lower learning rate, BatchNorm kept in
inference mode for pretrained weights; from scratch it is the only stage and every layer trains.
Each stage's length is a number of optimizer steps (training/budget.py: epochs, steps or minutes,
at least `train.min_steps`). One best checkpoint spans both stages; the best weights are
restored at the end. Each stage has its optimizer and schedule (default: AdamW, linear warm-up then
cosine decay; training/optimizers.py, training/schedules.py) and optional early stopping. Losses and
class weights come from training/losses.py and training/imbalance.py. BatchNorm trains with TensorFlow's
fused kernel (training/fused_batchnorm.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import keras
import tensorflow as tf
import numpy as np

from tinyvision.config import RunConfig
from tinyvision.data.pipeline import cache_dataset
from tinyvision.errors import ConfigError
from tinyvision.files import atomic_write_text
from tinyvision.models.build import build_model, is_head_layer, resolve_unfreeze_index
from tinyvision.models.heads import CLASS_OUTPUT, training_model
from tinyvision.models.inference import predict_scores
from tinyvision.models.outputs import BOX, CLASS, has_class_output, output_kinds
from tinyvision.records import ResumeState
from tinyvision.training.budget import STAGES, BudgetClock, StagePlan, StopAtStep, plan_stages
from tinyvision.training.callbacks import (BestCheckpoint, BoxScore, EpochLog, EpochSeeds,
                                           ResumableEarlyStopping, ResumeCheckpoint, RichProgress,
                                           load_resume_state, load_resume_weights, monitor_mode,
                                           restore_optimizer, save_resume_state)
from tinyvision.training.distribute import make_strategy, worker_role
from tinyvision.training.features import extract_features, feature_dataset, split_at_features
from tinyvision.training.folded_padding import folded_padding
from tinyvision.training.fused_batchnorm import use_fused_batchnorm
from tinyvision.training.precision import build_in, float32_copy, policy_name
from tinyvision.training.imbalance import balance_training_data
from tinyvision.training.losses import build_loss, build_loss_weights
from tinyvision.training.optimizers import build_optimizer, build_optimizer_state, stage_schedule
from tinyvision.training.recipes import (FEW_STEPS, switched_settings, training_warnings,
                                        with_settings)
from tinyvision.training.schedules import resize_schedule, schedule_callbacks
from tinyvision.training.step_groups import StepGroups, group_size


log = logging.getLogger("tinyvision")
# Keras 3's default jit_compile="auto" trains the same weights (bit for bit) but slower and
# more erratically on CPU: MobileNet V1 0.25 at 96x96, batch 64, 1,250 / 1,330 / 600 against
# 1,450 / 1,420 / 1,420 images/s with False (benchmarks/bench_train_step.py).
JIT_COMPILE = False


class TrainingFiles(Protocol):
    """Where the trainer writes: a run folder (run/folder.py's RunDir) has these paths."""

    checkpoints: Path  # resume state and the best checkpoint
    best_weights: Path
    log: Path  # log.csv
    config: Path  # config.yaml: rewritten when a failed start check switches the fine-tuning


@dataclass
class TrainData:
    """Decoded images plus targets and the sample indices of each split (bad images removed)."""

    images: np.ndarray  # uint8 (N, H, W, C): the image cache (data.cache.CachedImages) or an array
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
    best_epoch: int | None  # the epoch whose weights `model` holds (train.keep: best or last)
    best_value: float | None  # the best value of `monitor`
    monitor: str
    history: list[dict] = field(default_factory=list)
    # per stage trained in this process: stage, steps (planned), epochs, seconds, on_time (minutes)
    stages: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[dict] = field(default_factory=list)  # {"code", "message"}, also logged
    config: RunConfig | None = None  # the config training ended with (a start check may switch)
    start: dict | None = None  # the start check's verdict, when it ran


StartJudge = Callable[[keras.Model, "TrainData"], dict]


def train_model(cfg: RunConfig, data: TrainData, run: TrainingFiles, console=None,
                resume: bool = False, callbacks: Sequence = (),
                judge_start: StartJudge | None = None) -> TrainResult:
    """Build the model from `cfg.model` and train it stage by stage; returns the best model.
    `callbacks`: more Keras callbacks for every stage (the search's pruning).

    `judge_start(model, data)` (`train.start_check`, pretrained weights): after the head stage,
    says how well the head on the frozen features does ({"useful", "good", "good_bar",
    "message", ...}); when it is not good, `switch` retrains the fine-tuning stage as the scratch
    recipe would (and rewrites the run's config.yaml), `warn` warns.

    Model, optimizer and training run inside the `train.strategy` tf.distribute scope. With
    `resume`, training continues from the run's last saved epoch (checkpoints/state.json) and ends
    where an uninterrupted run with the same seed ends. A minutes budget counts from this call.
    """
    start = time.perf_counter()
    with make_strategy(cfg.train.strategy).scope():
        result = _train_model(cfg, data, run, console, load_resume_state(run.checkpoints) if resume
                              else None, start, callbacks, judge_start)
    result.seconds = round(time.perf_counter() - start, 1)
    return result


def _train_model(cfg: RunConfig, data: TrainData, run: TrainingFiles, console,
                 state: ResumeState | None,
                 start: float, extra: Sequence = (),
                 judge_start: StartJudge | None = None) -> TrainResult:
    keras.utils.set_random_seed(cfg.seed)

    def build() -> keras.Model:
        return build_model(cfg.model, len(data.classes), data.task)

    model = build_in(policy_name(cfg.train.precision), build)
    use_fused_batchnorm(model)
    data, class_weight = balance_training_data(cfg, data)
    monitor = monitor_name(cfg.train.monitor, data.task, len(data.val) > 0,
                           has_class_output(data.task, len(data.classes)))
    checkpoint = BestCheckpoint(run.best_weights, monitor)
    epoch_log = EpochLog(run.log)
    if state is not None:
        checkpoint.best, checkpoint.best_epoch = state.best, state.best_epoch
        epoch_log.rows = state.log
        load_resume_weights(model, run.checkpoints / state.weights)
    plans = plan_stages(cfg, len(data.train))
    timed = any(plan.seconds is not None for plan in plans)
    found = training_warnings(cfg, None if timed else sum(plan.total_steps for plan in plans))
    for plan in plans if state is None else ():
        log.info("training %s", plan.describe())
    for warning in found:
        log.warning(warning["message"])
    done_epochs, stages, verdict = 0, [], None
    while plans:
        plan = plans.pop(0)
        stage = plan.stage
        first, fitted = 0, []
        if state is not None:
            if STAGES.index(stage) < STAGES.index(state.stage):
                continue  # finished before the run was killed
            done_epochs = state.epoch_offset
            if state.finished:
                done_epochs += state.stage_epochs
                state = None
                continue
            first = state.stage_epochs
            if state.planned_steps:  # a minutes budget had sized the stage: keep its plan
                plan.total_steps, plan.seconds = state.planned_steps, None
        stage_start = time.perf_counter()
        clock = None
        # Killed after the stage's last epoch (or the one early stopping ended it at) but before
        # the stage was closed: nothing is left to fit, only the closing below.
        if state is None or not (_stopped_early(state, cfg) or first >= plan.epochs):
            history, clock = _fit_stage(cfg, data, model, plan, done_epochs, first, class_weight,
                                        monitor, checkpoint, epoch_log, run, console, state, start,
                                        extra)
            fitted = history.epoch
        stage_epochs = first + len(fitted)
        if cfg.train.keep == "best" and run.best_weights.exists():
            load_resume_weights(model, run.best_weights)  # the next stage starts from the best so far
        save_resume_state(run.checkpoints, model, None, stage, stage_epochs, done_epochs,
                          finished=True, counters=_counters(checkpoint, epoch_log, None, plan))
        stages.append({"stage": stage, "steps": plan.total_steps, "epochs": stage_epochs,
                       "seconds": round(time.perf_counter() - stage_start, 1),
                       **({"on_time": not clock.late} if clock is not None else {})})
        found += _budget_warnings(plan, clock)
        done_epochs += stage_epochs
        if stage == "head" and plans and judge_start is not None \
                and cfg.train.start_check in ("switch", "warn"):
            cfg, plans, verdict = _check_start(cfg, data, model, run, judge_start, plans)
            found += verdict.get("warnings", [])
        state = None
    kept_epoch = (checkpoint.best_epoch if cfg.train.keep == "best"
                  else (epoch_log.rows[-1]["epoch"] if epoch_log.rows else None))
    return TrainResult(float32_copy(model, build), kept_epoch,
                       None if checkpoint.best_epoch is None else checkpoint.best,
                       monitor, epoch_log.rows, stages, warnings=found, config=cfg,
                       start=verdict)


def _check_start(cfg: RunConfig, data: TrainData, model: keras.Model, run: TrainingFiles,
                 judge: StartJudge, plans: list[StagePlan]
                 ) -> tuple[RunConfig, list[StagePlan], dict]:
    """After the head stage: is the head on the given weights' features useful? If not, switch
    the fine-tuning to the scratch recipe's whole-network training (config.yaml rewritten, so a
    resumed run goes on with it) or warn, as `train.start_check` says."""
    verdict = dict(judge(model, data))
    if verdict["good"]:
        log.info("start check: %s; fine-tuning as planned", verdict["message"])
        return cfg, plans, {**verdict, "decision": "kept"}
    partly = verdict["useful"]
    fit = (f"the features only partly suit this task (a start kept as it is needs val "
           f"informedness {verdict['good_bar']:.2f})" if partly
           else "the features do not suit this task")
    if cfg.train.start_check == "warn":
        code = "start_partial" if partly else "start_unhelpful"
        message = (f"The given weights' start: {verdict['message']}; {fit}. train.recipe: "
                   "pretrained keeps its settings; set train.recipe: auto to let the run fine-tune "
                   "the whole network instead" + (", or model.weights: none." if not partly
                                                  else "."))
        log.warning(message)
        return cfg, plans, {**verdict, "decision": "warned",
                            "warnings": [{"code": code, "message": message}]}
    settings = switched_settings(cfg, len(data.train), data.task)
    cfg = with_settings(cfg, settings)
    atomic_write_text(run.config, cfg.to_yaml())
    for layer in model.layers:  # statistics of a new domain move fast (as from scratch)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = cfg.model.batchnorm_momentum or layer.momentum
    plans = [p for p in plan_stages(cfg, len(data.train)) if p.stage != "head"]
    shown = ", ".join(f"{k.removeprefix('train.').removeprefix('fine_tune.')}={v}"
                      for k, v in settings.items() if k != "train.augment")
    message = (f"start check: {verdict['message']}: {fit}, so the whole network trains from "
               f"them with the scratch recipe's settings ({shown}; augment "
               f"{'+'.join(op['op'] for op in settings.get('train.augment', [])) or 'none'})")
    log.warning(message)
    for plan in plans:
        log.info("training %s", plan.describe())
    return cfg, plans, {**verdict, "decision": "switched", "settings": settings,
                        "warnings": [{"code": "start_switched", "message": message}]}


def _budget_warnings(plan: StagePlan, clock: BudgetClock | None) -> list[dict]:
    """A minutes budget that gave few steps, or that the stage overran (then cut)."""
    found = []
    if clock is not None and clock.late:
        found.append({"code": "budget_overrun", "message": (
            f"{plan.stage} ran past its time budget and was stopped at step "
            f"{plan.total_steps}, before its schedule ended; the machine slowed down while "
            "training, or the budget leaves too little time: raise train.budget.minutes.")})
    elif clock is not None and plan.total_steps < FEW_STEPS:
        found.append({"code": "few_steps", "message": (
            f"the time budget gave {plan.stage} only {plan.total_steps} optimizer steps; a "
            "network usually needs a few hundred at least: raise train.budget.minutes.")})
    for warning in found:
        log.warning(warning["message"])
    return found


def _fit_stage(cfg, data, model, plan: StagePlan, epoch_offset, first, class_weight, monitor,
               checkpoint, epoch_log, run, console, state, start, extra=()):
    """Compile and fit one stage from its epoch `first` (0, or later when resuming); returns the
    Keras history and the BudgetClock (None without a minutes budget)."""
    stage, n_classes = plan.stage, len(data.classes)
    set_trainable(model, cfg, stage)
    steps = plan.steps_per_epoch
    fit_model, train_ds, val_ds, predict_val, grid = _stage_inputs(cfg, data, model, stage,
                                                                   epoch_offset + first, steps)
    # the fast head's model takes the backbone's features, not images
    on_features = fit_model.inputs[0].shape[1:] != model.inputs[0].shape[1:]
    schedule = stage_schedule(cfg, stage, plan.pass_steps, plan.total_steps)
    if state is not None and state.schedule and hasattr(schedule, "restore"):
        schedule.restore(state.schedule)  # a minutes budget had stretched it
    # A head on cached features takes microseconds per step, so Keras' per-step Python overhead
    # would dominate: run a whole epoch per call instead. On images, groups of steps that end
    # with the epoch and the stage (training/step_groups.py).
    group = steps if on_features else group_size(steps, JIT_COMPILE)
    fit_model.compile(optimizer=build_optimizer(cfg, stage, fit_model, plan.pass_steps, 0, schedule),
                      loss=build_loss(cfg.train, data.task, n_classes, class_weight, grid),
                      loss_weights=build_loss_weights(cfg.train, data.task, n_classes, grid),
                      metrics=_metrics(data.task, n_classes, grid is not None),
                      steps_per_execution=group, jit_compile=JIT_COMPILE)
    build_optimizer_state(fit_model)
    if state is not None:
        restore_optimizer(fit_model.optimizer, run.checkpoints / state.optimizer,
                          fit_model.trainable_variables)
    checkpoint.target = model
    for callback in (checkpoint, epoch_log):
        callback.stage, callback.epoch_offset = stage, epoch_offset
    stopping = [] if cfg.train.patience is None else [ResumableEarlyStopping(
        monitor, patience=cfg.train.patience, mode=monitor_mode(monitor),
        restore=state.early_stopping if state else None)]
    stage_cfg = getattr(cfg.train, stage)
    plateau = schedule_callbacks(stage_cfg.schedule, monitor,
                                 restore=state.plateau if state else None)
    clock = None
    if plan.seconds is not None:
        clock = BudgetClock(plan, start + plan.seconds, resize_schedule(
            schedule, stage_cfg.schedule, plan.pass_steps, cfg.train.warmup_epochs),
            val_steps=-(-len(data.val) // cfg.train.batch_size))
    scores = []  # the box's val IoU, before every callback that reads the logs
    if data.task == "detection" and len(data.val):
        labels = data.targets[data.val].argmax(axis=1) if has_class_output(
            data.task, n_classes) else None
        scores = [BoxScore(predict_val, data.boxes[data.val], labels)]
    groups = [] if on_features or group == 1 else [
        StepGroups(fit_model, group, steps, lambda: plan.total_steps)]
    callbacks = [*groups, EpochSeeds(model, cfg.seed, epoch_offset), *([clock] if clock else []),
                 StopAtStep(plan), *scores, checkpoint, epoch_log, *stopping, *plateau, *extra]
    if console is not None:
        callbacks.append(RichProgress(console, plan))
    callbacks.append(ResumeCheckpoint(run.checkpoints, model, stage, epoch_offset,
                                      lambda: _counters(checkpoint, epoch_log, stopping[0] if
                                                        stopping else None, plan, plateau,
                                                        schedule)))
    epochs = plan.epochs if clock is None else first + 1_000_000  # the clock ends the stage
    with folded_padding(fit_model):  # the same numbers, a faster step (training/folded_padding.py)
        history = fit_model.fit(train_ds, epochs=epochs, initial_epoch=first,
                                steps_per_epoch=steps, validation_data=val_ds,
                                callbacks=callbacks, verbose=0, shuffle=False)
    return history, clock


def _stopped_early(state: ResumeState, cfg: RunConfig) -> bool:
    """Early stopping had ended the stage when the run was killed."""
    stopping = state.early_stopping or {}
    return (cfg.train.patience is not None and stopping.get("wait", 0) >= cfg.train.patience
            and state.stage_epochs > 1)


def _counters(checkpoint: BestCheckpoint, epoch_log: EpochLog, stopping, plan: StagePlan,
              plateau=(), schedule=None) -> dict:
    """The counters of ResumeState (records.py), by field name."""
    return dict(best=checkpoint.best, best_epoch=checkpoint.best_epoch, log=epoch_log.rows,
                early_stopping=stopping.state() if stopping is not None else None,
                plateau=plateau[0].state() if plateau else None,
                planned_steps=plan.total_steps,
                schedule=schedule.state() if hasattr(schedule, "state") else None)


def _first_outputs(outputs, n: int, grid):
    """The outputs of the deployed model among a training model's (which adds the cells' output
    last when `grid` is set), in the deployed model's form: one array when it has one output."""
    if grid is None:
        return outputs
    outputs = list(outputs)[:n]
    return outputs[0] if n == 1 else outputs


def _stage_inputs(cfg: RunConfig, data: TrainData, model: keras.Model, stage: str,
                  first_epoch: int, steps: int):
    """(model to fit, train dataset, val dataset, a function giving `model`'s outputs on the val
    split, the box cells' grid or None) for a stage.

    The head stage without augmentation fits only the head, on backbone features computed once
    (`train.head.cache_features`; not under a distribution strategy); otherwise the whole model
    is fitted on images from the cache.
    A detection model is fitted with its cells' proposals as an extra output (models.heads.
    training_model), whose target is the box again.
    """
    batch, seed = cfg.train.batch_size, cfg.seed
    stream = {"shuffle": True, "repeat": True, "seed": seed, "steps_per_epoch": steps,
              "first_epoch": first_epoch}
    # under a distribution strategy the head trains on images too: its features would be
    # computed on one worker and its many-steps-per-call fit does not distribute
    if (stage == "head" and cfg.train.head.cache_features and not cfg.train.augment
            and not tf.distribute.has_strategy()):
        # split the training model (not `model`): its extra cell output must be reachable from
        # the head's own inputs
        fit_full, grid = training_model(model)
        extractor, fit_model = split_at_features(fit_full)
        n_outputs = len(model.outputs)
        # one call for both splits (the extractor is traced once), each image once (oversampling
        # repeats train images)
        unique, where = np.unique(np.concatenate([data.train, data.val]), return_inverse=True)
        features = [f[where] for f in extract_features(extractor, data.images, unique)]
        n = len(data.train)
        train_features, val_features = [f[:n] for f in features], [f[n:] for f in features]
        train_ds = feature_dataset(train_features, fit_targets(data, data.train, grid), batch,
                                   **stream)
        val_ds = (feature_dataset(val_features, fit_targets(data, data.val, grid), batch)
                  if len(data.val) else None)
        return (fit_model, train_ds, val_ds,
                lambda: _first_outputs(fit_model.predict(val_features, batch, verbose=0),
                                       n_outputs, grid), grid)
    fit_model, grid = training_model(model)
    boxes = (lambda idx: None) if data.boxes is None else (lambda idx: data.boxes[idx])

    def cells_target(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds if grid is None else ds.map(_box_twice)  # the cells' target is the box again

    def train_images(shard: tuple[int, int] | None) -> tf.data.Dataset:
        return cells_target(cache_dataset(
            data.images, data.train, _class_targets(data, data.train), batch,
            augment=cfg.train.augment, boxes=boxes(data.train), shard=shard, **stream))

    train_ds = _read_by_worker(cfg, train_images)
    val_ds = (cells_target(cache_dataset(data.images, data.val, _class_targets(data, data.val),
                                         batch, boxes=boxes(data.val)))
              if len(data.val) else None)
    return fit_model, train_ds, val_ds, lambda: predict_scores(model, data.images, data.val), grid


def _read_by_worker(cfg: RunConfig, make: Callable[[tuple[int, int] | None], tf.data.Dataset]):
    """The training dataset `make(None)` gives; with several workers of one replica each
    (`train.strategy: multi_worker`), each worker's own, which reads from its cache only its
    part of every batch (`make((worker, workers))`, through tf.distribute's
    distribute_datasets_from_function) instead of reading the whole batch and keeping its part."""
    role = worker_role() if cfg.train.strategy == "multi_worker" else None
    strategy = tf.distribute.get_strategy()
    if role is None or strategy.num_replicas_in_sync != role.count:
        return make(None)
    return strategy.distribute_datasets_from_function(
        lambda context: make((context.input_pipeline_id, context.num_input_pipelines)))


def _box_twice(x, y):
    """(image, targets) -> (image, targets + the box again) for a model with a cells output."""
    targets = y if isinstance(y, tuple) else (y,)
    return x, (*targets, targets[-1])


def fit_targets(data: TrainData, indices: np.ndarray, cell_grid: tuple[int, int] | None = None):
    """What the model is fitted to, one entry per output (models/outputs.py): class targets, the
    box, or both; with `cell_grid` (a detection training model), the box once more for its
    cells."""
    targets = {CLASS: lambda: data.targets[indices], BOX: lambda: data.boxes[indices]}
    values = tuple(targets[kind]() for kind in output_kinds(data.task, len(data.classes)))
    if cell_grid is not None:
        values += (data.boxes[indices],)
    return values if len(values) > 1 else values[0]


def _class_targets(data: TrainData, indices: np.ndarray) -> np.ndarray | None:
    """The class targets of `indices`, or None for a model without a class output."""
    return data.targets[indices] if has_class_output(data.task, len(data.classes)) else None


def set_trainable(model: keras.Model, cfg: RunConfig, stage: str) -> None:
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


def monitor_name(monitor: str, task: str, has_val: bool, has_class: bool = True) -> str:
    """`train.monitor` as the logs name it. `auto`: val_accuracy for classification, val_iou
    (BoxScore) for detection. Without a val split, the training loss or accuracy; a detection
    model's accuracy is its class output's (`head_class_output_accuracy`)."""
    if monitor == "auto":
        monitor = "val_iou" if task == "detection" else "val_accuracy"
    if monitor == "val_iou" and task != "detection":
        raise ConfigError("train.monitor=val_iou needs a box: it applies to detection (data with "
                          "boxes); use val_accuracy or val_loss.")
    if task == "detection" and monitor == "val_accuracy" and not has_class:
        raise ConfigError("train.monitor=val_accuracy: a one-class detection model has no class "
                          "output (its box is its answer); use val_iou (the default) or val_loss.")
    if not has_val:  # no val split: the training loss (a box score needs held-out images)
        monitor = "loss" if monitor == "val_iou" else monitor.removeprefix("val_")
    if task == "detection" and monitor.endswith("accuracy"):
        monitor = monitor.replace("accuracy", f"{CLASS_OUTPUT}_accuracy")
    return monitor


def _metrics(task: str, n_classes: int, cells: bool = False) -> list | None:
    if task == "detection":  # outputs [class, box(, cells)]: accuracy of the class output only;
        # the box's IoU comes from BoxScore; a one-class box model has no class output
        if not has_class_output(task, n_classes):
            return None
        return [[keras.metrics.CategoricalAccuracy(name="accuracy")]] + [[]] * (1 + cells)
    if task == "multilabel":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    return [keras.metrics.CategoricalAccuracy(name="accuracy")]
