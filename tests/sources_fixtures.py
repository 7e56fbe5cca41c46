"""Tiny generated COCO / VOC fixtures for the source, inspect and download tests (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

CATEGORIES = ["person", "bicycle", "car", "dog", "cat", "bird"]


def cat_id(name: str) -> int:
    """COCO-like gappy ids: person=1, bicycle=3, car=5, ..."""
    return 2 * CATEGORIES.index(name) + 1


def write_png(path: Path, size: tuple[int, int] = (100, 100), colour=(120, 120, 120)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def coco_document(images: list[dict], annotations: list[tuple], categories=CATEGORIES,
                  url_base: str | None = None) -> dict:
    """images: [{"file_name", "width", "height"}]; annotations: (image index, category, [x,y,w,h])
    or (image index, category, bbox, iscrowd). Ids are 10 + index so they differ from indices."""
    doc_images = []
    for i, image in enumerate(images):
        entry = {"id": 10 + i, "license": 1, **image}
        if url_base:
            entry["coco_url"] = f"{url_base}/{image['file_name']}"
        doc_images.append(entry)
    doc_annotations = []
    for j, (image, category, bbox, *rest) in enumerate(annotations):
        crowd = rest[0] if rest else 0
        segmentation = ({"counts": [5, 10, 3], "size": [images[image]["height"],
                                                        images[image]["width"]]}
                        if crowd else [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1],
                                        bbox[0] + bbox[2], bbox[1] + bbox[3]]])
        doc_annotations.append({"id": 1000 + j, "image_id": 10 + image,
                                "category_id": cat_id(category), "bbox": list(bbox),
                                "area": 0.5 * bbox[2] * bbox[3], "iscrowd": crowd,
                                "segmentation": segmentation})
    return {"info": {"description": "test"}, "images": doc_images, "annotations": doc_annotations,
            "categories": [{"id": cat_id(c), "name": c, "supercategory": "x"} for c in categories]}


def write_coco(folder: Path, images: list[dict], annotations: list[tuple], name: str = "instances.json",
               write_images: bool = True, indent: int | None = None, **kwargs) -> Path:
    """Write an instances file into `folder` and (optionally) the images into `folder/images`."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = coco_document(images, annotations, **kwargs)
    path = folder / name
    path.write_text(json.dumps(doc, indent=indent))
    if write_images:
        for i, image in enumerate(images):  # distinct colours: distinct bytes
            write_png(folder / "images" / image["file_name"], (image["width"], image["height"]),
                      (i % 256, (i // 256) % 256, 200))
    return path


def square_images(n: int, prefix: str = "img", size: int = 100) -> list[dict]:
    return [{"file_name": f"{prefix}{i:03d}.png", "width": size, "height": size} for i in range(n)]


def voc_xml(filename: str | None, size: tuple[int, int] | None,
            objects: list[tuple]) -> str:
    """objects: (name, (xmin, ymin, xmax, ymax)[, difficult[, truncated]])."""
    parts = ["<annotation>", "<folder>VOC2012</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for name, box, *flags in objects:
        difficult = flags[0] if flags else 0
        truncated = flags[1] if len(flags) > 1 else 0
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose>"
                     f"<truncated>{truncated}</truncated><difficult>{difficult}</difficult>"
                     f"<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>"
                     f"<ymax>{box[3]}</ymax></bndbox>"
                     # VOC person objects carry <part> boxes; they are not objects.
                     "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
                     "<ymax>2</ymax></bndbox></part></object>")
    parts.append("</annotation>")
    return "\n".join(parts)
