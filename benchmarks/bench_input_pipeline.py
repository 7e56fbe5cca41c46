"""Benchmark: training images/s of one train step fed by three input pipelines (issue 4).

MobileNet V1 0.25 at 96x96 from random weights, flip + rotation augmentation (tinyvision's
`Augmenter`, the same ops for every feed), Adam, batch 64, steady state (warm-up steps excluded):

* (a) cache:     `cache_dataset` from the image-cache memmap, with `augment=` (what `train` uses);
* (b) memory:    the limit: `from_tensor_slices` of a float32 array already in memory, shuffled,
                 batched, the same augmentation mapped over batches;
* (c) directory: `keras.utils.image_dataset_from_directory` over a folder of 640x480 JPEGs
                 (COCO-photo size) resized to 96x96, the same augmentation mapped over batches.

The three run side by side on one model, interleaved for `--rounds` rounds; the median of each is
reported, as images/s (wall) and as this process's CPU ms per image (steadier when other jobs
share the CPU: a busy machine lets a feed with more threads take a larger share of it).
Targets: (a) >= 95 % of (b), (a) >= 1.5x (c). Prints figures; asserts nothing.

Every feed is measured twice: with every layer training (the issue's setting), and with the
backbone frozen, as in a head stage with augmentation, where the step is ~4x cheaper and decoding
weighs more.

Run:  python benchmarks/bench_input_pipeline.py [--images DIR] [--count 1500] [--quick]
`--images` takes a folder of class subfolders of JPEGs; by default one is generated (and deleted).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from tinyvision.config import ModelConfig  # noqa: E402
from tinyvision.data.augment import Augmenter, augment_batches  # noqa: E402
from tinyvision.data.cache import DecodeSpec, build_cache  # noqa: E402
from tinyvision.data.pipeline import cache_dataset  # noqa: E402
from tinyvision.data.sources.folder import load_folder  # noqa: E402
from tinyvision.models.build import build_model, is_head_layer  # noqa: E402

SIZE = (96, 96)
AUGMENT = [{"op": "flip", "mode": "horizontal"}, {"op": "rotation", "degrees": 15}]
CLASSES = ("circle", "square")
# True: backbone frozen (the head stage with augmentation, whose features cannot be cached)
MODELS = {"fine-tune": False, "head": True}
MODELS_TEXT = {"fine-tune": "every layer trains (the issue's targets apply to this one)",
               "head": "backbone frozen, only the head trains (the head stage with augmentation)"}


def make_jpegs(root: Path, count: int, seed: int = 0) -> None:
    """`count` 640x480 JPEGs (colour waves, photo-like grain, a shape) in two class folders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    grain = rng.normal(0, 8, (480 + 64, 640 + 64, 3)).astype(np.float32)
    for i in range(count):
        label = CLASSES[i % 2]
        a, b, c = rng.uniform(-1.0, 1.0, 3)
        base = 128 + 100 * np.sin(a * xx / 10 + b * yy / 10 + c * 6)
        small = Image.fromarray(np.clip(base[..., None] * rng.uniform(0.5, 1.0, 3), 0, 255)
                                .astype(np.uint8)).resize((640, 480), Image.Resampling.BILINEAR)
        dy, dx = rng.integers(0, 64, 2)
        pixels = np.asarray(small, np.float32) + grain[dy:dy + 480, dx:dx + 640]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        x, y, r = rng.integers(100, 540), rng.integers(100, 380), rng.integers(30, 90)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw = ImageDraw.Draw(image)
        shape = draw.ellipse if label == "circle" else draw.rectangle
        shape((x - r, y - r, x + r, y + r), colour)
        path = root / label / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)


class StepTimer(keras.callbacks.Callback):
    """Wall time and this process's CPU time at the end of every training batch."""

    def __init__(self):
        super().__init__()
        self.times: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.times.append((time.perf_counter(), usage.ru_utime + usage.ru_stime))


def measure(model: keras.Model, ds: tf.data.Dataset, batch: int, warmup: int,
            steps: int) -> tuple[float, float]:
    """Steady state, batches after `warmup` only: (images/s, CPU ms per image).

    CPU time counts every thread of the process (train step, input pipeline, augmentation); on a
    machine shared with other jobs it is a steadier measure of cost than wall time."""
    timer = StepTimer()
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0,
              shuffle=False)
    (wall0, cpu0), (wall1, cpu1) = timer.times[warmup - 1], timer.times[-1]
    return steps * batch / (wall1 - wall0), (cpu1 - cpu0) * 1e3 / (steps * batch)


