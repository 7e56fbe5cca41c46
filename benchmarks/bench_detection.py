"""Single-object detection from a config of only the source and `weights: none`, against the
constant answers a box must beat (issue 18).

Each run is a whole `tinyvision train` (data, training, evaluation, int8 export, TFLM check) on a
Pascal VOC folder with `mode: largest`, as a user offline runs it; `--variant` adds overrides.
For every seed (the seed also draws the split) it prints the int8 model's mean IoU and share of
boxes at IoU >= 0.5 on the test split (LiteRT reference kernels, bit-exact with TFLM), the same
for always answering the mean training box and the whole image, and the wall time. Run it alone:
the machine has two cores.

    python benchmarks/bench_detection.py ../shared/data/raccoon-voc [--seeds 0 1 2]
        [--variant NAME:key=value;key=value ...] [--skip-default] [--runs-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tinyvision.config import load_config  # noqa: E402
from tinyvision.run.run import full_run  # noqa: E402


def run_once(voc: Path, runs_dir: Path, seed: int, name: str, overrides: list[str]) -> dict:
    config = runs_dir / f"{name}-{seed}.yaml"
    config.write_text(json.dumps({
        "name": f"{name}-s{seed}", "seed": seed, "runs_dir": str(runs_dir),
        "data": {"source": {"format": "voc", "root": str(voc.resolve()), "mode": "largest"}},
        "model": {"weights": "none"}}))
    cfg = load_config(config, overrides)
    start = time.perf_counter()
    _, summary = full_run(cfg, progress=False)
    return {"seconds": time.perf_counter() - start, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("voc", type=Path, help="a Pascal VOC folder, e.g. ../shared/data/raccoon-voc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:key=value;key=value (default: the recipe alone)")
    parser.add_argument("--skip-default", action="store_true",
                        help="run only the variants, not the recipe alone")
    parser.add_argument("--runs-dir", type=Path, default=None)
    args = parser.parse_args()
    variants = [("default", [])] * (not args.skip_default)
    variants += [(v.split(":", 1)[0], v.split(":", 1)[1].split(";")) for v in args.variant]
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="bench-detection-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"runs in {runs_dir}")
    header = ("variant", "seed", "int8 IoU", "int8 >=0.5", "mean box IoU", "mean box >=0.5",
              "whole IoU", "gain", "warnings", "minutes")
    print(" | ".join(header))
    for name, overrides in variants:
        gains = []
        for seed in args.seeds:
            result = run_once(args.voc, runs_dir, seed, name, overrides)
            summary = result["summary"]
            base = summary.box_baselines
            int8 = summary.int8
            gain = int8["mean_iou"] - base["mean_box"]["mean_iou"]
            gains.append(gain)
            codes = ",".join(w["code"] for w in summary.warnings) or "-"
            print(f"{name} | {seed} | {int8['mean_iou']:.4f} | {int8['accuracy_iou50']:.4f} | "
                  f"{base['mean_box']['mean_iou']:.4f} | {base['mean_box']['accuracy_iou50']:.4f} | "
                  f"{base['whole_image']['mean_iou']:.4f} | {gain:+.4f} | {codes} | "
                  f"{result['seconds'] / 60:.1f}", flush=True)
        print(f"{name}: mean gain over the mean box {sum(gains) / len(gains):+.4f} "
              f"(min {min(gains):+.4f})", flush=True)


if __name__ == "__main__":
    main()
