"""GPU check: training-step speed on the GPU against the CPU, and the int8 result of GPU training.

For a machine with a GPU (issue 23), sized to take under 5 minutes there; it has not yet run on
one (the sessions that wrote it had no GPU). Without one it says so and runs the CPU rows only
(mixed precision is then bfloat16): `--quick` takes 3.3 minutes on the 2-core CPU.

1. The step. MobileNet V1 0.25 at 96x96 (the demo's model) and MobileNet V2 1.0 at 224x224 (a
   size a GPU is for), batch 64, AdamW, built and trained as the trainer does (fused BatchNorm,
   folded padding, `train.precision`'s dtype policy). images/s is the best of 3 timed epochs of
   one `fit` call (epochs of 20 steps; 4 for 224px on a CPU), after an epoch that traces the
   step. Rows: CPU float32, GPU float32, GPU mixed (float16 with loss scaling).
2. The export. The demo's shapes (`--per-class` images per class), a whole `tinyvision train`
   (`--steps` optimizer steps, then evaluation, int8 export and verification) on the CPU in
   float32, and on the GPU in float32 and in mixed precision. Per run: float and int8 test
   accuracy, int8 bytes, and whether TFLM matched the LiteRT reference bit for bit where the TFLM
   tree was found (`TINYVISION_TFLM_SOURCE`). The GPU runs' int8 accuracy should be within a point
   or two of the CPU run's.

Each row runs in a process of its own (`CUDA_VISIBLE_DEVICES=` hides the GPU from the CPU rows).

    python benchmarks/gpu_check.py [--steps 400] [--per-class 300] [--workdir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP_MODELS = (("mobilenet_v1", 0.25, 96), ("mobilenet_v2", 1.0, 224))


def measure_step(backbone: str, alpha: float, size: int, precision: str, batch: int = 64,
                 steps: int = 20) -> dict:
    """images/s of the trainer's step on the visible devices (child process)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from bench_train_step import epoch_clock  # this folder is the script's: on sys.path

    from tinyvision.config import ModelConfig
    from tinyvision.models.build import build_model
    from tinyvision.training.folded_padding import folded_padding
    from tinyvision.training.fused_batchnorm import use_fused_batchnorm
    from tinyvision.training.precision import build_in, policy_name
    from tinyvision.training.trainer import JIT_COMPILE

    policy = policy_name(precision)
    model = build_in(policy, lambda: build_model(
        ModelConfig(backbone=backbone, weights="none", alpha=alpha, input_size=size,
                    color_mode="rgb"), 10, "multiclass"))
    use_fused_batchnorm(model)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss="categorical_crossentropy", jit_compile=JIT_COMPILE)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * 4, size, size, 3)).astype("uint8")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch * 4)]
    data = (tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)
            .map(lambda a, b: (tf.cast(a, tf.float32), b)).prefetch(2))

    clock = epoch_clock(keras)
    with folded_padding(model):
        model.fit(data, epochs=4, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    return {"images_per_s": steps * batch / min(clock.seconds[1:]), "policy": policy}


def whole_run(data_root: str, runs_dir: str, name: str, precision: str, steps: int) -> dict:
    """A `tinyvision train` of the demo's shapes (child process); its headline figures."""
    from tinyvision.data.demo import demo_config
    from tinyvision.run.run import train

    raw = demo_config(Path(data_root), Path(runs_dir), name=name)
    raw["train"].update(precision=precision, budget=f"{steps} steps", min_steps=0)
    raw["export"].update(representative_samples=100)
    start = time.perf_counter()
    run = train(raw)
    summary = run.summary
    verify = run.verify()
    return {"float_accuracy": (summary.float_metrics or {}).get("accuracy"),
            "int8_accuracy": (summary.int8 or {}).get("accuracy"),
            "int8_bytes": summary.int8_bytes,
            "tflm_bit_exact": verify.tflm_equals_reference if verify else None,
            "minutes": round((time.perf_counter() - start) / 60, 2)}


def _child(args: list[str], gpu: bool) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(args)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps of each run")
    parser.add_argument("--per-class", type=int, default=300, help="demo images per class")
    parser.add_argument("--workdir", type=Path, help="where the images and runs go (default: a "
                        "temporary folder, removed at the end)")
    parser.add_argument("--quick", action="store_true",
                        help="only the demo-sized step model, and 150-step runs")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        kind, *rest = json.loads(args.one)
        result = measure_step(*rest) if kind == "step" else whole_run(*rest)
        print(json.dumps(result))
        return

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"GPUs: {[gpu.name for gpu in gpus] or 'none (the GPU rows are skipped)'}")
    started = time.perf_counter()
    rows = [("CPU", False, "float32")] + ([("GPU", True, "float32"), ("GPU", True, "mixed")]
                                          if gpus else [("CPU", False, "mixed")])
    models = STEP_MODELS[:1] if args.quick else STEP_MODELS
    print("\n1. training step, batch 64 (images/s, best of 3 epochs of 20 steps; 4 for 224px "
          "on a CPU)")
    for backbone, alpha, size in models:
        for device, gpu, precision in rows:
            steps = 20 if gpu or size <= 96 else 4  # a CPU takes seconds per 224px batch
            figures = _child(["step", backbone, alpha, size, precision, 64, steps], gpu)
            shown = (f"{figures['images_per_s']:8.1f} images/s ({figures['policy']})"
                     if "error" not in figures else f"failed: {figures['error']}")
            print(f"   {backbone} {alpha:g} {size}px  {device} {precision:8s} {shown}", flush=True)

    steps = 150 if args.quick else args.steps
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tinyvision-gpu-check-"))
    try:
        from tinyvision.data.demo import make_shapes_dataset

        data_root = make_shapes_dataset(workdir / "shapes", per_class=args.per_class)
        print(f"\n2. whole runs on the demo's shapes ({args.per_class} per class, {steps} steps)")
        for device, gpu, precision in rows:
            name = f"{device.lower()}-{precision}"
            figures = _child(["run", str(data_root), str(workdir / "runs"), name, precision,
                              steps], gpu)
            print(f"   {device} {precision:8s} " + (
                f"float {figures['float_accuracy']:.4f}  int8 {figures['int8_accuracy']:.4f}  "
                f"int8 {figures['int8_bytes']} bytes  TFLM bit-exact: "
                f"{figures['tflm_bit_exact']}  {figures['minutes']} min"
                if "error" not in figures else f"failed: {figures['error']}"), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{(time.perf_counter() - started) / 60:.1f} minutes in all")


if __name__ == "__main__":
    main()
