"""From a camera frame to the model's int8 input tensor, with integers only: the Python model of
the C function `camera_c.py` generates. Both read the same tables (`CameraPlan`), so they agree to
the bit; a test compiles the C with gcc and compares.

The steps, per output pixel:
1. geometry: the source region of `data.resize` (stretch, center_crop, letterbox), computed once
   into per-column and per-row tables of source indices and 8-bit weights;
2. unpack: each needed frame pixel to 8-bit RGB (or gray) — RGB565 in either byte order, RGB888,
   grayscale, YUV422 (YUYV or UYVY, BT.601 full range);
3. resize: nearest, or bilinear on 2x2 pixels with weights in 1/256 steps, rounded;
4. quantise: a 256-entry table from pixel to the model's int8 input (pixel - 128 for tinyvision's
   exports), computed from the input scale and zero point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyvision.config.run import CAMERA_BYTE_ORDERS as BYTE_ORDERS
from tinyvision.data.cache import (LETTERBOX_FILL, DecodeSpec, decode_image, letterbox_placement,
                                   source_region)
from tinyvision.deploy.outputs import input_lut
from tinyvision.errors import ExportError

BYTES_PER_PIXEL = {"rgb565": 2, "rgb888": 3, "grayscale": 1, "yuv422": 2}
WEIGHT_ONE = 256  # bilinear weights are fractions of 256
RAW_FRAME_SUFFIXES = (".raw", ".bin", ".yuv", ".rgb565")  # files read as frames, not images


@dataclass(frozen=True)
class CameraFormat:
    """A camera frame: pixel format, size, byte order (`big`: RGB565 high byte first, as the
    OV7670 sends it; `yuyv`: Y0 U Y1 V)."""

    format: str
    width: int
    height: int
    byte_order: str

    @classmethod
    def from_config(cls, camera) -> CameraFormat:
        """From `deploy.camera` (a CameraConfig)."""
        return cls(camera.format, camera.width, camera.height, camera.byte_order)

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * BYTES_PER_PIXEL[self.format]

    def describe(self) -> str:
        order = "" if self.byte_order == "none" else f" {self.byte_order}"
        return f"{self.width}x{self.height} {self.format}{order}"


@dataclass(frozen=True)
class CameraPlan:
    """Everything the frame -> tensor function needs, as integer tables."""

    camera: CameraFormat
    out_height: int
    out_width: int
    channels: int  # 3: RGB, 1: gray
    interpolation: str  # nearest | bilinear
    # the content region of the output (all of it, except letterbox bars)
    top: int
    left: int
    rows: int
    cols: int
    x0: np.ndarray  # int32 (cols,): left source column of each output column
    x1: np.ndarray  # int32 (cols,): right source column
    wx: np.ndarray  # int32 (cols,): weight of x1, 0..256
    y0: np.ndarray
    y1: np.ndarray
    wy: np.ndarray
    fill: int  # letterbox fill, as a pixel value
    lut: np.ndarray  # int8 (256,): pixel value -> model input


def make_plan(camera: CameraFormat, input_shape: tuple[int, int, int], resize: str,
              interpolation: str, input_scale: float, input_zero_point: int) -> CameraPlan:
    """Tables for one camera format and one model input (height, width, channels)."""
    check_camera(camera)
    height, width, channels = input_shape
    spec = DecodeSpec(size=(height, width), resize=resize)
    x1f, y1f, x2f, y2f = source_region((camera.width, camera.height), spec, None)
    top, left, rows, cols = 0, 0, height, width
    if resize == "letterbox":
        left, top, cols, rows = letterbox_placement((x1f, y1f, x2f, y2f), (height, width))
    x0, x1, wx = _axis_table(x1f, x2f, cols, camera.width, interpolation)
    y0, y1, wy = _axis_table(y1f, y2f, rows, camera.height, interpolation)
    return CameraPlan(camera, height, width, channels, interpolation, top, left, rows, cols,
                      x0, x1, wx, y0, y1, wy, LETTERBOX_FILL,
                      input_lut(input_scale, input_zero_point))


def check_camera(camera: CameraFormat) -> None:
    if camera.format not in BYTES_PER_PIXEL:
        raise ExportError(f"deploy.camera.format {camera.format!r} is not one of "
                          f"{', '.join(BYTES_PER_PIXEL)}")
    if camera.byte_order not in BYTE_ORDERS[camera.format]:
        raise ExportError(f"deploy.camera.byte_order {camera.byte_order!r} does not apply to "
                          f"{camera.format}: use one of {', '.join(BYTE_ORDERS[camera.format])}")
    if camera.format == "yuv422" and camera.width % 2:
        raise ExportError(f"a yuv422 frame has an even width (two pixels share U and V), got "
                          f"{camera.width}")


def _axis_table(start: float, stop: float, count: int, size: int, interpolation: str):
    """Source index pairs and weights of `count` output samples over [start, stop) of an axis of
    `size` pixels, pixel centres aligned (as Pillow maps them)."""
    step = (stop - start) / count
    centres = start + (np.arange(count) + 0.5) * step
    if interpolation == "nearest":
        index = np.clip(np.floor(centres), 0, size - 1).astype(np.int32)
        return index, index, np.zeros(count, np.int32)
    position = centres - 0.5
    low = np.floor(position)
    weight = np.rint((position - low) * WEIGHT_ONE).astype(np.int64)
    low = low.astype(np.int64)
    carry = weight == WEIGHT_ONE  # rounding reached the next pixel
    low[carry] += 1
    weight[carry] = 0
    weight[low < 0] = 0
    low = np.clip(low, 0, size - 1)
    high = np.minimum(low + 1, size - 1)
    weight[low == size - 1] = 0
    return low.astype(np.int32), high.astype(np.int32), weight.astype(np.int32)


# ---- the frame -> tensor function ------------------------------------------------------------
def preprocess(plan: CameraPlan, frame: bytes | np.ndarray) -> np.ndarray:
    """One camera frame (raw bytes) -> the int8 input tensor (H, W, C), as the C function."""
    raw = np.frombuffer(frame, dtype=np.uint8) if isinstance(frame, bytes | bytearray) \
        else np.asarray(frame, dtype=np.uint8).reshape(-1)
    if raw.size != plan.camera.frame_bytes:
        raise ExportError(f"a {plan.camera.describe()} frame has {plan.camera.frame_bytes} bytes, "
                          f"got {raw.size}")
    pixels = np.full((plan.out_height, plan.out_width, plan.channels), plan.fill, np.int32)
    ys = (plan.y0[:, None], plan.y1[:, None])
    xs = (plan.x0[None, :], plan.x1[None, :])
    taps = [[_unpack(plan, raw, y, x) for x in xs] for y in ys]  # 2x2 of (rows, cols, C)
    wx, wy = plan.wx[None, :, None], plan.wy[:, None, None]
    top = taps[0][0] * (WEIGHT_ONE - wx) + taps[0][1] * wx
    bottom = taps[1][0] * (WEIGHT_ONE - wx) + taps[1][1] * wx
    content = (top * (WEIGHT_ONE - wy) + bottom * wy + (1 << 15)) >> 16
    pixels[plan.top:plan.top + plan.rows, plan.left:plan.left + plan.cols] = content
    return plan.lut[pixels]


def _unpack(plan: CameraPlan, raw: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Frame pixels at (y, x) (broadcast) -> int32 (..., channels) 8-bit values."""
    camera = plan.camera
    index = y * camera.width + x
    if camera.format == "rgb565":
        first, second = raw[2 * index].astype(np.int32), raw[2 * index + 1].astype(np.int32)
        value = (first << 8 | second) if camera.byte_order == "big" else (second << 8 | first)
        r5, g6, b5 = value >> 11, (value >> 5) & 63, value & 31
        rgb = ((r5 << 3) | (r5 >> 2), (g6 << 2) | (g6 >> 4), (b5 << 3) | (b5 >> 2))
    elif camera.format == "rgb888":
        rgb = tuple(raw[3 * index + k].astype(np.int32) for k in range(3))
        if camera.byte_order == "bgr":
            rgb = rgb[::-1]
    elif camera.format == "grayscale":
        gray = raw[index].astype(np.int32)
        return gray[..., None] if plan.channels == 1 else np.stack([gray] * 3, axis=-1)
    else:  # yuv422: 4 bytes per pixel pair
        pair = 4 * (y * (camera.width // 2) + (x >> 1))
        if camera.byte_order == "yuyv":
            luma, u, v = raw[pair + 2 * (x & 1)], raw[pair + 1], raw[pair + 3]
        else:  # uyvy
            luma, u, v = raw[pair + 1 + 2 * (x & 1)], raw[pair], raw[pair + 2]
        luma = luma.astype(np.int32)
        if plan.channels == 1:
            return luma[..., None]
        rgb = yuv_to_rgb(luma, u.astype(np.int32) - 128, v.astype(np.int32) - 128)
    if plan.channels == 1:
        return rgb_to_gray(*rgb)[..., None]
    return np.stack(rgb, axis=-1)


def yuv_to_rgb(luma, d, e):
    """BT.601 full range in 16.16 fixed point; the offset keeps every shifted value positive."""
    offset = 1 << 24
    r = luma + ((91881 * e + 32768 + offset) >> 16) - 256
    g = luma + ((-22554 * d - 46802 * e + 32768 + offset) >> 16) - 256
    b = luma + ((116130 * d + 32768 + offset) >> 16) - 256
    return tuple(np.clip(c, 0, 255) for c in (r, g, b))


def rgb_to_gray(r, g, b):
    """ITU-R 601-2 luma exactly as Pillow's convert("L")."""
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


# ---- frames from images (what the camera would see) ------------------------------------------
def render_frame(image: np.ndarray, camera: CameraFormat) -> bytes:
    """An RGB uint8 image (H, W, 3) of the frame's size -> raw frame bytes in the camera format
    (RGB565 drops the low bits, YUV422 shares chroma between two pixels), as a sensor sends it."""
    r, g, b = (image[..., k].astype(np.int32) for k in range(3))
    if camera.format == "rgb565":
        value = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
        high, low = (value >> 8).astype(np.uint8), (value & 255).astype(np.uint8)
        pair = (high, low) if camera.byte_order == "big" else (low, high)
        return np.stack(pair, axis=-1).tobytes()
    if camera.format == "rgb888":
        order = (r, g, b) if camera.byte_order == "rgb" else (b, g, r)
        return np.stack(order, axis=-1).astype(np.uint8).tobytes()
    luma = rgb_to_gray(r, g, b)
    if camera.format == "grayscale":
        return luma.astype(np.uint8).tobytes()
    rm, gm, bm = ((c[:, 0::2] + c[:, 1::2] + 1) >> 1 for c in (r, g, b))  # one chroma per pair
    u = np.clip(((-11059 * rm - 21709 * gm + 32768 * bm + 32768 + (1 << 24)) >> 16) - 256 + 128,
                0, 255)
    v = np.clip(((32768 * rm - 27439 * gm - 5329 * bm + 32768 + (1 << 24)) >> 16) - 256 + 128,
                0, 255)
    y0, y1 = luma[:, 0::2], luma[:, 1::2]
    quad = (y0, u, y1, v) if camera.byte_order == "yuyv" else (u, y0, v, y1)
    return np.stack(quad, axis=-1).astype(np.uint8).tobytes()


def frame_from_file(path: str | Path, camera: CameraFormat) -> bytes:
    """A raw frame file of exactly the frame's size is read as it is; any image Pillow reads is
    stretched to the frame size and rendered into the camera format."""
    path = Path(path)
    if path.suffix.lower() in RAW_FRAME_SUFFIXES:
        data = path.read_bytes()
        if len(data) != camera.frame_bytes:
            raise ExportError(f"{path}: a raw {camera.describe()} frame has {camera.frame_bytes} "
                              f"bytes, the file has {len(data)}")
        return data
    image = decode_image(path, DecodeSpec(size=(camera.height, camera.width)))
    return render_frame(image, camera)
