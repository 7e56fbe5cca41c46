from pathlib import Path

import pytest

from tinyvision.config import load_config, validate_config
from tinyvision.errors import ConfigError


def minimal(tmp_path: Path) -> dict:
    return {"data": {"source": {"format": "folder", "root": str(tmp_path)}}}


def test_defaults(tmp_path):
    cfg = validate_config(minimal(tmp_path))
    assert cfg.model.backbone == "mobilenet_v1" and cfg.model.alpha == 0.25
    assert cfg.model.input_size == (96, 96) and cfg.model.channels == 3
    assert cfg.cache_dir == Path("runs/.cache")


def test_unknown_key_names_section_and_close_match(tmp_path):
    raw = minimal(tmp_path)
    raw["train"] = {"batch_sise": 32}
    with pytest.raises(ConfigError, match=r"unknown key `train.batch_sise`.*Did you mean 'batch_size'"):
        validate_config(raw)


def test_unknown_key_inside_source(tmp_path):
    raw = minimal(tmp_path)
    raw["data"]["source"]["rooot"] = "x"
    with pytest.raises(ConfigError, match=r"data.source.rooot.*Did you mean 'root'"):
        validate_config(raw)


def test_unknown_top_level_section(tmp_path):
    raw = minimal(tmp_path) | {"modle": {}}
    with pytest.raises(ConfigError, match=r"unknown key `modle`.*Did you mean 'model'"):
        validate_config(raw)


@pytest.mark.parametrize("section, key, value, pattern", [
    ("model", "color_mode", "rgba", r"model.color_mode.*'rgb' or 'grayscale'.*received 'rgba'"),
    ("train", "batch_size", "lots", r"train.batch_size.*valid integer.*received 'lots'"),
    ("train", "batch_size", 0, r"train.batch_size.*greater than or equal to 1.*received 0"),
    ("model", "input_size", 16, r"model.input_size.*between 32 and 1024"),
    ("model", "weights", "imagenett", r"model.weights.*'imagenet', 'none' or a path"),
    ("export", "c_array_name", "1model", r"export.c_array_name.*C identifier"),
])
def test_bad_values_name_field_value_and_allowed(tmp_path, section, key, value, pattern):
    raw = minimal(tmp_path) | {section: {key: value}}
    with pytest.raises(ConfigError, match=pattern):
        validate_config(raw)


def test_missing_required_field():
    with pytest.raises(ConfigError, match=r"`data` is required"):
        validate_config({})


def test_fractions_must_leave_training_data(tmp_path):
    raw = minimal(tmp_path)
    raw["data"] |= {"val_fraction": 0.5, "test_fraction": 0.45}
    with pytest.raises(ConfigError, match=r"leaves too little for training"):
        validate_config(raw)


def test_yaml_file_overrides_and_relative_paths(tmp_path):
    (tmp_path / "images").mkdir()
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  source:\n    format: folder\n    root: images\nmodel:\n  alpha: 0.5\n")
    cfg = load_config(path, ["model.alpha=0.75", "model.input_size=[64, 80]", "name=exp-1",
                             "train.fine_tune.unfreeze_from=block_12"])
    assert cfg.data.source.root == (tmp_path / "images").resolve()
    assert cfg.model.alpha == 0.75 and cfg.model.input_size == (64, 80) and cfg.name == "exp-1"
    assert cfg.train.fine_tune.unfreeze_from == "block_12"


def test_override_errors(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"seed: 3\ndata:\n  source:\n    format: folder\n    root: {tmp_path}\n")
    with pytest.raises(ConfigError, match=r"must look like key=value"):
        load_config(path, ["train.batch_size"])
    with pytest.raises(ConfigError, match=r"unknown key `train.epochs`"):
        load_config(path, ["train.epochs=3"])
    with pytest.raises(ConfigError, match=r"`seed` is a value, not a section"):
        load_config(path, ["seed.x=1"])


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must be a mapping of sections"):
        load_config(path)


def test_camera_settings_are_checked_with_the_field_named(tmp_path):
    base = {"data": {"source": {"format": "folder", "root": str(tmp_path)}}}
    cfg = validate_config({**base, "deploy": {"camera": {"format": "yuv422"}}})
    assert (cfg.deploy.camera.byte_order, cfg.deploy.camera.width) == ("yuyv", 320)
    with pytest.raises(ConfigError, match=r"deploy.camera.*byte_order 'rgb' does not apply to "
                                          r"rgb565: use one of big, little"):
        validate_config({**base, "deploy": {"camera": {"format": "rgb565", "byte_order": "rgb"}}})
    with pytest.raises(ConfigError, match=r"even width"):
        validate_config({**base, "deploy": {"camera": {"format": "yuv422", "width": 321}}})
    with pytest.raises(ConfigError, match=r"deploy.camera.format"):
        validate_config({**base, "deploy": {"camera": {"format": "bayer"}}})
