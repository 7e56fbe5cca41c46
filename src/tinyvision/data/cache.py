"""Decode every image once: uint8 at the model input size in one file, reused across runs.

`decode_image` is THE image decoder of tinyvision: the cache, evaluation and prediction all call it,
so a model sees the same pixels at training time and at prediction time. The cache is keyed by the
image files (path, size, mtime), the input size, colour mode, resize mode and crop settings; any
change gives a new key and a rebuild, an unchanged dataset is a file open.

The file is read and written with positioned reads and writes (`CachedImages`), not a memmap: a
memmap keeps every page it touched in the process's resident memory (27 KB per 96x96 RGB image,
all of them after one epoch), so peak memory grew with the dataset. Reads of the same pages stay
fast (the kernel's page cache holds them) without counting as the process's memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from tinyvision.data.manifest import Manifest
from tinyvision.files import atomic_path, atomic_write_json, remove_stale_temp_files, reserve_space

log = logging.getLogger("tinyvision")

CACHE_VERSION = 3  # 2: boxes in the metadata; 3: keyed on boxes always, and on inode and ctime
MAX_PIXELS = 90_000_000  # larger images are refused as likely decompression bombs
EXIF_ORIENTATION = 0x0112  # the EXIF tag of the orientation (1-8)
LETTERBOX_FILL = 128  # mid-grey pads: 0 after the model's int8 input offset, neutral to the network


class BadImage(Exception):
    """An image file that cannot be decoded; the message says why."""


@dataclass(frozen=True)
class DecodeSpec:
    """How images become model inputs: size (height, width), colour mode, resize mode, crop."""

    size: tuple[int, int]
    color_mode: str = "rgb"
    resize: str = "stretch"
    crop_to_box: bool = False
    crop_margin: float = 0.1

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    def key(self) -> dict:
        return {"size": list(self.size), "color_mode": self.color_mode, "resize": self.resize,
                "crop_to_box": self.crop_to_box, "crop_margin": self.crop_margin}


# ---- decoding --------------------------------------------------------------------------------
def image_extensions() -> frozenset[str]:
    """File extensions of every image format Pillow decodes here (.jpg, .png, .gif, .bmp, .tif,
    .webp, ...): what a folder of images may hold."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in _NOT_DECODED and not _stub(fmt))


def _stub(fmt: str) -> bool:
    """A plugin that only identifies files of `fmt` (HDF5, GRIB...: data, not images)."""
    factory = Image.OPEN[fmt][0]
    return isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)


# Formats Pillow identifies but does not decode by itself (EPS needs Ghostscript)
_NOT_DECODED = frozenset({"EPS", "MPEG"})


