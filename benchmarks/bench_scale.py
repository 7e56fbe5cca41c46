"""Scale: peak memory per stage against the number of images, and throughput (issue 23).

For each N it writes a folder of N small JPEGs (the demo's three shapes, 64x64 pixels; made
once per N and kept under --work), then runs a whole run's stages in a fresh child process:
data (manifest + decoding into the cache, all cores), a short training, evaluation, int8 export
and verification (reference kernels on the whole test split, TFLM on a sample). Before each stage
the child resets its peak RSS (/proc/self/clear_refs, 5) and after it reads VmHWM, so each
stage's peak is its own; it also reads the anonymous part of RSS (RssAnon: memory that is not a
file's page cache). The table prints, per stage, the peak RSS at each N and its slope per image
between the smallest and the largest N, and the throughput of decoding, training and
verification, and the cache's size on disk. Run it alone: the machine has two cores.

    python benchmarks/bench_scale.py [--sizes 2000 20000 100000] [--input 96] [--work DIR]
        [--steps 40] [--coco]

`--coco` lists the same images in a generated COCO instances file and reads them as the presence
path does (circle and square present or not, with area thresholds and a cap; triangles the
negative class).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

STAGES = ("data", "train", "evaluate", "export", "verify")


# ---- the images --------------------------------------------------------------------------------
def _write_chunk(args: tuple[str, int, int, int]) -> None:
    from tinyvision.data.demo import make_shapes_dataset

    folder, start, count, size = args
    make_shapes_dataset(Path(folder) / f"part{start}", per_class=count, seed=start, size=size)


def make_images(folder: Path, n: int, size: int = 64) -> Path:
    """`folder/<shape>/...` with n images in all (the demo's shapes, as class folders), and
    `folder/boxes.csv` with each image's shape box (pixels)."""
    done = folder / ".complete"
    if done.exists():
        return folder
    from tinyvision.data.demo import SHAPES

    per_part = 1000
    per_class = max(1, per_part // len(SHAPES))
    parts = max(1, n // (per_class * len(SHAPES)))
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_chunk, [(str(folder), i, per_class, size) for i in range(parts)]))
    # class folders at the top: part*/shape/x.jpg -> shape/part*_x.jpg
    rows = ["path,x1,y1,x2,y2,label"]
    for part in sorted(folder.glob("part*")):
        for line in (part / "boxes.csv").read_text().splitlines()[1:]:
            path, rest = line.split(",", 1)
            shape, name = path.split("/")
            rows.append(f"{shape}/{part.name}_{name},{rest}")
        for shape_dir in part.iterdir():
            if shape_dir.is_dir():
                target = folder / shape_dir.name
                target.mkdir(exist_ok=True)
                for image in shape_dir.iterdir():
                    image.rename(target / f"{part.name}_{image.name}")
                shape_dir.rmdir()
        for leftover in part.iterdir():
            leftover.unlink()
        part.rmdir()
    (folder / "boxes.csv").write_text("\n".join(rows) + "\n")
    done.write_text(str(n))
    return folder


def write_coco(folder: Path, size: int = 64) -> Path:
    """`folder/instances.json`: the images of `folder` as a COCO instances file, one object per
    image (its shape, with its box), for the presence path: circle and square present or not,
    triangles the negative class."""
    from tinyvision.data.demo import SHAPES

    path = folder / "instances.json"
    if path.exists():
        return path
    images, annotations = [], []
    for number, line in enumerate((folder / "boxes.csv").read_text().splitlines()[1:], 1):
        name, x1, y1, x2, y2, label = line.split(",")
        x1, y1, x2, y2 = map(float, (x1, y1, x2, y2))
        images.append({"id": number, "file_name": name, "width": size, "height": size})
        annotations.append({"id": number, "image_id": number,
                            "category_id": SHAPES.index(label) + 1, "iscrowd": 0,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    categories = [{"id": i + 1, "name": shape} for i, shape in enumerate(SHAPES)]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path


# ---- one run, in a child -----------------------------------------------------------------------
def _status() -> dict[str, int]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(images: str, runs: str, cache: str, steps: int, size: int, coco: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tinyvision.config import validate_config
    from tinyvision.run.run import make_run_folder
    from tinyvision.run.stages import (evaluate_stage, export_stage, prepare_data,
                                       prepare_manifest, resolve_settings, train_stage,
                                       verify_stage)

    source = {"format": "folder", "root": images}
    if coco:  # presence labels with area thresholds, a capped class and a negative class
        source = {"format": "coco", "annotations": str(Path(images) / "instances.json"),
                  "images": images, "mode": "presence", "classes": ["circle", "square"],
                  "min_area": {"circle": 0.02, "square": 0.05}, "negative": {"name": "none"},
                  "max_per_class": {"square": 20_000}}
    raw = {"name": "scale", "seed": 0, "runs_dir": runs, "overwrite": True,
           "data": {"source": source, "cache_dir": cache,
                    "val_fraction": 0.1, "test_fraction": 0.1},
           "model": {"weights": "none", "input_size": size, "color_mode": "rgb"},
           "train": {"budget": f"{steps} steps", "batch_size": 64, "min_steps": 0},
           "export": {"representative_samples": 64}, "verify": {"tflm_samples": 8}}
    cfg, run = make_run_folder(validate_config(raw))
    figures: dict[str, dict] = {}

    def stage(name: str, work):
        _reset_peak()
        start = time.perf_counter()
        result = work()
        status = _status()
        figures[name] = {"seconds": time.perf_counter() - start, "peak": status["VmHWM"],
                         "anon": status["RssAnon"], "file": status["RssFile"]}
        return result

    def data():
        manifest = prepare_manifest(cfg, run)
        resolved, _ = resolve_settings(cfg, manifest)
        return resolved, prepare_data(resolved, run, manifest, progress=False)

    cfg, prepared = stage("data", data)
    result = stage("train", lambda: train_stage(cfg, run, prepared))
    stage("evaluate", lambda: evaluate_stage(cfg, run, prepared, result.model))
    stage("export", lambda: export_stage(cfg, run, prepared, result.model))
    report = stage("verify", lambda: verify_stage(cfg, run, prepared, result.model))
    cache_bytes = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    print(json.dumps({"figures": figures, "images": len(prepared.manifest.samples),
                      "train_images": int(len(prepared.indices("train"))),
                      "steps": steps, "batch": cfg.train.batch_size,
                      "verified_images": report.reference_images, "cache_bytes": cache_bytes}))


def run_child(images: Path, work: Path, n: int, steps: int, size: int, coco: bool) -> dict:
    kind = "coco" if coco else "folder"
    runs, cache = work / f"runs-{kind}-{n}-{size}", work / f"cache-{kind}-{n}-{size}"
    out = subprocess.run([sys.executable, __file__, "--child", str(images), str(runs), str(cache),
                          str(steps), str(size), kind], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode:
        raise SystemExit(f"the run on {n} images failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--work", type=Path, default=None, help="images, caches and runs")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--input", type=int, default=96, help="the model's input side")
    parser.add_argument("--coco", action="store_true",
                        help="read the images through a generated COCO instances file as "
                             "presence labels (area thresholds, a cap, a negative class)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child[:3], int(args.child[3]), int(args.child[4]), args.child[5] == "coco")
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}")
    results = {}
    for n in sorted(args.sizes):
        start = time.perf_counter()
        images = make_images(work / f"images-{n}{'-coco' if args.coco else ''}", n)
        if args.coco:
            write_coco(images)
        made = time.perf_counter() - start
        results[n] = run_child(images, work, n, args.steps, args.input, args.coco)
        got = results[n]
        f = got["figures"]
        print(f"N={got['images']}: images made in {made:.0f} s; decode "
              f"{got['images'] / f['data']['seconds']:.0f} images/s; train "
              f"{got['steps'] * got['batch'] / f['train']['seconds']:.0f} images/s (model build "
              f"and tracing included: bench_train_step.py times the step); verify "
              f"{got['verified_images'] / f['verify']['seconds']:.0f} images/s "
              f"({got['verified_images']} images); cache {got['cache_bytes'] / 2**20:.0f} MiB",
              flush=True)
    sizes = sorted(results)
    print("\nstage    | " + " | ".join(f"peak RSS at {results[n]['images']:,}" for n in sizes)
          + " | anon at largest | slope per image (peak)")
    for name in STAGES:
        peaks = [results[n]["figures"][name]["peak"] for n in sizes]
        slope = ""
        if len(sizes) > 1:
            span = results[sizes[-1]]["images"] - results[sizes[0]]["images"]
            slope = f"{(peaks[-1] - peaks[0]) / span / 1024:.1f} KB"
        anon = results[sizes[-1]]["figures"][name]["anon"]
        print(f"{name:8s} | " + " | ".join(f"{p / 2**20:,.0f} MiB" for p in peaks)
              + f" | {anon / 2**20:,.0f} MiB | {slope}")


if __name__ == "__main__":
    main()
