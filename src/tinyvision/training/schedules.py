"""Learning-rate schedules of a stage (`train.<stage>.schedule`), counted in optimizer steps.

constant / step / cosine take a linear warm-up from 1% of the rate; one_cycle rises and falls on
its own (Smith's 1cycle, cosine annealing as in PyTorch's OneCycleLR, learning rate only);
plateau is a constant rate that `keras.callbacks.ReduceLROnPlateau` lowers, so it needs no
schedule object and takes no warm-up. The length of cosine and one_cycle is a variable, so a
minutes budget can size it once the step time is known (`resize_schedule`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from tinyvision.config import ScheduleConfig
from tinyvision.training.callbacks import ResumablePlateau, monitor_mode

_register = keras.saving.register_keras_serializable(package="tinyvision")
WARMUP_START = 0.01  # warm-up starts at this fraction of the rate (as the cosine schedule did)
WARMUP_MIN_FRACTION = 0.03  # a warm-up is at least this share of the stage's steps


def _length(value: float) -> tf.Variable:
    """A schedule length that can change while training (read inside the traced step)."""
    return tf.Variable(float(value), trainable=False, dtype=tf.float32)


@_register
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 1% of `learning_rate` over `warmup_steps`, then cosine decay to
    `final_fraction` x the rate at `total_steps`: keras' CosineDecay curve, with a length that can
    change while training (`set_length`). A change after the warm-up keeps the rate continuous:
    the cosine goes on from where it is and now ends at the new last step."""

    def __init__(self, learning_rate: float, total_steps: int, warmup_steps: int,
                 final_fraction: float = 0.01) -> None:
        self.learning_rate, self.final_fraction = float(learning_rate), float(final_fraction)
        self._total, self._warmup = _length(total_steps), _length(warmup_steps)
        # the cosine's progress (0..1) is `anchor_progress` at step `anchor_step`
        self._anchor_step, self._anchor_progress = _length(warmup_steps), _length(0.0)

    def set_length(self, total_steps: int, warmup_steps: int, at_step: int = 0) -> None:
        """A new length; `at_step` past the warm-up keeps the warm-up and the current rate."""
        warmup = float(self._warmup.numpy())
        if at_step <= warmup:
            self._warmup.assign(float(warmup_steps))
            self._anchor_step.assign(float(warmup_steps))
            self._anchor_progress.assign(0.0)
        else:
            self._anchor_progress.assign(float(self._progress(float(at_step))))
            self._anchor_step.assign(float(at_step))
        self._total.assign(float(total_steps))

    def _progress(self, step):
        anchor, done = ops.convert_to_tensor(self._anchor_step), ops.convert_to_tensor(
            self._anchor_progress)
        left = ops.maximum(ops.convert_to_tensor(self._total) - anchor, 1.0)
        return ops.clip(done + (step - anchor) * (1.0 - done) / left, 0.0, 1.0)

    def state(self) -> dict:
        """The length as it stands (saved with a run's resume state)."""
        return {name: float(getattr(self, f"_{name}").numpy())
                for name in ("total", "warmup", "anchor_step", "anchor_progress")}

    def restore(self, state: dict) -> None:
        for name, value in state.items():
            getattr(self, f"_{name}").assign(float(value))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.convert_to_tensor(self._warmup)
        start = self.learning_rate * WARMUP_START
        warm = start + (self.learning_rate - start) * step / ops.maximum(warmup, 1.0)
        progress = self._progress(ops.maximum(step, warmup))
        cosine = self.learning_rate * ((1.0 - self.final_fraction) * 0.5 *
                                       (1.0 + ops.cos(math.pi * progress)) + self.final_fraction)
        return ops.where(step < warmup, warm, cosine)

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "total_steps": int(self._total.numpy()),
                "warmup_steps": int(self._warmup.numpy()), "final_fraction": self.final_fraction}


