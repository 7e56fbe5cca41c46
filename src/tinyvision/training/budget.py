"""How long each stage trains, in optimizer steps: `train.budget` (epochs, steps or minutes) or the
stages' own epochs, with at least `train.min_steps` steps a stage, and the callbacks that end a
stage on its plan.

Schedules are defined in steps, so a small set that needs many passes gets them, and the
warm-up and cosine always run to their end. An "epoch" of the log is one validation round: one pass
over the training images, or several on a small set, so that a stage validates at most
MAX_EPOCHS_PER_STAGE times. A minutes budget times the first steps and the validation rounds
(`BudgetClock`) and sizes the schedule so that its last step ends on time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras

from tinyvision.config import RunConfig

STAGES = ("head", "fine_tune")
MAX_EPOCHS_PER_STAGE = 100  # validation rounds; more passes than this are grouped into epochs
MINUTES_EPOCH_STEPS = 20  # a minutes budget on a small set: at least this many steps an epoch
UNSIZED = 10**9  # a minutes budget's steps until the clock has timed the first ones
PROBE_SKIP = 2  # the first steps of a stage include tracing: not timed
PROBE_STEPS = 8  # steps timed before a minutes budget sizes the schedule
REFIT_UNTIL = 0.97  # the schedule's length is refined at each epoch until this share is done
# Until a validation round has been timed (the first also traces the evaluation functions, so it
# is not timed), a round is guessed at this many training steps per validation batch: inference
# is about a third of a training step, and detection scores its box on val once more.
VALIDATION_STEP_SHARE = 0.5
OVERHEAD_ROUNDS = 5  # the median of the last rounds' time outside steps
LATE_GRACE = 0.05  # a stage still running this share past its deadline is stopped


@dataclass
class StagePlan:
    """One stage's length. `seconds`: a minutes budget, the time from the start of training by
    which the stage must end (its `total_steps` is provisional until `BudgetClock` measures)."""

    stage: str
    pass_steps: int  # steps of one pass over the training images
    steps_per_epoch: int  # steps of one epoch (validation round)
    total_steps: int
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return max(1, math.ceil(self.total_steps / self.steps_per_epoch))

    @property
    def sized(self) -> bool:
        """False while a minutes budget's clock has not yet timed the first steps."""
        return self.total_steps < UNSIZED

    def describe(self) -> str:
        if self.seconds is not None:
            length = f"until {self.seconds / 60:g} min of training"
        else:
            passes = self.total_steps / self.pass_steps
            length = f"{self.total_steps} steps ({passes:.3g} passes over the training images"
            if self.steps_per_epoch != self.pass_steps:
                length += f", validated every {self.steps_per_epoch} steps"
            length += ")"
        return f"{self.stage}: {length}" + "".join(f"; {n}" for n in self.notes)


def pass_steps(n_train: int, cfg: RunConfig) -> int:
    """Optimizer steps of one pass over `n_train` images (`train.max_steps_per_epoch` caps it)."""
    steps = max(1, math.ceil(n_train / cfg.train.batch_size))
    return min(steps, cfg.train.max_steps_per_epoch or steps)


def plan_stages(cfg: RunConfig, n_train: int) -> list[StagePlan]:
    """The stages that train (epochs > 0), each with its length in steps.

    Without a budget a stage trains its `epochs`; a budget of epochs or steps is shared by the
    stages in proportion to their `epochs`; a minutes budget lets the head stage run its epochs
    and gives the last stage the time left. Stage lengths given in epochs are raised to
    `train.min_steps`; a budget in steps or minutes is exact.
    """
    train = cfg.train
    stages = [s for s in STAGES if getattr(train, s).epochs > 0]
    one_pass = pass_steps(n_train, cfg)
    weights = {s: getattr(train, s).epochs for s in stages}
    total_weight = sum(weights.values()) or 1
    budget = train.budget
    plans = []
    for number, stage in enumerate(stages):
        share = weights[stage] / total_weight
        notes: list[str] = []
        seconds = None
        if budget is None or budget.kind == "minutes":
            steps = weights[stage] * one_pass
            if budget is not None and number == len(stages) - 1:
                seconds, steps = budget.minutes * 60, UNSIZED
        elif budget.kind == "epochs":
            steps = max(1, round(budget.epochs * share)) * one_pass
        else:
            steps = max(1, round(budget.steps * share))
        if train.min_steps and seconds is None and (budget is None or budget.kind != "steps") \
                and steps < train.min_steps:
            notes.append(f"raised from {steps} to train.min_steps={train.min_steps} for this "
                         "small set")
            steps = train.min_steps
        if seconds is not None:
            per_epoch = max(one_pass, min(MINUTES_EPOCH_STEPS, train.max_steps_per_epoch or
                                          MINUTES_EPOCH_STEPS))
        else:
            per_epoch = max(one_pass, math.ceil(steps / MAX_EPOCHS_PER_STAGE))
        plans.append(StagePlan(stage, one_pass, per_epoch, steps, seconds, notes))
    return plans


