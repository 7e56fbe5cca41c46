"""Mixed precision (`train.precision`): the compute dtype training runs in.

`mixed` is Keras' mixed precision: layers compute in float16 on a GPU (`mixed_float16`, with the
loss scaling Keras adds when it compiles such a model) or in bfloat16 on a CPU (`mixed_bfloat16`,
the AVX512-BF16 / AMX path), while the weights stay float32. The output layers compute in float32
(models.heads.OUTPUT_DTYPE) and the fused BatchNorm normalises in float32
(training/fused_batchnorm.py).

Only training changes: the trained weights are copied into the same model built in float32, and
that model is what the run keeps, evaluates, saves and exports. On this project's 2-core CPU a
bfloat16 step is slower than a float32 one (docs/training.md), which is why float32 is the default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

FLOAT32 = "float32"


def policy_name(precision: str) -> str:
    """The Keras dtype policy for `train.precision` on this machine."""
    if precision != "mixed":
        return FLOAT32
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers built inside the block use the dtype policy `name`; the previous global policy is
    restored on leaving."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_in(name: str, build: Callable[[], keras.Model]) -> keras.Model:
    """`build()` under the dtype policy `name`."""
    with dtype_policy(name):
        return build()


def float32_copy(model: keras.Model, build: Callable[[], keras.Model]) -> keras.Model:
    """`model` when it computes in float32, else `build()` (the same architecture) in float32 with
    `model`'s weights: the float32 model a run keeps after mixed-precision training."""
    if model.dtype_policy.name == FLOAT32:
        return model
    copy = build_in(FLOAT32, build)
    copy.set_weights(model.get_weights())
    return copy