@_register
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `initial` to `target` over `warmup_steps`, then `after(step - warmup)`."""

    def __init__(self, after: keras.optimizers.schedules.LearningRateSchedule | float,
                 warmup_steps: int, initial: float, target: float) -> None:
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        self.after, self.warmup_steps = after, int(warmup_steps)
        self.initial, self.target = float(initial), float(target)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        fraction = ops.minimum(step / max(self.warmup_steps, 1), 1.0)
        warm = self.initial + (self.target - self.initial) * fraction
        later = ops.maximum(step - self.warmup_steps, 0.0)
        after = (self.after(later) if callable(self.after)
                 else ops.convert_to_tensor(self.after, "float32"))
        return ops.where(step < self.warmup_steps, warm, ops.cast(after, "float32"))

    def get_config(self) -> dict:
        after = (keras.optimizers.schedules.serialize(self.after) if callable(self.after)
                 else self.after)
        return {"after": after, "warmup_steps": self.warmup_steps, "initial": self.initial,
                "target": self.target}


@_register
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """1cycle: cosine rise from max/div_factor to `max_learning_rate` over `pct_start` of the
    steps, then cosine fall to (max/div_factor)/final_div_factor at `total_steps`."""

    def __init__(self, max_learning_rate: float, total_steps: int, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> None:
        self.max_learning_rate, self._total = float(max_learning_rate), _length(total_steps)
        self.pct_start, self.div_factor = float(pct_start), float(div_factor)
        self.final_div_factor = float(final_div_factor)

    @property
    def total_steps(self) -> int:
        return int(self._total.numpy())

    def set_length(self, total_steps: int, warmup_steps: int = 0, at_step: int = 0) -> None:
        self._total.assign(float(total_steps))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = self.max_learning_rate / self.div_factor
        end = start / self.final_div_factor
        total = ops.convert_to_tensor(self._total)
        up = ops.maximum(1.0, ops.round(self.pct_start * total))
        down = ops.maximum(1.0, total - up)
        rise = ops.clip(step / up, 0.0, 1.0)
        fall = ops.clip((step - up) / down, 0.0, 1.0)
        rising = (self.max_learning_rate
                  + (start - self.max_learning_rate) * 0.5 * (1.0 + ops.cos(math.pi * rise)))
        falling = end + (self.max_learning_rate - end) * 0.5 * (1.0 + ops.cos(math.pi * fall))
        return ops.where(step < up, rising, falling)

    def get_config(self) -> dict:
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


def warmup_steps(schedule: ScheduleConfig, steps_per_epoch: int, total_steps: int,
                 default_warmup_epochs: float = 0.0) -> int:
    """Warm-up steps of a stage: `warmup_epochs` passes (the schedule's, else the default), at
    least WARMUP_MIN_FRACTION of the stage, and never the whole stage."""
    epochs = (schedule.warmup_epochs if schedule.warmup_epochs is not None
              else default_warmup_epochs)
    if not epochs:
        return 0
    steps = max(int(epochs * steps_per_epoch), round(WARMUP_MIN_FRACTION * total_steps))
    return min(steps, max(total_steps - 1, 0))


def build_schedule(schedule: ScheduleConfig, learning_rate: float, steps_per_epoch: int,
                   epochs: int, default_warmup_epochs: float = 0.0,
                   total_steps: int | None = None):
    """A float (constant, plateau) or a `LearningRateSchedule` for one stage.

    The stage is `total_steps` optimizer steps (default: `epochs` x `steps_per_epoch`);
    `steps_per_epoch` is one pass over the training images, the unit of `warmup_epochs` and
    `step_epochs`. The cosine schedule is keras' CosineDecay curve with its warm-up, ending at
    `final_fraction` x the rate.
    """
    total = max(1, total_steps if total_steps is not None else steps_per_epoch * epochs)
    warmup = warmup_steps(schedule, steps_per_epoch, total, default_warmup_epochs)
    if schedule.name == "plateau":
        return float(learning_rate)
    if schedule.name == "one_cycle":
        return OneCycle(learning_rate, total, schedule.pct_start, schedule.div_factor,
                        schedule.final_div_factor)
    if schedule.name == "cosine":
        return WarmupCosine(learning_rate, total, warmup, schedule.final_fraction)
    if schedule.name == "step":
        after = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=max(1, round(schedule.step_epochs * steps_per_epoch)),
            decay_rate=schedule.factor, staircase=True)
    else:  # constant
        after = float(learning_rate)
    if not warmup:
        return after
    return Warmup(after, warmup, learning_rate * WARMUP_START, learning_rate)


def resize_schedule(learning_rate, schedule: ScheduleConfig, steps_per_epoch: int,
                    default_warmup_epochs: float = 0.0):
    """A function (total_steps, at_step) -> None that gives `learning_rate` (what build_schedule
    returned) a new length at optimizer step `at_step`; schedules that do not depend on the
    length ignore it."""
    def resize(total_steps: int, at_step: int = 0) -> None:
        if isinstance(learning_rate, (WarmupCosine, OneCycle)):
            learning_rate.set_length(total_steps, warmup_steps(
                schedule, steps_per_epoch, total_steps, default_warmup_epochs), at_step)

    return resize


def schedule_callbacks(schedule: ScheduleConfig, monitor: str,
                       restore: dict | None = None) -> list[keras.callbacks.Callback]:
    """Callbacks a schedule needs: ReduceLROnPlateau on `monitor` for `plateau` (its counters
    restored from `restore` when a run resumes), else none."""
    if schedule.name != "plateau":
        return []
    return [ResumablePlateau(monitor=monitor, factor=schedule.factor, patience=schedule.patience,
                             mode=monitor_mode(monitor), min_lr=schedule.min_learning_rate, verbose=0,
                             restore=restore)]