class StopAtStep(keras.callbacks.Callback):
    """End the stage after its planned number of optimizer steps (mid-epoch when the last epoch is
    a partial one; Keras still validates and closes that epoch)."""

    def __init__(self, plan: StagePlan) -> None:
        super().__init__()
        self.plan = plan

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if _iterations(self.model) >= self.plan.total_steps:
            self.model.stop_training = True


class BudgetClock(keras.callbacks.Callback):
    """Fit a stage with a minutes budget into its time.

    Times the steps after the first (traced) ones and each epoch's time outside its steps
    (validation, checkpoints), then sets the plan's total steps, and the schedule's length through
    `resize(total_steps, at_step)`, so that the last step ends at `deadline` (a
    `time.perf_counter()` value). The fit is refined at every epoch from the last epoch's step time,
    so a machine that speeds up or slows down still ends on time; the schedule stays continuous
    (it is stretched from the current step). Stops the stage if it runs late anyway (`late`).

    The time outside steps is the median of the last timed rounds, never the first (which also
    traces the validation functions: counting it once made the estimate jump, e.g. 131, 12,
    110 epochs); before one is timed it is guessed from `val_steps`, the validation batches.
    """

    def __init__(self, plan: StagePlan, deadline: float, resize, val_steps: int = 0) -> None:
        super().__init__()
        self.plan, self.deadline, self.resize = plan, deadline, resize
        self.timed_steps, self.step_seconds, self.done = 0, 0.0, 0
        self.val_steps = val_steps
        self.overheads: list[float] = []  # time outside steps of each round after the first
        self._rounds = 0
        self.late = False
        self._batch_start = 0.0
        self._epoch_start: float | None = None
        self._epoch_batch_seconds, self._epoch_batches = 0.0, 0
        self._epoch_timed_seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self._epoch_start is not None:  # the last epoch, begin to begin, minus its steps
            self._rounds += 1
            if self._rounds > 1:
                self.overheads.append(max(0.0, now - self._epoch_start -
                                          self._epoch_batch_seconds))
            if self.timed_steps and self.done < REFIT_UNTIL * self.plan.total_steps:
                recent = (self._epoch_timed_seconds / self._epoch_batches
                          if self._epoch_batches >= PROBE_STEPS else None)
                self._fit(now, recent)
        self._epoch_start, self._epoch_batch_seconds, self._epoch_batches = now, 0.0, 0
        self._epoch_timed_seconds = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # a "batch" here is one call of the train function: one step, or a group of steps
        # (training/step_groups.py)
        now = time.perf_counter()
        seconds = now - self._batch_start
        before, self.done = self.done, _iterations(self.model)
        self._epoch_batch_seconds += seconds
        if before >= PROBE_SKIP:  # the group holds no traced step
            probing = self.timed_steps < PROBE_STEPS
            self.timed_steps += self.done - before
            self.step_seconds += seconds
            self._epoch_timed_seconds += seconds  # the mean step time leaves out traced steps
            self._epoch_batches += self.done - before
            if probing and self.timed_steps >= PROBE_STEPS:
                self._fit(now)
        if now - self.deadline > LATE_GRACE * (self.plan.seconds or 0.0):
            self.late = True
            self.model.stop_training = True

    def _fit(self, now: float, step_seconds: float | None = None) -> None:
        """Total steps such that the remaining steps and validation rounds end at the deadline;
        `step_seconds`: the last epoch's mean step time (default: every timed step's)."""
        per_step = step_seconds or self.step_seconds / self.timed_steps
        per_step += self.round_overhead(per_step) / self.plan.steps_per_epoch
        left = math.floor((self.deadline - now) / per_step)
        total = self.done + max(1, left)
        if total != self.plan.total_steps:
            self.plan.total_steps = total
            self.resize(total, self.done)


    def round_overhead(self, per_step: float) -> float:
        """Seconds a validation round adds to its epoch's steps: measured, or guessed."""
        if self.overheads:
            return float(sorted(self.overheads[-OVERHEAD_ROUNDS:])[len(
                self.overheads[-OVERHEAD_ROUNDS:]) // 2])
        return self.val_steps * per_step * VALIDATION_STEP_SHARE


def _iterations(model: keras.Model) -> int:
    """Optimizer steps taken (a plain or a tf.distribute mirrored variable)."""
    return int(model.optimizer.iterations.value.numpy())
