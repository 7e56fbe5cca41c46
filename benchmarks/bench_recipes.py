"""The default config vs the best hand settings, on the demo data and on real photos.

Each run is a whole `tinyvision train` (data, training, evaluation, int8 export, TFLM check) with
`model.weights: none`, as a user offline runs it. `default` is a config holding only the data
source and the weights; `hand` adds the settings that trained best here by hand. `shapes160` is a
trivially separable two-class folder of 160 generated images (white circles and squares on a
plain background); `demo160` the demo's textured circles and squares, 80 of each. Prints test
accuracy (float and int8 on TFLM), model bytes and minutes side by side. The real sets are cut
from a Pascal VOC folder by benchmarks/real_sets.py.

    python benchmarks/bench_recipes.py --voc ../shared/data/raccoon-voc [--sets demo crops ...]
        [--variant NAME:key=value;key=value ...] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from real_sets import SETS, build  # noqa: E402

from tinyvision.config import load_config  # noqa: E402
from tinyvision.data.demo import make_shapes_dataset  # noqa: E402
from tinyvision.run.run import full_run  # noqa: E402

# What trained best by hand before train.recipe existed (the demo's config of the time; the
# issue's "explicit settings": one stage, whole network, batch 32-64 at 5e-3, BatchNorm 0.9).
HAND = ["train.batch_size=32", "train.head.epochs=0", "train.fine_tune.epochs=15",
        "train.fine_tune.learning_rate=5e-3", "train.fine_tune.unfreeze_from=0",
        "train.patience=6", "model.batchnorm_momentum=0.9",
        "train.augment=[{op: flip, mode: horizontal}]", "train.min_steps=0"]


def data_folder(name: str, voc: Path | None, work: Path) -> Path:
    if name == "demo":
        folder = work / "demo"
        if not (folder / "boxes.csv").exists():
            make_shapes_dataset(folder, per_class=1200)
        return folder
    if name == "shapes160":  # a trivially separable two-class folder of 160 images
        folder = work / "shapes160"
        if not (folder / ".done").exists():
            plain_shapes(folder, per_class=80)
        return folder
    if name == "demo160":  # the demo's textured shapes, circles and squares, 80 of each
        folder = work / "demo160"
        if not (folder / "boxes.csv").exists():
            make_shapes_dataset(folder, per_class=80)
            shutil.rmtree(folder / "triangle")
        return folder
    if voc is None:
        raise SystemExit(f"set {name!r} needs --voc (a Pascal VOC folder such as "
                         "../shared/data/raccoon-voc)")
    return build(voc, work / "real", [name])[name]


def plain_shapes(folder: Path, per_class: int, size: int = 128, seed: int = 0) -> Path:
    """White circles and squares of random size and place on a plain dark background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for shape in ("circle", "square"):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("RGB", (size, size), (20, 20, 20))
            draw = ImageDraw.Draw(image)
            radius = rng.uniform(0.15, 0.35) * size
            cx, cy = rng.uniform(radius, size - radius, 2)
            corners = (cx - radius, cy - radius, cx + radius, cy + radius)
            (draw.ellipse if shape == "circle" else draw.rectangle)(corners, fill=(235, 235, 235))
            image.save(folder / shape / f"{shape}_{i:03d}.png")
    (folder / ".done").write_text("")
    return folder


def run_one(folder: Path, runs: Path, name: str, overrides: list[str], seed: int) -> dict:
    runs.mkdir(parents=True, exist_ok=True)
    config = runs / f"{name}.yaml"
    config.write_text(f"name: {name}\nseed: {seed}\nruns_dir: {runs}\noverwrite: true\n"
                      f"data:\n  source: {{format: folder, root: {folder}}}\n"
                      "model:\n  weights: none\n")
    cfg = load_config(config, overrides)
    start = time.perf_counter()
    _, summary = full_run(cfg, console=None, progress=False)
    return {"float": summary.float_metrics["accuracy"], "int8": summary.int8["accuracy"],
            "bytes": summary.int8_bytes, "minutes": (time.perf_counter() - start) / 60,
            "warnings": ",".join(w["code"] for w in summary.get("warnings", [])),
            "start": _start(summary.get("start"))}


def _start(start: dict | None) -> str:
    """The start check's decision and what it measured, or '' (no pretrained start)."""
    if not start:
        return ""
    return f"start {start['decision']} (val informedness {start.get('informedness', '-')})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc", type=Path, help="Pascal VOC folder for the real sets")
    parser.add_argument("--sets", nargs="+", default=["demo", "crops", "crops_gray"],
                        choices=["demo", "shapes160", "demo160", *SETS])
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:key=value;key=value (added to default and hand)")
    parser.add_argument("--only", nargs="+", help="run only these variants")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tv-recipes")
    args = parser.parse_args()
    variants = {"default": [], "hand": HAND}
    for text in args.variant:
        name, _, items = text.partition(":")
        variants[name] = [item for item in items.split(";") if item]
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}
    rows = []
    for set_name in args.sets:
        folder = data_folder(set_name, args.voc, args.work)
        for variant, overrides in variants.items():
            for seed in args.seeds:
                result = run_one(folder, args.work / "runs", f"{set_name}-{variant}", overrides, seed)
                rows.append((set_name, variant, seed, result))
                print(f"{set_name:12s} {variant:12s} seed {seed}  float {result['float']:.4f}  "
                      f"int8 {result['int8']:.4f}  {result['bytes']:,} B  "
                      f"{result['minutes']:.1f} min  {result['warnings']}  {result['start']}", flush=True)
    print("\n| data | recipe | seed | float acc | int8 acc (TFLM) | model bytes | minutes |")
    print("|---|---|---|---|---|---|---|")
    for set_name, variant, seed, r in rows:
        print(f"| {set_name} | {variant} | {seed} | {r['float']:.4f} | {r['int8']:.4f} | "
              f"{r['bytes']:,} | {r['minutes']:.1f} |")


if __name__ == "__main__":
    main()