def decode_image(path: str | Path, spec: DecodeSpec,
                 box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Decode one image file to uint8 (height, width, channels) as the model sees it.

    Applies EXIF orientation, converts CMYK/palette/16-bit/alpha images to 8-bit RGB or L
    (transparent pixels over white), optionally crops to `box` (pixel xyxy + margin) and resizes.
    Raises `BadImage` for unreadable, truncated, or oversized (> 90 MP) files.
    """
    with _our_words_on_bombs():
        return decode_sample(path, spec, box)[0]


@contextmanager
def _our_words_on_bombs():
    """Pillow warns (DecompressionBombWarning) on opening an image over its own limit, just under
    MAX_PIXELS; `decode_sample` refuses such an image with a reason of its own (logged, and in
    bad_images.txt), so Pillow's warning is not printed besides it. Entered by the thread that
    waits for the decoding (warning filters are process-wide), never by the workers."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        yield


def decode_sample(path: str | Path, spec: DecodeSpec,
                  box: tuple[float, float, float, float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """`decode_image` plus the sample's box mapped into the output image, normalised xyxy in 0..1
    (None without a box): what a box head must predict for this input."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise BadImage(f"{width}x{height} pixels is over the {MAX_PIXELS // 1_000_000} MP "
                               "limit (possible decompression bomb)")
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            oriented_w, oriented_h = oriented_size(width, height, orientation)
            region = source_region((oriented_w, oriented_h), spec, box)
            _draft(im, spec, region, orientation)
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_8bit(im, spec.color_mode)
            # Draft mode may have decoded at 1/2, 1/4 or 1/8 scale: scale the region with it.
            scale_x, scale_y = im.size[0] / oriented_w, im.size[1] / oriented_h
            scaled = (region[0] * scale_x, region[1] * scale_y, region[2] * scale_x, region[3] * scale_y)
            mapped = None if box is None else map_box(box, region, spec)
            return _resize(im, spec, scaled), mapped
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"refused as a decompression bomb: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for broken files: all mean "unreadable"
        reason = str(exc) or type(exc).__name__
        raise BadImage(f"cannot decode: {reason}") from exc


def letterbox_placement(region: tuple[float, float, float, float], size: tuple[int, int]
                        ) -> tuple[int, int, int, int]:
    """Where a letterboxed source region lands in an output of `size` (height, width): (left,
    top, width, height) in output pixels, the region scaled to fit and centred. The one
    letterbox geometry: the cache, the box mappings, predict and the camera tables (and so the
    generated C) all place the image by it."""
    x1, y1, x2, y2 = region
    target_h, target_w = size
    scale = min(target_w / (x2 - x1), target_h / (y2 - y1))
    width, height = max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))
    return (target_w - width) // 2, (target_h - height) // 2, width, height


def map_box(box: tuple[float, float, float, float], region: tuple[float, float, float, float],
            spec: DecodeSpec) -> np.ndarray:
    """A pixel xyxy box of the oriented image -> normalised xyxy in the resized output image."""
    rx1, ry1, rx2, ry2 = region
    target_h, target_w = spec.size
    if spec.resize == "letterbox":
        off_x, off_y, new_w, new_h = letterbox_placement(region, spec.size)
        xs = [(off_x + (v - rx1) * new_w / (rx2 - rx1)) / target_w for v in (box[0], box[2])]
        ys = [(off_y + (v - ry1) * new_h / (ry2 - ry1)) / target_h for v in (box[1], box[3])]
    else:
        xs = [(v - rx1) / (rx2 - rx1) for v in (box[0], box[2])]
        ys = [(v - ry1) / (ry2 - ry1) for v in (box[1], box[3])]
    return np.clip(np.array([xs[0], ys[0], xs[1], ys[1]], np.float32), 0.0, 1.0)


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Size after EXIF transposition (orientations 5-8 swap the axes)."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an open image as displayed, after its EXIF orientation."""
    return oriented_size(*image.size, image.getexif().get(EXIF_ORIENTATION, 1))


def source_region(size: tuple[int, int], spec: DecodeSpec,
                   box: tuple[float, float, float, float] | None) -> tuple[float, float, float, float]:
    """The part of the (oriented) image that is resized to the model input, as xyxy."""
    width, height = size
    x1, y1, x2, y2 = 0.0, 0.0, float(width), float(height)
    if spec.crop_to_box and box is not None:
        margin_x = (box[2] - box[0]) * spec.crop_margin
        margin_y = (box[3] - box[1]) * spec.crop_margin
        x1, y1 = max(0.0, box[0] - margin_x), max(0.0, box[1] - margin_y)
        x2, y2 = min(float(width), box[2] + margin_x), min(float(height), box[3] + margin_y)
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise BadImage(f"crop box {list(box)} lies outside the {width}x{height} image")
    if spec.resize == "center_crop":
        target_h, target_w = spec.size
        w, h = x2 - x1, y2 - y1
        keep_w, keep_h = min(w, h * target_w / target_h), min(h, w * target_h / target_w)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x1, x2, y1, y2 = cx - keep_w / 2, cx + keep_w / 2, cy - keep_h / 2, cy + keep_h / 2
    return x1, y1, x2, y2


def _draft(im: Image.Image, spec: DecodeSpec, region: tuple, orientation: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the output is that much smaller."""
    if im.format != "JPEG":
        return
    target_h, target_w = spec.size
    region_w, region_h = region[2] - region[0], region[3] - region[1]
    want_w = int(im.size[0] * target_w / max(region_w, 1)) + 1
    want_h = int(im.size[1] * target_h / max(region_h, 1)) + 1
    if orientation in (5, 6, 7, 8):  # draft works in stored (unrotated) pixels
        want_w = int(im.size[0] * target_h / max(region_h, 1)) + 1
        want_h = int(im.size[1] * target_w / max(region_w, 1)) + 1
    mode = "L" if spec.color_mode == "grayscale" and im.mode in ("L", "RGB") else im.mode
    if mode not in ("L", "RGB"):
        mode = None  # leave CMYK alone; _to_8bit converts it properly
    im.draft(mode, (want_w, want_h))


def _to_8bit(im: Image.Image, color_mode: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB or L with correct scaling."""
    if im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 16-bit range 0..65535 -> 0..255
        im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if values.max(initial=0) <= 1.0:
            values = values * 255.0
        im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    target = "RGB" if color_mode == "rgb" else "L"
    return im if im.mode == target else im.convert(target)


def _resize(im: Image.Image, spec: DecodeSpec, region: tuple) -> np.ndarray:
    target_h, target_w = spec.size
    if spec.resize == "letterbox":
        left, top, new_w, new_h = letterbox_placement(region, spec.size)
        resized = im.resize((new_w, new_h), Image.Resampling.BILINEAR, box=region, reducing_gap=None)
        canvas = Image.new(im.mode, (target_w, target_h), LETTERBOX_FILL if im.mode == "L"
                           else (LETTERBOX_FILL,) * 3)
        canvas.paste(resized, (left, top))
        im = canvas
    else:
        im = im.resize((target_w, target_h), Image.Resampling.BILINEAR, box=region)
    array = np.asarray(im, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


# ---- the cache -------------------------------------------------------------------------------
class CachedImages:
    """The cache file as a read-only uint8 array (N, H, W, C): `images[i]`, `images[a:b]` and
    `images[index_array]` read those images (runs of consecutive indices in one read) into a new
    array; nothing stays mapped. `np.asarray(images)` reads them all."""

    def __init__(self, path: str | Path, shape: tuple[int, int, int, int]) -> None:
        self.path, self.shape = Path(path), tuple(int(v) for v in shape)
        self.dtype, self.ndim = np.dtype(np.uint8), 4
        self._item = int(np.prod(self.shape[1:]))
        self._fd = os.open(self.path, os.O_RDONLY) if self.shape[0] else None

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self) -> dict:  # a worker process opens the file itself
        return {"path": self.path, "shape": self.shape}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["shape"])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            index = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= index < self.shape[0]:
                raise IndexError(f"image {key} of a cache of {self.shape[0]}")
            return self._read(np.array([index]))[0]
        if isinstance(key, slice):
            return self._read(np.arange(*key.indices(self.shape[0])))
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        indices = key.astype(np.int64).reshape(-1)
        indices = np.where(indices < 0, indices + self.shape[0], indices)
        if indices.size and (indices.min() < 0 or indices.max() >= self.shape[0]):
            raise IndexError(f"image index out of range for a cache of {self.shape[0]}")
        return self._read(indices).reshape(*key.shape, *self.shape[1:])

    def _read(self, indices: np.ndarray) -> np.ndarray:
        """The images `indices` (any order), each run of consecutive ones read at once."""
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        if not len(indices):
            return out
        order = np.argsort(indices, kind="stable")
        ordered = indices[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        flat = out.reshape(len(indices), -1)
        for run in np.split(np.arange(len(ordered)), breaks):
            first, count = int(ordered[run[0]]), len(run)
            data = os.pread(self._fd, count * self._item, first * self._item)
            if len(data) != count * self._item:
                raise OSError(f"{self.path} is shorter than its {self.shape[0]} images; delete it "
                              "to decode the images again")
            flat[order[run]] = np.frombuffer(data, np.uint8).reshape(count, self._item)
        return out


@dataclass
class ImageCache:
    """Decoded images of one manifest: `images[i]` is sample i; `valid[i]` is False for bad files."""

    images: CachedImages  # uint8 (N, H, W, C), read on demand
    valid: np.ndarray  # bool (N,)
    boxes: np.ndarray  # float32 (N, 4): each sample's box in its cached image, normalised xyxy; NaN if none
    bad: list[tuple[str, str]]  # (path, reason) of every image that could not be decoded
    path: Path
    reused: bool


def cache_key(manifest: Manifest, spec: DecodeSpec) -> str:
    """Hash of everything the cache holds: the decode settings, each file's identity (size,
    mtime, inode and ctime, so an edited or replaced file is seen even when a tool keeps its
    mtime) and each sample's box (stored in the cache: a corrected box, or boxes where a
    classification run had none, must not reuse it)."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, spec.key()]).encode())
    for sample in manifest.samples:
        try:
            stat = os.stat(sample.path)
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{sample.path}\0{stamp}\0{sample.box}\n".encode())
    return digest.hexdigest()[:24]


def build_cache(manifest: Manifest, spec: DecodeSpec, cache_dir: str | Path, workers: int = 0,
                progress: bool = True) -> ImageCache:
    """Open the cache for `manifest` if it is current, else decode all images in parallel into it."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(cache_dir)  # half-written caches of killed runs
    key = cache_key(manifest, spec)
    data_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    shape = (len(manifest), spec.size[0], spec.size[1], spec.channels)
    if meta_path.exists() and data_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("shape") == list(shape):
            images = CachedImages(data_path, shape)
            bad = [tuple(b) for b in meta["bad"]]
            boxes = np.array([[np.nan] * 4 if b is None else b for b in meta["boxes"]],
                             np.float32).reshape(-1, 4)
            return ImageCache(images, np.array(meta["valid"], bool), boxes, bad, data_path,
                              reused=True)

    valid = np.ones(len(manifest), bool)
    boxes = np.full((len(manifest), 4), np.nan, np.float32)
    bad: list[tuple[str, str]] = []
    with atomic_path(data_path) as tmp:
        reserve_space(tmp, int(np.prod(shape)), "The image cache")
        with open(tmp, "r+b") as handle:
            _decode_all(manifest, spec, handle.fileno(), boxes, valid, bad, workers, progress)
    # The metadata file is written last: its presence marks a complete cache.
    atomic_write_json(meta_path, {"version": CACHE_VERSION, "shape": list(shape), "spec": spec.key(),
                                  "valid": valid.tolist(), "bad": bad,
                                  "boxes": [None if np.isnan(b[0]) else b.tolist() for b in boxes]})
    return ImageCache(CachedImages(data_path, shape), valid, boxes, bad, data_path, reused=False)


def _decode_all(manifest: Manifest, spec: DecodeSpec, fd: int, boxes: np.ndarray,
                valid: np.ndarray, bad: list, workers: int, progress: bool) -> None:
    """Decode every sample into the cache file `fd` (image i at i x its size) with a thread pool
    (Pillow releases the GIL while decoding); at most a few batches of work are queued at once,
    so memory does not grow with the number of images."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    workers = workers or os.cpu_count() or 1

    item = spec.size[0] * spec.size[1] * spec.channels

    def work(i: int) -> None:
        sample = manifest.samples[i]
        try:
            pixels, box = decode_sample(sample.path, spec, sample.box)
            os.pwrite(fd, np.ascontiguousarray(pixels, np.uint8).tobytes(), i * item)
            if box is not None:
                boxes[i] = box
        except BadImage as exc:
            valid[i] = False
            bad.append((sample.path, str(exc)))

    columns = (TextColumn("decoding images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar, \
            _our_words_on_bombs(), ThreadPoolExecutor(workers) as pool:
        task = bar.add_task("decode", total=len(manifest))
        chunk = 64 * workers  # queued at once: the futures of all N would grow with the dataset
        for start in range(0, len(manifest), chunk):
            for _ in pool.map(work, range(start, min(start + chunk, len(manifest)))):
                bar.advance(task)
    bad.sort()
    for path, reason in bad:
        log.warning("skipping bad image %s: %s", path, reason)
