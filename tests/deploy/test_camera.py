"""The camera path: the generated C preprocessing, compiled with gcc, gives exactly the Python
model's int8 tensor for every frame format, byte order, geometry and interpolation; and the
Python model itself matches hand-computed pixels."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyvision.deploy.camera import (CameraFormat, input_lut, make_plan, preprocess, render_frame,
                                      rgb_to_gray)
from tinyvision.deploy.camera_c import write_camera_c
from tinyvision.errors import ExportError

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "camera_preprocess.h"
int main(void) {
  static uint8_t frame[TV_CAMERA_FRAME_BYTES];
  static int8_t input[TV_INPUT_BYTES];
  while (fread(frame, 1, sizeof frame, stdin) == sizeof frame) {
    tv_preprocess(frame, input);
    fwrite(input, 1, sizeof input, stdout);
  }
  return 0;
}
"""

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def compile_preprocess(plan, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_camera_c(plan, folder)
    (folder / "harness.c").write_text(HARNESS)
    binary = folder / "preprocess"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
                    str(folder / "harness.c"), str(folder / "camera_preprocess.c")], check=True)
    return binary


def run_c(binary: Path, frames: list[bytes], plan) -> np.ndarray:
    out = subprocess.run([str(binary)], input=b"".join(frames), capture_output=True, check=True)
    shape = (len(frames), plan.out_height, plan.out_width, plan.channels)
    return np.frombuffer(out.stdout, dtype=np.int8).reshape(shape)


def random_frames(camera: CameraFormat, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, camera.frame_bytes, dtype=np.uint8).tobytes()
              for _ in range(count - 2)]
    # a smooth picture too, rendered as the sensor would send it, and the extremes
    y, x = np.mgrid[0:camera.height, 0:camera.width]
    picture = np.stack([x * 255 // camera.width, y * 255 // camera.height,
                        (x + y) % 256], axis=-1).astype(np.uint8)
    frames.append(render_frame(picture, camera))
    frames.append(bytes([255]) * camera.frame_bytes)
    return frames


CAMERAS = [CameraFormat("rgb565", 40, 30, "big"), CameraFormat("rgb565", 40, 30, "little"),
           CameraFormat("rgb888", 36, 28, "rgb"), CameraFormat("rgb888", 36, 28, "bgr"),
           CameraFormat("grayscale", 32, 30, "none"), CameraFormat("yuv422", 40, 30, "yuyv"),
           CameraFormat("yuv422", 40, 30, "uyvy")]


