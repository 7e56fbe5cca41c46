"""Benchmark: person/car/negative presence labels from a COCO-sized instances file.

Generates (or takes) an instances JSON shaped like COCO train2017 — 118,287 images, ~860k
annotations with polygon segmentations, 80 categories, ~450 MB — then times, each in a fresh child
process so that peak memory is honest (VmHWM of the child, which counts orjson's allocations too):

* parse-only: `orjson.loads` of the whole file, as is and with the garbage collector paused
  (the stricter baseline: GC passes over millions of new lists make plain parsing ~2x slower);
* build: `build_manifest` of a COCO presence config (person >= 0.5 %, car >= 1 % of the image,
  negatives sampled evenly across the other categories), JSON parsing, image checks and split
  assignment included.

Run:  python benchmarks/bench_coco_presence.py [--file instances.json] [--keep] [--no-image-files]
Targets (issue 3): build <= 2x parse-only, build < 15 s, peak < 4 GB. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_IMAGES = 118_287
N_ANNOTATIONS = 860_001
N_CATEGORIES = 80
EMPTY_IMAGE_FRACTION = 0.0086  # COCO train2017: 1,021 images without annotations


# ---- generation ------------------------------------------------------------------------------
def _category_weights(rng: np.random.Generator) -> np.ndarray:
    """Person dominant (~54 % of images), car ~10 %, the rest long-tailed, like COCO."""
    weights = rng.pareto(1.5, N_CATEGORIES) + 0.2
    weights[0] = 0.0
    weights[2] = 0.0
    weights = weights / weights.sum() * 0.70
    weights[0], weights[2] = 0.25, 0.05
    return weights / weights.sum()


def _segmentation_pool(rng: np.random.Generator, size: int = 4096) -> list[str]:
    """Polygon strings of 8..100 coordinates with two decimals (COCO's ~390 bytes on average)."""
    pool = []
    for _ in range(size):
        n = 2 * int(rng.integers(4, 51))
        coords = ",".join(f"{v:.2f}" for v in rng.uniform(0, 640, n))
        pool.append(f"[[{coords}]]")
    return pool


def _rle_pool(rng: np.random.Generator, size: int = 64) -> list[str]:
    """Uncompressed RLE dicts as COCO stores crowd regions."""
    pool = []
    for _ in range(size):
        counts = ",".join(str(v) for v in rng.integers(0, 400, int(rng.integers(50, 600))))
        pool.append(f'{{"counts":[{counts}],"size":[480,640]}}')
    return pool


def _object_layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image index, category index) of every annotation: a few categories per image, several
    instances of some."""
    weights = _category_weights(rng)
    n_cats = np.minimum(1 + rng.poisson(1.9, N_IMAGES), 12)
    n_cats[rng.random(N_IMAGES) < EMPTY_IMAGE_FRACTION] = 0
    pairs_img, pairs_cat = [], []
    for image, k in enumerate(n_cats):
        if k:
            cats = rng.choice(N_CATEGORIES, int(k), replace=False, p=weights)
            pairs_img.append(np.full(k, image))
            pairs_cat.append(cats)
    img = np.concatenate(pairs_img)
    cat = np.concatenate(pairs_cat)
    extra = N_ANNOTATIONS - len(img)
    boost = np.where(cat == 0, 3.0, 1.0)  # crowds of people
    pick = rng.choice(len(img), extra, p=boost / boost.sum())
    img, cat = np.concatenate([img, img[pick]]), np.concatenate([cat, cat[pick]])
    order = np.argsort(img, kind="stable")
    return img[order], cat[order]


def generate(path: Path, seed: int = 0) -> None:
    """Write a COCO-shaped instances file to `path` (streamed; ~450 MB)."""
    rng = np.random.default_rng(seed)
    img, cat = _object_layout(rng)
    widths = rng.choice([640, 640, 640, 500, 480, 427, 612], N_IMAGES)
    heights = rng.choice([480, 427, 480, 375, 640, 640, 612], N_IMAGES)
    seg, rle = _segmentation_pool(rng), _rle_pool(rng)
    n = len(img)
    frac = np.exp(rng.uniform(np.log(1e-4), np.log(0.8), n))
    aspect = np.exp(rng.uniform(-1.0, 1.0, n))
    w = np.minimum(np.sqrt(frac * widths[img] * heights[img] * aspect), widths[img])
    h = np.minimum(frac * widths[img] * heights[img] / w, heights[img])
    x = rng.uniform(0, 1, n) * (widths[img] - w)
    y = rng.uniform(0, 1, n) * (heights[img] - h)
    crowd = rng.random(n) < 0.01
    seg_pick = rng.integers(0, len(seg), n)
    cat_ids = np.array([i + 1 + i // 10 for i in range(N_CATEGORIES)])  # COCO's gappy ids
    with open(path, "w") as out:
        out.write('{"info":{"description":"synthetic COCO-sized benchmark","year":2017},'
                  '"licenses":[{"url":"http://example.invalid","id":1,"name":"x"}],"images":[')
        out.write(",".join(
            f'{{"license":1,"file_name":"{i + 1:012d}.jpg","coco_url":'
            f'"http://images.cocodataset.org/train2017/{i + 1:012d}.jpg","height":{heights[i]},'
            f'"width":{widths[i]},"date_captured":"2013-11-14 11:18:45","flickr_url":'
            f'"http://farm.example.invalid/{i + 1}.jpg","id":{i + 1}}}' for i in range(N_IMAGES)))
        out.write('],"annotations":[')
        for start in range(0, n, 50_000):
            rows = []
            for j in range(start, min(n, start + 50_000)):
                s = rle[j % len(rle)] if crowd[j] else seg[seg_pick[j]]
                rows.append(f'{{"segmentation":{s},"area":{0.6 * w[j] * h[j]:.5f},'
                            f'"iscrowd":{int(crowd[j])},"image_id":{img[j] + 1},'
                            f'"bbox":[{x[j]:.2f},{y[j]:.2f},{w[j]:.2f},{h[j]:.2f}],'
                            f'"category_id":{cat_ids[cat[j]]},"id":{j + 1}}}')
            out.write(("," if start else "") + ",".join(rows))
        names = ["person", "bicycle", "car"] + [f"category_{i}" for i in range(3, N_CATEGORIES)]
        out.write('],"categories":' + json.dumps(
            [{"supercategory": "thing", "id": int(cat_ids[i]), "name": names[i]}
             for i in range(N_CATEGORIES)]) + "}")


def touch_images(folder: Path) -> None:
    """Empty files named like the images, so that the build's existence check does real work."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_IMAGES):
        (folder / f"{i + 1:012d}.jpg").touch()


