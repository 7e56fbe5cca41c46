"""Frames per second of the generated C camera preprocessing on the host (the issue's goal: at least
500 frames/s for 320x240 RGB565 to 96x96x3), for each interpolation, with the Python model's rate
beside it, and a check that both give the same tensors.

    python benchmarks/bench_camera_preprocess.py [--frames 2000] [--format rgb565] [--size 96]

Compiles with gcc -O2 (what the generated Makefile uses for camera_preprocess.c). Run it alone:
the machine is shared, so a concurrent job lowers the rate.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyvision.deploy.camera import CameraFormat, make_plan, preprocess
from tinyvision.deploy.camera_c import write_camera_c

HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "camera_preprocess.h"
int main(int argc, char** argv) {
  const int frames = atoi(argv[1]);
  static uint8_t frame[8][TV_CAMERA_FRAME_BYTES];
  static int8_t input[TV_INPUT_BYTES];
  if (fread(frame, 1, sizeof frame, stdin) != sizeof frame) return 2;
  long checksum = 0;
  struct timespec start, stop;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int n = 0; n < frames; ++n) {
    tv_preprocess(frame[n % 8], input);
    checksum += input[n % TV_INPUT_BYTES];
  }
  clock_gettime(CLOCK_MONOTONIC, &stop);
  const double seconds = (stop.tv_sec - start.tv_sec) + 1e-9 * (stop.tv_nsec - start.tv_nsec);
  fwrite(input, 1, sizeof input, stdout);  /* the last frame's tensor, for the equality check */
  fprintf(stderr, "%.6f %ld\n", seconds, checksum);
  return 0;
}
"""


def measure(camera: CameraFormat, size: int, interpolation: str, frames: int) -> dict:
    plan = make_plan(camera, (size, size, 3), "stretch", interpolation, 1.0, -128)
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 256, camera.frame_bytes, dtype=np.uint8).tobytes() for _ in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_camera_c(plan, folder)
        (folder / "bench.c").write_text(HARNESS)
        binary = folder / "bench"
        subprocess.run(["gcc", "-std=c99", "-O2", "-o", str(binary), str(folder / "bench.c"),
                        str(folder / "camera_preprocess.c")], check=True)
        result = subprocess.run([str(binary), str(frames)], input=b"".join(samples),
                                capture_output=True, check=True)
    seconds = float(result.stderr.split()[0])
    last = np.frombuffer(result.stdout, dtype=np.int8).reshape(size, size, 3)
    start = time.perf_counter()
    python_frames = 50
    for n in range(python_frames):
        preprocess(plan, samples[n % 8])
    python_seconds = time.perf_counter() - start
    same = np.array_equal(last, preprocess(plan, samples[(frames - 1) % 8]))
    return {"c_fps": frames / seconds, "python_fps": python_frames / python_seconds, "same": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--format", default="rgb565")
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    orders = {"rgb565": "big", "rgb888": "rgb", "grayscale": "none", "yuv422": "yuyv"}
    camera = CameraFormat(args.format, 320, 240, orders[args.format])
    print(f"camera {camera.describe()} -> {args.size}x{args.size}x3 int8, {args.frames} frames")
    print(f"{'interpolation':<14}{'C frames/s':>12}{'Python frames/s':>17}{'C / Python':>12}"
          f"{'same tensor':>13}")
    for interpolation in ("nearest", "bilinear"):
        row = measure(camera, args.size, interpolation, args.frames)
        print(f"{interpolation:<14}{row['c_fps']:>12,.0f}{row['python_fps']:>17,.0f}"
              f"{row['c_fps'] / row['python_fps']:>12.0f}{str(row['same']):>13}")


if __name__ == "__main__":
    main()