@needs_gcc
@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"{c.format}-{c.byte_order}")
@pytest.mark.parametrize("resize", ["stretch", "center_crop", "letterbox"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_c_preprocessing_equals_the_python_model(tmp_path, camera, resize, interpolation):
    for channels, (height, width) in ((3, (12, 16)), (1, (16, 12))):
        plan = make_plan(camera, (height, width, channels), resize, interpolation, 1.0, -128)
        binary = compile_preprocess(plan, tmp_path / f"c{channels}")
        frames = random_frames(camera, 5, seed=channels)
        expected = np.stack([preprocess(plan, f) for f in frames])
        np.testing.assert_array_equal(run_c(binary, frames, plan), expected)


@needs_gcc
def test_an_input_quantisation_other_than_minus_128_goes_through_the_table(tmp_path):
    camera = CameraFormat("rgb888", 20, 20, "rgb")
    plan = make_plan(camera, (10, 10, 3), "stretch", "bilinear", 0.75, -3)
    binary = compile_preprocess(plan, tmp_path)
    frames = random_frames(camera, 4, seed=3)
    np.testing.assert_array_equal(run_c(binary, frames, plan),
                                  np.stack([preprocess(plan, f) for f in frames]))
    assert plan.lut[0] == -3 and plan.lut[3] == 1 and plan.lut[255] == 127  # round(3/.75) - 3


def test_rgb565_byte_orders_unpack_to_the_same_pixels():
    """A pure red, green and blue frame in both byte orders; the 565 values widen to 255."""
    for order in ("big", "little"):
        camera = CameraFormat("rgb565", 4, 1, order)
        image = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
        frame = render_frame(image, camera)
        assert frame[:2] == (b"\xf8\x00" if order == "big" else b"\x00\xf8")
        plan = make_plan(camera, (1, 4, 3), "stretch", "nearest", 1.0, -128)
        pixels = preprocess(plan, frame).astype(int) + 128
        np.testing.assert_array_equal(pixels[0], image[0])


def test_stretch_nearest_picks_the_centre_pixels_and_bilinear_averages():
    camera = CameraFormat("grayscale", 4, 4, "none")
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    nearest = make_plan(camera, (2, 2, 1), "stretch", "nearest", 1.0, 0)
    # output pixel centres at source 1.0 and 3.0 -> columns 1 and 3
    np.testing.assert_array_equal(preprocess(nearest, frame.tobytes())[..., 0],
                                  np.minimum(frame[[1, 3]][:, [1, 3]], 127))
    bilinear = make_plan(camera, (2, 2, 1), "stretch", "bilinear", 1.0, 0)
    # centres at 0.5 and 2.5: the mean of each 2x2 block
    expected = frame.reshape(2, 2, 2, 2).astype(float).mean(axis=(1, 3))
    np.testing.assert_array_equal(preprocess(bilinear, frame.tobytes())[..., 0],
                                  np.minimum(np.floor(expected + 0.5), 127))


def test_letterbox_pads_with_the_fill_and_center_crop_keeps_the_middle():
    camera = CameraFormat("grayscale", 8, 4, "none")
    frame = np.tile(np.arange(8, dtype=np.uint8) * 30, (4, 1))
    boxed = make_plan(camera, (4, 4, 1), "letterbox", "nearest", 1.0, -128)
    assert (boxed.top, boxed.rows, boxed.cols) == (1, 2, 4)
    tensor = preprocess(boxed, frame.tobytes())[..., 0].astype(int) + 128
    assert (tensor[0] == 128).all() and (tensor[3] == 128).all()
    np.testing.assert_array_equal(tensor[1], [30, 90, 150, 210])
    cropped = make_plan(camera, (4, 4, 1), "center_crop", "nearest", 1.0, -128)
    tensor = preprocess(cropped, frame.tobytes())[..., 0].astype(int) + 128
    np.testing.assert_array_equal(tensor[0], [60, 90, 120, 150])  # columns 2..5


def test_yuv_frames_of_a_gray_picture_give_its_gray_values():
    camera = CameraFormat("yuv422", 4, 2, "yuyv")
    image = np.full((2, 4, 3), 77, np.uint8)
    plan = make_plan(camera, (2, 4, 3), "stretch", "nearest", 1.0, -128)
    np.testing.assert_array_equal(preprocess(plan, render_frame(image, camera)).astype(int) + 128,
                                  image)


def test_pillow_luma():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.int64)
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    np.testing.assert_array_equal(rgb_to_gray(r, g, b), expected)


def test_bad_camera_settings_are_refused():
    with pytest.raises(ExportError, match="byte_order 'rgb' does not apply to rgb565"):
        make_plan(CameraFormat("rgb565", 8, 8, "rgb"), (4, 4, 3), "stretch", "nearest", 1.0, 0)
    with pytest.raises(ExportError, match="even width"):
        make_plan(CameraFormat("yuv422", 7, 8, "yuyv"), (4, 4, 3), "stretch", "nearest", 1.0, 0)
    plan = make_plan(CameraFormat("grayscale", 8, 8, "none"), (4, 4, 1), "stretch", "nearest",
                     1.0, 0)
    with pytest.raises(ExportError, match="has 64 bytes, got 10"):
        preprocess(plan, bytes(10))


def test_the_input_table_matches_litert_quantisation():
    from tinyvision.deploy.outputs import Quantization, quantize_images

    pixels = np.arange(256, dtype=np.uint8)
    for scale, zero in ((1.0, -128), (0.5, 3), (1.7, -20)):
        np.testing.assert_array_equal(input_lut(scale, zero),
                                      quantize_images(pixels, Quantization(scale, zero)))
