"""`tinyvision demo`: a procedural dataset and a full run on it, offline, in minutes on a laptop CPU.

The dataset is coloured shapes (circle, square, triangle) of random size, position, rotation and
colour on textured, noisy backgrounds, in class folders as a user would have them. No pretrained
weights are needed (none can be downloaded offline), so the whole network trains from scratch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
DEMO_TASKS = frozenset({"multiclass", "detection"})
IMAGE_SIZE = 128


def make_shapes_dataset(root: str | Path, per_class: int = 1200, seed: int = 0,
                        size: int = IMAGE_SIZE) -> Path:
    """Write `root/<shape>/<shape>_<i>.jpg` images and `root/boxes.csv` (each image's shape box,
    `path,x1,y1,x2,y2,label` in pixels) for the detection variant; returns `root`.
    Deterministic for a seed."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = ["path,x1,y1,x2,y2,label"]
    for shape in SHAPES:
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = _background(rng, size)
            box = _draw_shape(image, shape, rng)
            name = f"{shape}/{shape}_{i:04d}.jpg"
            image.save(root / name, quality=90)
            rows.append(f"{name},{box[0]:.1f},{box[1]:.1f},{box[2]:.1f},{box[3]:.1f},{shape}")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A colour gradient, soft stripes and pixel noise: texture the network must learn to ignore."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 215, 3)
    slope = rng.uniform(-50, 50, (2, 3))
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = 15 * np.sin((x * np.cos(angle) + y * np.sin(angle)) * size / period * 2 * np.pi)
    pixels = base + x[..., None] * slope[0] + y[..., None] * slope[1] + stripes[..., None]
    pixels += rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw_shape(image: Image.Image, shape: str, rng: np.random.Generator
                ) -> tuple[float, float, float, float]:
    """Draw one shape; returns its bounding box (pixel xyxy)."""
    size = image.size[0]
    radius = rng.uniform(0.2, 0.38) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    angle = rng.uniform(0, 2 * math.pi)
    # A colour that stands out from the background around the shape's centre.
    local = np.asarray(image)[int(cy), int(cx)].astype(int)
    colour = tuple(int(v) for v in np.where(local > 127, rng.integers(0, 60, 3), rng.integers(195, 256, 3)))
    outline = colour
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour,
                     outline=outline, width=2)
        return cx - radius, cy - radius, cx + radius, cy + radius
    corners = 4 if shape == "square" else 3
    points = [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
               cy + radius * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]
    draw.polygon(points, fill=colour, outline=outline, width=2)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def demo_config(data_root: Path, runs_dir: Path, name: str = "demo", task: str = "multiclass") -> dict:
    """The demo's run config: MobileNet V1 0.25 at 96x96 trained from scratch.

    `task`: "multiclass" (which shape) or "detection" (which shape and where: class + box head, read
    from boxes.csv)."""
    if task not in DEMO_TASKS:
        raise ValueError(f"task={task!r}; expected one of {sorted(DEMO_TASKS)}")
    source = ({"format": "folder", "root": str(data_root)} if task == "multiclass" else
              {"format": "csv", "path": str(data_root / "boxes.csv")})
    # A shape's class does not change when it is mirrored, and a flip moves the box exactly.
    augment = [{"op": "flip", "mode": "horizontal_and_vertical"}]
    return {
        "name": name if task == "multiclass" else f"{name}-detection",
        "seed": 0,
        "runs_dir": str(runs_dir),
        "data": {"source": source, "val_fraction": 0.15, "test_fraction": 0.15},
        "model": {"backbone": "mobilenet_v1", "alpha": 0.25, "input_size": 96, "weights": "none"},
        # The scratch recipe (model.weights: none) sets the rest: one stage in which the whole
        # network trains, AdamW at 5e-3 with warm-up then cosine over 40 passes (at least 1500
        # steps), BatchNorm momentum 0.9. Measured (bench_recipes.py): 99.8% test accuracy.
        "train": {"augment": augment},
        # The device of the mission: an STM32H743 fed 320x240 RGB565 frames; the export writes
        # the C preprocessing for them and checks that the model fits beside the frame buffer.
        "export": {"representative_samples": 200, "board": "stm32h743"},
        "deploy": {"camera": {"format": "rgb565", "width": 320, "height": 240}},
        "verify": {"tflm_samples": 60},
    }
