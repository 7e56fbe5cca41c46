"""Box conventions: COCO xywh, VOC 1-based corners, normalised, clipping and checks, EXIF sizes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tinyvision.data.sources.boxes import (BOX_DEGENERATE, BOX_NOT_FINITE, BOX_OK, BOX_OUTSIDE,
                                           box_area, check_boxes, clip_xyxy, coco_to_xyxy,
                                           image_size, normalized_to_xyxy, voc_to_xyxy,
                                           xyxy_to_coco, xyxy_to_normalized, xyxy_to_voc)
from tinyvision.errors import DataError


def test_coco_xywh():
    assert coco_to_xyxy([10, 20, 30, 40]).tolist() == [10, 20, 40, 60]
    assert xyxy_to_coco([10, 20, 40, 60]).tolist() == [10, 20, 30, 40]


def test_voc_one_based_inclusive_corners():
    # A VOC box over a whole 500x375 image is (1, 1, 500, 375): pixel xyxy (0, 0, 500, 375).
    assert voc_to_xyxy([1, 1, 500, 375]).tolist() == [0, 0, 500, 375]
    assert xyxy_to_voc([0, 0, 500, 375]).tolist() == [1, 1, 500, 375]
    # A single-pixel VOC box (x=5, y=7) is one pixel wide: area 1.
    assert box_area(voc_to_xyxy([5, 7, 5, 7])) == 1.0


def test_normalised_per_image_sizes():
    boxes = np.array([[0.1, 0.2, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]])
    pixels = normalized_to_xyxy(boxes, np.array([100, 640]), np.array([50, 480]))
    assert pixels.tolist() == [[10, 10, 50, 50], [0, 0, 640, 480]]
    assert np.allclose(xyxy_to_normalized(pixels, np.array([100, 640]), np.array([50, 480])), boxes)


def test_round_trips_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (50, 2))
    boxes = np.hstack([xy, xy + rng.uniform(1, 50, (50, 2))])
    assert np.allclose(coco_to_xyxy(xyxy_to_coco(boxes)), boxes)
    assert np.allclose(voc_to_xyxy(xyxy_to_voc(boxes)), boxes)
    assert np.allclose(normalized_to_xyxy(xyxy_to_normalized(boxes, 200, 150), 200, 150), boxes)


def test_inputs_are_not_modified_and_shapes_checked():
    box = np.array([1.0, 2.0, 3.0, 4.0])
    coco_to_xyxy(box)
    assert box.tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"4 numbers"):
        coco_to_xyxy([1, 2, 3])


def test_clip_and_check():
    boxes = np.array([[-5, -5, 50, 50],  # sticks out a little: clipped, OK
                      [10, 10, 10, 20],  # zero width
                      [90, 90, 200, 200],  # mostly outside a 100x100 image
                      [0, np.nan, 5, 5]])
    clipped, status = check_boxes(boxes, np.full(4, 100.0), np.full(4, 100.0))
    assert status.tolist() == [BOX_OK, BOX_DEGENERATE, BOX_OUTSIDE, BOX_NOT_FINITE]
    assert clipped[0].tolist() == [0, 0, 50, 50]
    assert clip_xyxy([-1, 5, 120, 90], 100, 80).tolist() == [0, 5, 100, 80]


def test_image_size_follows_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    Image.new("RGB", (60, 40)).save(path, exif=exif)
    assert image_size(path) == (40, 60)
    Image.new("RGB", (60, 40)).save(tmp_path / "plain.png")
    assert image_size(tmp_path / "plain.png") == (60, 40)
    with pytest.raises(DataError, match=r"does not exist"):
        image_size(tmp_path / "none.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"Cannot read the size"):
        image_size(tmp_path / "junk.png")
