"""`model.color_mode: auto`: look at a sample of the training images and pick grayscale when they
are gray (inspection cameras, X-rays, thermal images saved as RGB files with equal channels).

A grayscale model has a third of the input tensor (and of the first convolution), and the board
can run its camera in a grayscale mode.
"""

from __future__ import annotations

import numpy as np

from tinyvision.data.cache import BadImage, DecodeSpec, decode_image
from tinyvision.data.manifest import Manifest

SAMPLE_IMAGES = 64  # training images looked at (seeded choice)
SAMPLE_SIZE = (64, 64)  # decoded this small: colour survives, JPEG chroma noise averages out
GRAY_LEVELS = 12  # a pixel whose channels differ by at most this many levels is gray
GRAY_PIXEL_SHARE = 0.99  # an image is gray when at least this share of its pixels is


def is_gray(pixels: np.ndarray) -> bool:
    """True when an RGB uint8 image (H, W, 3) has (nearly) equal channels everywhere."""
    channels = pixels.astype(np.int16)
    spread = channels.max(axis=-1) - channels.min(axis=-1)
    return bool(np.mean(spread <= GRAY_LEVELS) >= GRAY_PIXEL_SHARE)


def resolve_color_mode(manifest: Manifest, seed: int = 0,
                       rgb_only_ops: list[str] | None = None) -> tuple[str, str]:
    """("grayscale" | "rgb", reason) for `model.color_mode: auto`, from up to 64 training images.

    Grayscale only when every sampled image that decodes is gray; `rgb_only_ops` (colour
    augmentation the config asks for) keeps rgb, since those ops need three channels.
    """
    if rgb_only_ops:
        return "rgb", f"train.augment has {', '.join(rgb_only_ops)}, which need colour"
    paths = [s.path for s in manifest.samples if s.split == "train"] or \
        [s.path for s in manifest.samples]
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in rng.permutation(len(paths))[:SAMPLE_IMAGES]]
    spec = DecodeSpec(SAMPLE_SIZE, "rgb")
    gray = decoded = 0
    for path in chosen:
        try:
            pixels = decode_image(path, spec)
        except BadImage:
            continue  # reported by the cache build; it says nothing about colour
        decoded += 1
        gray += is_gray(pixels)
    if decoded and gray == decoded:
        return "grayscale", f"all {decoded} sampled training images are gray"
    if not decoded:
        return "rgb", "no sampled training image could be decoded"
    return "rgb", f"{decoded - gray} of {decoded} sampled training images have colour"
