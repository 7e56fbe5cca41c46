"""Several training steps per call of Keras' train function, each epoch still ending on its step.

Keras 3's `fit` spends about 2.6 ms of Python per call of its train function (the loop, the
callbacks, reading the step's outputs out of a tf.experimental.Optional), 6 % of a 45 ms step of
MobileNet V1 0.25 at 96x96. Its own `steps_per_execution` runs several steps per call, but it
cannot end a group early: with 79 steps an epoch and groups of 8, the last group of every epoch
reads one batch of the next. `StepGroups` replaces the train function with one that runs `n`
steps in a single traced loop, `n` chosen before each call so that no group crosses the epoch's
end or the stage's last step (StopAtStep, a minutes budget's clock): every epoch reads exactly its
batches, in order, and the weights are those of one step per call (tests/training/
test_step_groups.py). Measured side by side (benchmarks/bench_train_step.py): ~5 % more images/s.

Used for a model trained on one device (no tf.distribute strategy: a strategy's step runs through
`strategy.run`, which Keras' own function does) without XLA.
"""

from __future__ import annotations

import keras
import tensorflow as tf

STEPS_PER_CALL = 8  # more gains nothing measurable; the budget clock and progress see groups


def group_size(steps_per_epoch: int, jit_compile: bool) -> int:
    """Steps per call of the train function for a fit of `steps_per_epoch` steps an epoch: 1
    (Keras' own function) under a distribution strategy or with XLA."""
    if jit_compile or tf.distribute.has_strategy():
        return 1
    return max(1, min(STEPS_PER_CALL, steps_per_epoch))


class StepGroups(keras.callbacks.Callback):
    """Runs up to `size` training steps of `model` per call of its train function (compile the
    model with `steps_per_execution=size`, so that Keras' `fit` calls it once per group), never
    past the epoch's `steps_per_epoch`-th step nor the `last_step()`-th step of the optimizer.

    Installs itself as `model.train_function` when made; the callback keeps count of the epoch's
    steps, so pass it to `fit` with the other callbacks.
    """

    def __init__(self, model: keras.Model, size: int, steps_per_epoch: int, last_step) -> None:
        super().__init__()
        self.size, self.steps_per_epoch, self.last_step = size, steps_per_epoch, last_step
        self.in_epoch, self.done = 0, 0
        self._logs: dict = {}

        # Without AutoGraph, as Keras traces its own train function (converting Keras' code and
        # the model's doubled the tracing time); the step appears once in the loop's graph (two
        # copies of it doubled the first call's graph optimisation).
        step = tf.function(model.train_step, autograph=False)

        def steps(iterator, count):
            # the loop's outputs need values before it: zeros of the step's outputs
            outputs = step.get_concrete_function(iterator.element_spec).structured_outputs
            zeros = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), outputs)
            _, logs = tf.while_loop(lambda done, _: done < count,
                                    lambda done, _: (done + 1, step(next(iterator))),
                                    (tf.constant(0), zeros))
            return logs

        self._steps = tf.function(steps, autograph=False)
        model.train_function = self

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.done = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.in_epoch = 0

    def on_train_end(self, logs: dict | None = None) -> None:
        self.model.train_function = None  # a later fit or compile makes Keras' own again

    def __call__(self, iterator) -> dict:
        count = min(self.size, self.steps_per_epoch - self.in_epoch, self.last_step() - self.done)
        if count < 1:  # the stage has ended (StopAtStep stops `fit` before this happens)
            self.model.stop_training = True
            return self._logs
        self._logs = self._steps(iterator, tf.constant(count))
        self.in_epoch += count
        self.done += count
        return self._logs
