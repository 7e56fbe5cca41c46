"""Box conventions and conversions.

The manifest stores every box as **pixel xyxy**: `(x1, y1, x2, y2)` in continuous pixel coordinates
of the image as annotated, origin at the top-left corner of the top-left pixel, `x2 > x1`,
`y2 > y1`. A box covering a whole W x H image is `(0, 0, W, H)`; its area is `(x2-x1)*(y2-y1)`.

* COCO `bbox` is `[x, y, width, height]` in the same continuous coordinates: xyxy = (x, y, x+w, y+h).
* Pascal VOC `bndbox` holds 1-based, inclusive pixel indices: `xmin=1, xmax=W` covers the whole
  width, so xyxy = (xmin - 1, ymin - 1, xmax, ymax) (the convention of the VOC devkit and
  Detectron2).
* Normalised boxes are xyxy divided by the image width and height (0..1).

Every function takes one box (shape (4,)) or many (shape (n, 4)) and returns float64 arrays of the
same shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyvision.data.cache import MAX_PIXELS, displayed_size
from tinyvision.errors import DataError, ImageTooLargeError

# Box check results of `check_boxes`.
BOX_OK, BOX_NOT_FINITE, BOX_DEGENERATE, BOX_OUTSIDE = 0, 1, 2, 3
BOX_STATUS_TEXT = {BOX_NOT_FINITE: "has a non-numeric or infinite coordinate",
                   BOX_DEGENERATE: "is degenerate (zero or negative width or height)",
                   BOX_OUTSIDE: "lies mostly outside the image"}


def _as_boxes(boxes: object) -> np.ndarray:
    array = np.array(boxes, dtype=np.float64)
    if array.shape[-1:] != (4,) or array.ndim not in (1, 2):
        raise ValueError(f"expected a box of 4 numbers or an (n, 4) array, got shape {array.shape}")
    return array


def coco_to_xyxy(boxes: object) -> np.ndarray:
    """COCO [x, y, w, h] -> pixel xyxy."""
    out = _as_boxes(boxes)
    out[..., 2:] += out[..., :2]
    return out


def xyxy_to_coco(boxes: object) -> np.ndarray:
    """Pixel xyxy -> COCO [x, y, w, h]."""
    out = _as_boxes(boxes)
    out[..., 2:] -= out[..., :2]
    return out


def voc_to_xyxy(boxes: object) -> np.ndarray:
    """VOC 1-based inclusive (xmin, ymin, xmax, ymax) -> pixel xyxy."""
    out = _as_boxes(boxes)
    out[..., :2] -= 1.0
    return out


def xyxy_to_voc(boxes: object) -> np.ndarray:
    """Pixel xyxy -> VOC 1-based inclusive corners."""
    out = _as_boxes(boxes)
    out[..., :2] += 1.0
    return out


def normalized_to_xyxy(boxes: object, width: float | np.ndarray,
                       height: float | np.ndarray) -> np.ndarray:
    """Normalised xyxy (fractions of the image) -> pixel xyxy of a `width` x `height` image."""
    out = _as_boxes(boxes)
    scale = np.stack(np.broadcast_arrays(width, height, width, height), axis=-1)
    return out * scale


def xyxy_to_normalized(boxes: object, width: float | np.ndarray,
                       height: float | np.ndarray) -> np.ndarray:
    """Pixel xyxy -> normalised xyxy."""
    out = _as_boxes(boxes)
    scale = np.stack(np.broadcast_arrays(width, height, width, height), axis=-1)
    return out / scale


def box_area(boxes: object) -> np.ndarray:
    """Area of xyxy boxes of any shape (..., 4); zero for degenerate ones."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"expected boxes of shape (..., 4), got shape {b.shape}")
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def box_iou(a: object, b: object) -> np.ndarray:
    """Intersection over union of xyxy boxes, element-wise with numpy broadcasting (`a[:, None]`
    against `b[None]` gives the pairwise matrix). A box with x2 < x1 or y2 < y1 has no area; a
    zero union gives 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    union = box_area(a) + box_area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def clip_xyxy(boxes: object, width: float | np.ndarray, height: float | np.ndarray) -> np.ndarray:
    """Clip pixel xyxy boxes to a `width` x `height` image."""
    out = _as_boxes(boxes)
    w, h = np.asarray(width, np.float64), np.asarray(height, np.float64)
    out[..., 0] = np.clip(out[..., 0], 0, w)
    out[..., 2] = np.clip(out[..., 2], 0, w)
    out[..., 1] = np.clip(out[..., 1], 0, h)
    out[..., 3] = np.clip(out[..., 3], 0, h)
    return out


def check_boxes(boxes: np.ndarray, width: np.ndarray,
                height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip (n, 4) pixel xyxy boxes to their images and classify them.

    Returns (clipped boxes, status per box: BOX_OK, BOX_NOT_FINITE, BOX_DEGENERATE, or BOX_OUTSIDE
    when less than half of the box's area lies inside the image). A box that sticks out a little
    (common at image borders) is clipped and OK.
    """
    boxes = _as_boxes(boxes).reshape(-1, 4)
    status = np.zeros(len(boxes), np.uint8)
    finite = np.isfinite(boxes).all(axis=1)
    status[~finite] = BOX_NOT_FINITE
    safe = np.where(finite[:, None], boxes, 0.0)
    degenerate = finite & ((safe[:, 2] <= safe[:, 0]) | (safe[:, 3] <= safe[:, 1]))
    status[degenerate] = BOX_DEGENERATE
    clipped = clip_xyxy(safe, width, height)
    inside = box_area(clipped)
    outside = (status == BOX_OK) & (inside < 0.5 * box_area(safe))
    status[outside] = BOX_OUTSIDE
    return clipped, status


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as displayed (after its EXIF orientation), from the header only.
    An image over the cache's pixel limit is an ImageTooLargeError, as the decoder refuses it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = displayed_size(image)
    except FileNotFoundError as exc:
        raise DataError(f"Image {path} does not exist.") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image {path} is refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"Cannot read the size of image {path}: {exc}.") from exc
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"image {path} is {width}x{height} pixels, over the "
                                 f"{MAX_PIXELS // 1_000_000} MP limit (possible decompression bomb)")
    return width, height
