"""training/step_groups.StepGroups: several steps per call of the train function, and still the
same fit as Keras' own one step per call: the same batches in the same order, the same weights,
each epoch ending on its step and the stage on its last step (mid-epoch too)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tinyvision.training.budget import StagePlan, StopAtStep
from tinyvision.training.step_groups import StepGroups, group_size


def _fit(group: int, steps_per_epoch: int, epochs: int, last_step: int):
    """A small model fitted on a repeated dataset of distinct batches; returns its weights, the
    optimizer's steps and the epochs' losses."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 80)]
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.05), "categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=group)
    model.optimizer.build(model.trainable_variables)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()  # 20 distinct batches
    plan = StagePlan("fine_tune", steps_per_epoch, steps_per_epoch, last_step)
    callbacks = [StopAtStep(plan)]
    if group > 1:
        callbacks.insert(0, StepGroups(model, group, steps_per_epoch, lambda: plan.total_steps))
    history = model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
                        shuffle=False, callbacks=callbacks)
    return (model.get_weights(), int(model.optimizer.iterations.numpy()),
            history.history["loss"])


@pytest.mark.parametrize("steps_per_epoch,epochs,last_step", [
    (7, 3, 21),  # 7 steps an epoch in groups of 3: 3 + 3 + 1
    (7, 3, 17),  # the stage ends mid-epoch, mid-group
    (2, 4, 8),   # epochs shorter than a group
])
def test_groups_of_steps_fit_as_one_step_per_call(steps_per_epoch, epochs, last_step):
    weights, steps, losses = _fit(1, steps_per_epoch, epochs, last_step)
    grouped, grouped_steps, grouped_losses = _fit(3, steps_per_epoch, epochs, last_step)
    assert steps == grouped_steps == last_step
    np.testing.assert_allclose(grouped_losses, losses, rtol=1e-6)
    for ours, keras_own in zip(grouped, weights):
        np.testing.assert_allclose(ours, keras_own, rtol=1e-6, atol=1e-7)


def test_the_group_size():
    assert group_size(79, jit_compile=False) == 8
    assert group_size(3, jit_compile=False) == 3
    assert group_size(79, jit_compile=True) == 1
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert group_size(79, jit_compile=False) == 1