def feeds(root: Path, cache_dir: Path, batch: int) -> dict[str, tf.data.Dataset]:
    """The three training datasets (repeating, augmented, shuffled)."""
    manifest = load_folder(root)
    started = time.perf_counter()
    cache = build_cache(manifest, DecodeSpec(SIZE), cache_dir, progress=False)
    print(f"image cache: {len(manifest)} images decoded to {SIZE[0]}x{SIZE[1]} in "
          f"{time.perf_counter() - started:.1f} s (one-off)")
    indices = np.flatnonzero(cache.valid)
    targets = manifest.label_matrix()[indices].astype(np.float32)
    cached = cache_dataset(cache.images, indices, targets, batch, shuffle=True, seed=0,
                           repeat=True, augment=AUGMENT)

    in_memory = np.asarray(cache.images[indices], np.float32)
    augmenter = Augmenter(AUGMENT, in_memory.shape[1:])
    memory = (tf.data.Dataset.from_tensor_slices((in_memory, targets))
              .shuffle(len(indices), seed=0).repeat().batch(batch))
    memory = augment_batches(memory, augmenter, seed=0).prefetch(tf.data.AUTOTUNE)

    directory = keras.utils.image_dataset_from_directory(
        root, label_mode="categorical", image_size=SIZE, batch_size=batch, shuffle=True, seed=0,
        verbose=False).repeat()
    directory = augment_batches(directory, augmenter, seed=0).prefetch(tf.data.AUTOTUNE)
    return {"a_cache": cached, "b_memory": memory, "c_directory": directory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder of class subfolders of JPEGs")
    parser.add_argument("--count", type=int, default=1500, help="JPEGs to generate")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=24, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="400 images, 15 steps, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.count, args.steps, args.rounds = 400, 15, 1

    work = Path(tempfile.mkdtemp(prefix="tv_bench_pipeline_"))
    try:
        root = args.images
        if root is None:
            root = work / "jpegs"
            started = time.perf_counter()
            make_jpegs(root, args.count)
            print(f"generated {args.count} 640x480 JPEGs in {time.perf_counter() - started:.1f} s")
        datasets = feeds(root, work / "cache", args.batch)
        models = {name: compiled_model(frozen) for name, frozen in MODELS.items()}
        rates = {m: {name: [] for name in datasets} for m in models}
        costs = {m: {name: [] for name in datasets} for m in models}
        for round_ in range(args.rounds):
            for model_name, model in models.items():
                for name, ds in datasets.items():
                    rate, cost = measure(model, ds, args.batch, args.warmup, args.steps)
                    rates[model_name][name].append(rate)
                    costs[model_name][name].append(cost)
                    print(f"round {round_ + 1}: {model_name:9s} {name:12s} {rate:7.1f} img/s  "
                          f"{cost:6.2f} CPU ms/img  (load average {os.getloadavg()[0]:.1f})")
        for model_name in models:
            report(model_name, rates[model_name], costs[model_name], args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compiled_model(frozen: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(weights="none"), len(CLASSES), "multiclass")
    if frozen:
        for layer in model.layers:
            layer.trainable = is_head_layer(layer)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    return model


def report(model_name: str, rates: dict[str, list[float]], costs: dict[str, list[float]],
           args: argparse.Namespace) -> None:
    rate = {name: statistics.median(values) for name, values in rates.items()}
    cost = {name: statistics.median(values) for name, values in costs.items()}
    print(f"\n{model_name}: {MODELS_TEXT[model_name]}")
    print(f"MobileNet V1 0.25, {SIZE[0]}x{SIZE[1]}, batch {args.batch}, flip+rotation, "
          f"{args.steps} timed steps after {args.warmup} warm-up, median of {args.rounds} "
          f"round(s), "
          f"{os.cpu_count()} CPU(s), load average now {os.getloadavg()[0]:.1f}:")
    for name in rate:
        print(f"  {name:12s} {rate[name]:7.1f} img/s  {cost[name]:6.2f} CPU ms/img   (rounds: "
              f"{', '.join(f'{v:.0f}' for v in rates[name])} img/s)")
    a, b, c = rate["a_cache"], rate["b_memory"], rate["c_directory"]
    print(f"  wall img/s:    (a)/(b) = {a / b:.3f}  target >= 0.95;  (a)/(c) = {a / c:.2f}x  "
          "target >= 1.5x")
    a, b, c = cost["a_cache"], cost["b_memory"], cost["c_directory"]
    print(f"  CPU per image: (b)/(a) = {b / a:.3f}  (a as fast as b when >= 1);  (c)/(a) = "
          f"{c / a:.2f}x  (a's CPU advantage over c)")


if __name__ == "__main__":
    main()
