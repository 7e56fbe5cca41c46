"""A user's Keras model file cut at a layer and used as the backbone: Keras 3 `.keras`, Keras 2
style `.h5` that plain Keras 3 refuses (DepthwiseConv2D `groups`), nested models, safe mode."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest

from tinyvision.config import ModelConfig, validate_config
from tinyvision.errors import ConfigError, ModelError
from tinyvision.models.build import build_model, resolve_unfreeze_index

IDENTITY = {"input_scale": 1.0, "input_offset": 0.0}  # compare features on the same input values


def _user_layers(x):
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu")(x)
    return keras.layers.Conv2D(16, 1, name="features")(x)


def _user_model(input_shape=(None, None, 3)) -> keras.Model:
    """A small trained-looking network: random weights and BatchNorm statistics, a classifier."""
    inputs = keras.Input(input_shape, name="photo")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(_user_layers(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="classifier")(x), name="user_net")
    _randomise(model)
    return model


def _randomise(model: keras.Model) -> None:
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in
                       model.get_weights()])


def _keras2_h5(model: keras.Model, path) -> None:
    """Save `model` as .h5, then make its config look like Keras 2 (tf.keras) wrote it."""
    model.save(path)

    def patch(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DepthwiseConv2D":
                node["config"]["groups"] = 1
            if node.get("class_name") == "BatchNormalization":
                node["config"]["axis"] = [3]
            for value in node.values():
                patch(value)
        elif isinstance(node, list):
            for value in node:
                patch(value)

    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        patch(config)
        f.attrs["model_config"] = json.dumps(config)


def _features(model: keras.Model, images: np.ndarray, layer: str = "features") -> np.ndarray:
    probe = keras.Model(model.input, model.get_layer(layer).output)
    return keras.ops.convert_to_numpy(probe(images.astype(np.float32)))


def test_keras2_h5_that_plain_keras3_refuses_loads_cut_and_grayscale(tmp_path):
    source = _user_model()
    path = tmp_path / "teachable.h5"
    _keras2_h5(source, path)
    with pytest.raises(Exception, match="groups"):
        keras.models.load_model(path)
    cfg = ModelConfig(weights=str(path), cut_at="features", input_size=40,
                      color_mode="grayscale", **IDENTITY)
    model = build_model(cfg, 3, "multiclass")
    assert type(model.get_layer("dw")) is keras.layers.DepthwiseConv2D  # a standard Keras layer
    assert "classifier" not in [layer.name for layer in model.layers]  # cut at `features`
    gray = np.random.default_rng(1).integers(0, 256, (2, 40, 40, 1)).astype(np.float32)
    # The grayscale model on g equals the RGB file model on (g, g, g): stem kernel summed.
    np.testing.assert_allclose(_features(model, gray),
                               _features(source, np.repeat(gray, 3, axis=-1)),
                               rtol=1e-4, atol=1e-3)
    assert resolve_unfreeze_index(model, cfg.backbone, "dw") == [
        layer.name for layer in model.layers].index("dw")
    assert 0 < resolve_unfreeze_index(model, cfg.backbone, "auto") < len(model.layers)


def test_nested_sequential_h5_is_inlined(tmp_path):
    """Teachable-Machine style: a Sequential of a Sequential backbone and a classifier."""
    backbone = keras.Sequential([keras.Input((32, 32, 3))], name="backbone")
    for layer in _sequential_layers():
        backbone.add(layer)
    top = keras.Sequential([keras.layers.GlobalAveragePooling2D(name="pool"),
                            keras.layers.Dense(2, name="classifier")], name="top")
    source = keras.Sequential([keras.Input((32, 32, 3)), backbone, top], name="outer")
    _randomise(source)
    path = tmp_path / "nested.h5"
    _keras2_h5(source, path)
    model = build_model(ModelConfig(weights=str(path), cut_at="dw_relu", input_size=32,
                                    **IDENTITY), 2, "multilabel")
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(backbone(images))
    np.testing.assert_allclose(_features(model, images, "dw_relu"), expected, rtol=1e-4,
                               atol=1e-3)


def _sequential_layers():
    return [keras.layers.Conv2D(8, 3, padding="same", name="stem"),
            keras.layers.BatchNormalization(name="stem_bn"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.ReLU(6.0, name="dw_relu")]


def test_keras_file_cut_at_layer_keeps_weights(tmp_path):
    source = _user_model((32, 32, 3))
    path = tmp_path / "user.keras"
    source.save(path)
    model = build_model(ModelConfig(weights=str(path), cut_at="dw_relu", input_size=32,
                                    **IDENTITY), 2, "detection")
    assert model.output_names == ["head_class_output", "head_box_output"]
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(_features(model, images, "dw_relu"),
                               _features(source, images, "dw_relu"), rtol=1e-5, atol=1e-4)
    with pytest.raises(ModelError, match=r"cut_at='dw_rel' is not a layer of user_net. Did you "
                                         r"mean 'dw_relu'"):
        build_model(ModelConfig(weights=str(path), cut_at="dw_rel", input_size=32), 2,
                    "multiclass")
    with pytest.raises(ModelError, match=r"cut_at='pool' outputs shape \(None, 16\); a backbone "
                                         r"must output a feature map"):
        build_model(ModelConfig(weights=str(path), cut_at="pool", input_size=32), 2, "multiclass")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layers_are_refused_unless_allowed(tmp_path, suffix):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double_it")(inputs)
    x = keras.layers.Conv2D(4, 3, name="features")(x)
    path = tmp_path / f"lambda{suffix}"
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)).save(path)
    cfg = ModelConfig(weights=str(path), cut_at="features", input_size=32)
    with pytest.raises(ModelError, match=r"Lambda layer\(s\) \['double_it'\].*set "
                                         r"model.allow_unsafe_model_code: true"):
        build_model(cfg, 2, "multiclass")
    trusted = cfg.model_copy(update={"allow_unsafe_model_code": True})
    assert "double_it" in [layer.name for layer in build_model(trusted, 2, "multiclass").layers]


def test_model_file_config_errors(tmp_path):
    base = {"data": {"source": {"format": "folder", "root": "x"}}}
    with pytest.raises(ConfigError, match=r"cut_at='conv' cuts a Keras model file, so weights "
                                          r"must be its path"):
        validate_config({**base, "model": {"cut_at": "conv"}})
    with pytest.raises(ConfigError, match="is a whole model; set cut_at"):
        validate_config({**base, "model": {"weights": "net.keras"}})
    with pytest.raises(ConfigError, match="allow_unsafe_model_code applies to a model file"):
        validate_config({**base, "model": {"allow_unsafe_model_code": True}})
    weights_only = tmp_path / "weights_only.h5"
    with h5py.File(weights_only, "w") as f:
        f.create_group("model_weights")
    with pytest.raises(ModelError, match="holds weights only, no architecture"):
        build_model(ModelConfig(weights=str(weights_only), cut_at="x", input_size=32), 2,
                    "multiclass")
    with pytest.raises(ModelError, match="no such file"):
        build_model(ModelConfig(weights=str(tmp_path / "missing.h5"), cut_at="x",
                                input_size=32), 2, "multiclass")


def test_layers_listing_shows_dead_feature_maps_and_suggests_a_cut(tmp_path):
    """`tinyvision layers FILE IMAGES`: output shapes, and on the user's images the share of
    zeros per feature map; a block whose ReLU never fires is dead, and the suggested cut is the
    deepest live map before it."""
    from typer.testing import CliRunner

    from helpers import make_class_folders
    from tinyvision.cli import app
    from tinyvision.models.layers import ALIVE_SHARE, describe_layers, suggest_cut

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="alive_conv")(inputs)
    dead = keras.layers.Conv2D(8, 3, padding="same", name="dead_conv")(x)
    x = keras.layers.ReLU(name="dead_relu")(dead)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    kernel, bias = model.get_layer("dead_conv").get_weights()  # trained weights, not a config:
    model.get_layer("dead_conv").set_weights([kernel, bias - 1000.0])  # the listing must load them
    path = tmp_path / "other_task.h5"
    model.save(path)
    images = make_class_folders(tmp_path / "images", per_class=3)

    facts = {f.name: f for f in describe_layers(path, sorted(images.rglob("*.png")))}
    assert facts["dead_relu"].zero_share == 1.0 and facts["dead_relu"].dead
    assert facts["alive_conv"].zero_share <= ALIVE_SHARE and not facts["alive_conv"].dead
    assert facts["dead_conv"].shape == (32, 32, 8) and facts["out"].shape == (2,)
    assert suggest_cut(list(facts.values())).name == "alive_conv"

    result = CliRunner().invoke(app, ["layers", str(path), str(images)])
    assert result.exit_code == 0, result.output
    assert "alive_conv" in result.output and "100%" in result.output
    assert "suggested: model.cut_at: alive_conv" in result.output
    assert "pool" not in result.output  # only feature maps, unless --all
    listing = CliRunner().invoke(app, ["layers", str(path), "--all"])
    assert listing.exit_code == 0 and "pool" in listing.output and "Give some of your images" \
        in listing.output
