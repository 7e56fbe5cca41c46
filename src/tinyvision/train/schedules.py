"""Learning-rate schedules of a stage (`train.<stage>.schedule`), counted in optimizer steps.

constant / step / cosine take a linear warm-up from 1% of the rate; one_cycle rises and falls on
its own (Smith's 1cycle, cosine annealing as in PyTorch's OneCycleLR, learning rate only);
plateau is a constant rate that `keras.callbacks.ReduceLROnPlateau` lowers, so it needs no
schedule object and takes no warm-up.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tinyvision.config import SCHEDULES, ScheduleConfig

_register = keras.saving.register_keras_serializable(package="tinyvision")
WARMUP_START = 0.01  # warm-up starts at this fraction of the rate (as the cosine schedule did)


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
        self.max_learning_rate, self.total_steps = float(max_learning_rate), int(total_steps)
        self.pct_start, self.div_factor = float(pct_start), float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = self.max_learning_rate / self.div_factor
        end = start / self.final_div_factor
        up = max(1.0, round(self.pct_start * self.total_steps))
        down = max(1.0, self.total_steps - up)
        rise = ops.clip(step / up, 0.0, 1.0)
        fall = ops.clip((step - up) / down, 0.0, 1.0)
        rising = self.max_learning_rate + (start - self.max_learning_rate) * 0.5 * (1.0 + ops.cos(math.pi * rise))
        falling = end + (self.max_learning_rate - end) * 0.5 * (1.0 + ops.cos(math.pi * fall))
        return ops.where(step < up, rising, falling)

    def get_config(self) -> dict:
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


def build_schedule(schedule: ScheduleConfig, learning_rate: float, steps_per_epoch: int,
                   epochs: int, default_warmup_epochs: float = 0.0):
    """A float (constant, plateau) or a `LearningRateSchedule` for one stage of `epochs` epochs.

    The cosine schedule is `keras.optimizers.schedules.CosineDecay` with its built-in warm-up,
    ending at `final_fraction` x the rate (the trainer's behaviour before schedules were
    configurable).
    """
    if schedule.name not in SCHEDULES:
        raise ValueError(f"schedule={schedule.name!r}; expected one of {sorted(SCHEDULES)}")
    total = max(1, steps_per_epoch * epochs)
    warmup_epochs = (schedule.warmup_epochs if schedule.warmup_epochs is not None
                     else default_warmup_epochs)
    warmup = min(int(warmup_epochs * steps_per_epoch), max(total - 1, 0))
    if schedule.name == "plateau":
        return float(learning_rate)
    if schedule.name == "one_cycle":
        return OneCycle(learning_rate, total, schedule.pct_start, schedule.div_factor,
                        schedule.final_div_factor)
    if schedule.name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate * WARMUP_START if warmup else learning_rate,
            decay_steps=max(total - warmup, 1), alpha=schedule.final_fraction,
            warmup_target=learning_rate if warmup else None, warmup_steps=warmup)
    if schedule.name == "step":
        after = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=max(1, round(schedule.step_epochs * steps_per_epoch)),
            decay_rate=schedule.factor, staircase=True)
    else:  # constant
        after = float(learning_rate)
    if not warmup:
        return after
    return Warmup(after, warmup, learning_rate * WARMUP_START, learning_rate)


def schedule_callbacks(schedule: ScheduleConfig, monitor: str,
                       restore: dict | None = None) -> list[keras.callbacks.Callback]:
    """Callbacks a schedule needs: ReduceLROnPlateau on `monitor` for `plateau` (its counters
    restored from `restore` when a run resumes), else none."""
    from tinyvision.train.callbacks import ResumablePlateau

    if schedule.name != "plateau":
        return []
    mode = "min" if monitor.endswith("loss") else "max"
    return [ResumablePlateau(monitor=monitor, factor=schedule.factor, patience=schedule.patience,
                             mode=mode, min_lr=schedule.min_learning_rate, verbose=0,
                             restore=restore)]
