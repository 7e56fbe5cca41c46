"""`train.precision: mixed` trains in a 16-bit compute dtype (bfloat16 on a CPU, float16 with loss
scaling on a GPU) and the run keeps, evaluates and exports a float32 model with the trained
weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import make_class_folders, tiny_config
from tinyvision.training.precision import dtype_policy, policy_name

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


def test_policy_names_and_the_policy_is_restored():
    assert policy_name("float32") == "float32"
    assert policy_name("mixed") == ("mixed_float16" if HAS_GPU else "mixed_bfloat16")
    with dtype_policy("mixed_bfloat16"):
        assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError), dtype_policy("mixed_bfloat16"):
        raise RuntimeError("build failed")
    assert keras.config.dtype_policy().name == "float32"


def test_an_unknown_precision_is_a_config_error(tmp_path):
    from tinyvision.config import validate_config
    from tinyvision.errors import ConfigError

    raw = tiny_config(tmp_path, tmp_path / "runs")
    raw["train"]["precision"] = "half"
    with pytest.raises(ConfigError, match=r"train.precision.*'float32'.*'mixed'.*'half'"):
        validate_config(raw)


def _train_mixed(tmp_path, monkeypatch):
    """A tiny run with `precision: mixed`; returns (the run, the model that trained)."""
    from tinyvision.run.run import train
    from tinyvision.training import trainer

    trained = []
    fuse = trainer.use_fused_batchnorm
    monkeypatch.setattr(trainer, "use_fused_batchnorm",
                        lambda model: (trained.append(model), fuse(model))[1])
    root = make_class_folders(tmp_path / "images", per_class=10)
    raw = tiny_config(root, tmp_path / "runs", train={"precision": "mixed", "keep": "last"})
    return train(raw), trained[0]


@pytest.mark.skipif(HAS_GPU, reason="the CPU's bfloat16 path; a GPU trains float16")
def test_mixed_precision_trains_bfloat16_and_keeps_the_trained_weights_in_float32(
        tmp_path, monkeypatch):
    run, trained = _train_mixed(tmp_path, monkeypatch)
    assert trained.dtype_policy.name == "mixed_bfloat16"
    assert trained.get_layer("conv1").compute_dtype == "bfloat16"
    assert trained.outputs[0].dtype == "float32"  # the output layer computes in float32
    kept = run.model
    assert {layer.dtype_policy.name for layer in kept.layers} == {"float32"}
    for a, b in zip(trained.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert run.summary.int8["accuracy"] is not None
    assert run.summary.float_metrics["accuracy"] is not None


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU: float16 with loss scaling")
def test_mixed_precision_on_a_gpu_trains_float16_with_loss_scaling(tmp_path, monkeypatch):
    run, trained = _train_mixed(tmp_path, monkeypatch)
    assert trained.dtype_policy.name == "mixed_float16"
    assert isinstance(trained.optimizer, keras.optimizers.LossScaleOptimizer)
    assert {layer.dtype_policy.name for layer in run.model.layers} == {"float32"}
    assert all(np.isfinite(w).all() for w in run.model.get_weights())
    assert run.summary.int8["accuracy"] is not None
