"""The fast head stage (features computed once) must train the head as training through the frozen
backbone does: same weights and metrics within float noise."""

import numpy as np
import pytest

from helpers import make_class_folders, tiny_config
from tinyvision.config import validate_config

pytestmark = pytest.mark.slow


def train_head(tmp_path, root, weights, cache_features: bool):
    from tinyvision.run.stages import prepare_data, train_stage
    from tinyvision.run.run import make_run_folder

    raw = tiny_config(root, tmp_path / "runs", name=f"fast-{cache_features}")
    raw["model"].update(dropout=0.0, weights=str(weights))
    raw["train"].update(max_steps_per_epoch=None, head={"epochs": 3, "learning_rate": 0.05,
                                                        "cache_features": cache_features},
                        fine_tune={"epochs": 0})
    cfg, run = make_run_folder(validate_config(raw))
    result = train_stage(cfg, run, prepare_data(cfg, run, progress=False))
    return result


def test_cached_features_match_training_through_frozen_backbone(tmp_path, backbone_weights_file):
    root = make_class_folders(tmp_path / "images", per_class=12)
    fast = train_head(tmp_path, root, backbone_weights_file, cache_features=True)
    slow = train_head(tmp_path, root, backbone_weights_file, cache_features=False)
    losses = [r["loss"] for r in fast.history]
    assert losses[-1] < losses[0] - 0.05, f"the head did not learn: {losses}"
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([r[key] for r in fast.history], [r[key] for r in slow.history],
                                   rtol=1e-3, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(fast.model.get_layer("head_logits").get_weights()[0],
                               slow.model.get_layer("head_logits").get_weights()[0], atol=1e-4)
    # the backbone did not move in either
    np.testing.assert_array_equal(fast.model.get_layer("conv1").get_weights()[0],
                                  slow.model.get_layer("conv1").get_weights()[0])


def test_detection_model_splits_where_the_head_begins():
    import keras

    from tinyvision.config import ModelConfig
    from tinyvision.models.build import build_model
    from tinyvision.training.features import split_at_features

    model = build_model(ModelConfig(weights="none", input_size=32), 3, "detection")
    extractor, head = split_at_features(model)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    direct = model(images, training=False)
    split = head(extractor(images, training=False), training=False)
    for a, b in zip(keras.tree.flatten(direct), keras.tree.flatten(split)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_a_detection_training_model_splits_with_its_cells_reachable_from_the_features():
    """The head stage on cached features fits the training model's head: its extra cells output
    must come from the features (a head split from the deployed model first cannot give it)."""
    import keras

    from tinyvision.config import ModelConfig
    from tinyvision.models.build import build_model
    from tinyvision.models.heads import training_model
    from tinyvision.training.features import split_at_features

    fitted, grid = training_model(build_model(ModelConfig(weights="none", input_size=32), 2,
                                              "detection"))
    extractor, head = split_at_features(fitted)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    direct = fitted(images, training=False)
    split = head(extractor(images, training=False), training=False)
    assert len(split) == 3 and tuple(split[2].shape) == (2, grid[0] * grid[1], 5)
    for a, b in zip(keras.tree.flatten(direct), keras.tree.flatten(split)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