# ---- children --------------------------------------------------------------------------------
def _peak_bytes() -> int:
    """This process's peak resident memory (VmHWM: per address space, unaffected by the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(kind: str, path: str, images: str, check_images: bool) -> None:
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    if kind.startswith("parse"):
        import gc

        import orjson

        if kind == "parse-nogc":
            gc.disable()
        with open(path, "rb") as handle:
            document = orjson.loads(handle.read())
        detail = f"{len(document['annotations'])} annotations"
    else:
        from tinyvision.config import DataConfig
        from tinyvision.data.sources import build_manifest

        data = DataConfig.model_validate({"source": {
            "format": "coco", "annotations": path, "images": images,
            "classes": ["person", "car"], "min_area": {"person": 0.005, "car": 0.01},
            "negative": True, "check_images": check_images}})
        manifest = build_manifest(data, seed=0, task="auto")
        counts = manifest.counts()
        detail = {s: c for s, c in counts.items() if any(c.values())}
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak": _peak_bytes(), "detail": str(detail)}))


def _run_child(kind: str, path: Path, images: Path, check_images: bool) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--file", str(path),
               "--images", str(images)] + ([] if check_images else ["--no-image-files"])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{kind} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="an existing instances JSON (default: generate)")
    parser.add_argument("--images", type=Path, help="its images folder")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    parser.add_argument("--no-image-files", action="store_true",
                        help="do not create empty image files; the build skips its image check")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement (best kept)")
    parser.add_argument("--child", choices=["parse", "parse-nogc", "build"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, str(args.file), str(args.images), not args.no_image_files)
        return

    folder = Path(tempfile.mkdtemp(prefix="tv_bench_coco_"))
    try:
        path, images = args.file, args.images or folder / "train2017"
        if path is None:
            path = folder / "instances_train2017.json"
            start = time.perf_counter()
            generate(path)
            print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) "
                  f"in {time.perf_counter() - start:.1f} s")
            if not args.no_image_files:
                touch_images(images)
        check = not args.no_image_files
        best = {kind: min((_run_child(kind, path, images, check) for _ in range(args.repeat)),
                          key=lambda r: r["seconds"]) for kind in ("parse", "parse-nogc", "build")}
        print(f"manifest: {best['build']['detail']}")
        print(f"{'':38s} {'wall':>8s} {'cpu':>8s} {'peak':>9s}")
        for kind, label in (("parse", "parse-only, orjson.loads"),
                            ("parse-nogc", "parse-only, orjson.loads, GC paused"),
                            ("build", "build (presence manifest)")):
            r = best[kind]
            print(f"{label:38s} {r['seconds']:6.2f} s {r['cpu']:6.2f} s {r['peak'] / 2**30:5.2f} GiB")
        for kind in ("parse", "parse-nogc"):
            print(f"ratio build / {kind:12s} wall {best['build']['seconds'] / best[kind]['seconds']:5.2f}"
                  f"   cpu {best['build']['cpu'] / best[kind]['cpu']:5.2f}")
        print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (cpu = user+sys "
              "seconds of the child: what wall time would be without contention)")
        print("targets: ratio <= 2, build < 15 s, peak < 4 GiB (best of "
              f"{args.repeat} runs each, each in a fresh process)")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
