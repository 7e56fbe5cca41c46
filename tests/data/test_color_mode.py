"""model.color_mode: auto picks grayscale for gray images (also saved as RGB files) and rgb for
colour ones, says why, and writes the choice into the run's config."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import make_class_folders, tiny_config
from tinyvision.config import validate_config
from tinyvision.data.color import is_gray, resolve_color_mode
from tinyvision.data.sources import build_manifest


def _gray_folders(root, per_class: int = 8):
    """Gray textures saved as RGB JPEGs (equal channels, JPEG noise) and as L-mode PNGs."""
    rng = np.random.default_rng(0)
    for label, level in (("dark", 70), ("light", 180)):
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 25, (30, 40)), 0, 255).astype(np.uint8)
            (root / label).mkdir(parents=True, exist_ok=True)
            if i % 2:
                Image.fromarray(pixels, "L").save(root / label / f"{label}_{i}.png")
            else:
                Image.fromarray(pixels, "L").convert("RGB").save(root / label / f"{label}_{i}.jpg",
                                                                 quality=85)
    return root


def _manifest(root):
    cfg = validate_config({"data": {"source": {"format": "folder", "root": str(root)}}})
    return build_manifest(cfg.data, 0, "auto")


def test_is_gray_tolerates_jpeg_noise_but_not_colour():
    gray = np.repeat(np.random.default_rng(0).integers(0, 256, (16, 16, 1)), 3, axis=2)
    assert is_gray(gray.astype(np.uint8))
    noisy = gray + np.random.default_rng(1).integers(-3, 4, gray.shape)
    assert is_gray(np.clip(noisy, 0, 255).astype(np.uint8))
    tinted = gray.copy()
    tinted[..., 0] = np.clip(tinted[..., 0] + 40, 0, 255)
    assert not is_gray(tinted.astype(np.uint8))


def test_gray_folders_resolve_to_grayscale(tmp_path):
    mode, reason = resolve_color_mode(_manifest(_gray_folders(tmp_path / "gray")))
    assert mode == "grayscale" and "sampled training images are gray" in reason


def test_colour_folders_resolve_to_rgb(tmp_path):
    mode, reason = resolve_color_mode(_manifest(make_class_folders(tmp_path / "colour")))
    assert mode == "rgb" and "have colour" in reason


def test_one_colour_image_among_gray_ones_keeps_rgb(tmp_path):
    root = tmp_path / "mixed"
    _gray_folders(root / "train")
    _gray_folders(root / "val", per_class=2)
    assert resolve_color_mode(_manifest(root))[0] == "grayscale"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(root / "train" / "dark" / "red.png")
    mode, reason = resolve_color_mode(_manifest(root))  # every training image is looked at
    assert mode == "rgb" and reason.startswith("1 of ") and reason.endswith("have colour")


def test_colour_augmentation_keeps_rgb(tmp_path):
    mode, reason = resolve_color_mode(_manifest(_gray_folders(tmp_path / "gray")),
                                      rgb_only_ops=["hue"])
    assert mode == "rgb" and "hue" in reason


@pytest.mark.slow
def test_a_gray_run_trains_a_one_channel_model(tmp_path):
    import yaml

    from tinyvision.run.run import full_run

    root = _gray_folders(tmp_path / "gray", per_class=10)
    run, _ = full_run(validate_config(tiny_config(root, tmp_path / "runs")), progress=False)
    saved = yaml.safe_load(run.config.read_text())
    assert saved["model"]["color_mode"] == "grayscale"
    from tinyvision.deploy.runners import ReferenceRunner

    assert ReferenceRunner(run.int8_model).input_shape == (1, 32, 32, 1)
