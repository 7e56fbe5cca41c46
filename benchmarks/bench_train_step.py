"""Training-step speed: tinyvision's training step vs Keras 3 `fit` vs tf-keras `fit`, one model.

The model is MobileNet V1 0.25 at 96x96x3 with a 10-class head, trained from scratch with AdamW on
random in-memory images at batch 64 (the input pipeline is not measured here; see
bench_input_pipeline.py). Each variant runs in its own process (TensorFlow's settings and the two
Keras versions do not mix), the variants alternate over rounds (the order rotating from round to
round), and the median of each is printed with its ratio to Keras 3 `fit`:

- keras3: keras.applications.MobileNet, `model.fit` (Keras 3, unfused BatchNorm);
- tinyvision: the model `tinyvision.models.build` makes, trained as the trainer trains it
  (fused BatchNorm, training/fused_batchnorm.py; the strided convolutions' ZeroPadding2D folded
  into "same" padding, training/folded_padding.py; groups of steps per call of the train
  function, training/step_groups.py; jit_compile as training.trainer.JIT_COMPILE);
- tinyvision_bf16: the same with Keras' mixed_bfloat16 policy (bfloat16 compute on the CPU's
  AVX512-BF16/AMX units, float32 weights);
- tf_keras: tf_keras.applications.MobileNet, `model.fit` (Keras 2; `pip install tf-keras`).

What is timed is the step: each variant makes one `fit` call of 4 epochs (the first traces the
step) and keeps its fastest timed epoch, from the epoch's start to its end. Until 2026-12 each
timed epoch was a `fit` call of its own, which also timed what Keras 3's `fit` does after its last
epoch: tearing down its dataset iterator, which at times waits up to ~1.3 s (for tf.data's
autotuning thread: the wait is gone with `options.autotune.enabled = False`), a third of a 24-step
epoch. That time is printed on its own ("fit outside its epochs"). In a tinyvision run it comes
once per stage.

    python benchmarks/bench_train_step.py [--rounds 3] [--batch 64] [--images 1536]
                                          [--variants tinyvision tf_keras]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = ("keras3", "tinyvision", "tinyvision_bf16", "tf_keras")


def epoch_clock(keras):
    """A callback of `keras` (Keras 3 or tf_keras) keeping each epoch's wall time in `.seconds`,
    from its first step to its last: the steps alone, without what `fit` does before the first
    epoch and after the last (see the module docstring)."""

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    return EpochClock()


def measure(variant: str, batch: int, images: int, epochs: int = 3) -> dict[str, float]:
    """Best images/s of `epochs` timed epochs of one `fit` call, after one epoch that traces the
    step; and the seconds that call spent outside its epochs (set-up and tear-down)."""
    import numpy as np

    if variant == "tf_keras":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 96, 96, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, images)]
    if variant.startswith("tinyvision"):
        import keras

        from tinyvision.config import ModelConfig
        from tinyvision.models.build import build_model
        from tinyvision.training.fused_batchnorm import use_fused_batchnorm

        if variant == "tinyvision_bf16":  # bfloat16 compute, float32 weights (AMX / AVX512-BF16)
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = build_model(ModelConfig(weights="none", alpha=0.25, input_size=96,
                                        color_mode="rgb"), 10, "multiclass")
        use_fused_batchnorm(model)
    else:
        keras = __import__("tf_keras" if variant == "tf_keras" else "keras")
        inputs = keras.Input((96, 96, 3))
        h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
        h = keras.applications.MobileNet(input_tensor=h, include_top=False, weights=None,
                                         alpha=0.25).output
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    # tinyvision compiles as its trainer does (training.trainer.JIT_COMPILE); the peers with
    # their defaults
    steps = images // batch
    options = {}
    if variant.startswith("tinyvision"):
        from tinyvision.training.step_groups import group_size
        from tinyvision.training.trainer import JIT_COMPILE
        options.update(jit_compile=JIT_COMPILE, steps_per_execution=group_size(steps, JIT_COMPILE))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss="categorical_crossentropy", metrics=["accuracy"], **options)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(2)

    clock = epoch_clock(keras)
    callbacks = [clock]
    fold = contextlib.nullcontext()
    if variant.startswith("tinyvision"):  # as the trainer fits
        from tinyvision.training.folded_padding import folded_padding
        from tinyvision.training.optimizers import build_optimizer_state
        from tinyvision.training.step_groups import StepGroups

        build_optimizer_state(model)
        fold = folded_padding(model)
        if options["steps_per_execution"] > 1:
            callbacks.insert(0, StepGroups(model, options["steps_per_execution"], steps,
                                           lambda: 10**9))
    start = time.perf_counter()
    with fold:
        model.fit(data, epochs=1 + epochs, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    fit_seconds = time.perf_counter() - start
    timed = clock.seconds[1:]  # the first epoch traces the step
    return {"images_per_s": steps * batch / min(timed),
            "fit_overhead_s": fit_seconds - sum(clock.seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="which variants to measure (keras3 is always measured: the base)")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.images)))
        return
    variants = [v for v in VARIANTS if (v in args.variants or v == "keras3")
                and (v != "tf_keras" or importlib.util.find_spec("tf_keras") is not None)]
    if "tf_keras" in args.variants and "tf_keras" not in variants:
        print("tf_keras is not installed (pip install tf-keras): measuring without it")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results: dict[str, list[float]] = {v: [] for v in variants}
    overheads: dict[str, list[float]] = {v: [] for v in variants}
    for round_number in range(args.rounds):
        shift = round_number % len(variants)  # each variant takes each place in the order in turn
        for variant in variants[shift:] + variants[:shift]:
            out = subprocess.run([sys.executable, __file__, "--one", variant, "--batch",
                                  str(args.batch), "--images", str(args.images)],
                                 capture_output=True, text=True, env=env, check=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            value = figures["images_per_s"]
            results[variant].append(value)
            overheads[variant].append(figures["fit_overhead_s"])
            print(f"round {round_number + 1}: {variant:15s} {value:7.1f} images/s  (fit outside "
                  f"its epochs: {figures['fit_overhead_s']:.2f} s)", flush=True)
    base = statistics.median(results["keras3"])
    print(f"\nMobileNet V1 0.25, 96x96x3, batch {args.batch}, AdamW; median of {args.rounds} "
          "rounds (each: the best of 3 epochs of one fit call)")
    for variant, values in results.items():
        median = statistics.median(values)
        print(f"{variant:15s} {median:7.1f} images/s  x{median / base:.2f} of Keras 3 fit  "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)}); fit outside its epochs: "
              f"median {statistics.median(overheads[variant]):.2f} s")


if __name__ == "__main__":
    main()
