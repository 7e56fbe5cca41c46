"""Head stage with cached backbone features vs training through the frozen backbone.

MobileNet V1 0.25 at 96x96, the backbone frozen, the head trained with the same optimizer, batch and
data either way. Prints seconds per epoch (steady state: the first epoch of each, which compiles,
is timed separately), the one-off feature extraction, and the two ratios the issue asks for:
per epoch (target >= 50x) and 10 head epochs including the extraction (target >= 6x).

    python benchmarks/bench_fast_head.py [--images 4000] [--epochs 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tinyvision.config import ModelConfig  # noqa: E402
from tinyvision.data.pipeline import cache_dataset  # noqa: E402
from tinyvision.models.build import build_model, is_head_layer  # noqa: E402
from tinyvision.training.features import extract_features, feature_dataset, split_at_features  # noqa: E402


def timed_epochs(model, dataset, steps: int, epochs: int) -> list[float]:
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[Clock()])
    return times


def one_round(images, targets, batch: int, epochs: int) -> dict[str, float]:
    """One side-by-side measurement on a fresh model: seconds for each part."""
    indices = np.arange(len(images))
    steps = int(np.ceil(len(images) / batch))
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(weights="none"), 3, "multiclass")
    for layer in model.layers:
        layer.trainable = is_head_layer(layer)

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    through = timed_epochs(model, cache_dataset(images, indices, targets, batch, shuffle=True,
                                                repeat=True), steps, 3)

    start = time.perf_counter()
    extractor, head = split_at_features(model)
    features = extract_features(extractor, images, indices)
    extraction = time.perf_counter() - start
    # as the trainer does: one call per epoch, so per-step Python overhead does not dominate
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                 steps_per_execution=steps)
    cached = timed_epochs(head, feature_dataset(features, targets, batch, shuffle=True,
                                                repeat=True), steps, max(epochs, 3))
    through_epoch, cached_epoch = float(np.median(through[1:])), float(np.median(cached[1:]))
    return {"through_first": through[0], "through_epoch": through_epoch,
            "extraction": extraction, "cached_first": cached[0], "cached_epoch": cached_epoch,
            "through_total": through[0] + (epochs - 1) * through_epoch,
            "cached_total": extraction + cached[0] + (epochs - 1) * cached_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="side-by-side repeats (median kept)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 96, 96, 3), dtype=np.uint8)
    targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, args.images)]
    rounds = []
    for number in range(args.rounds):
        rounds.append(one_round(images, targets, args.batch, args.epochs))
        r = rounds[-1]
        print(f"round {number + 1}: through {r['through_total']:.1f} s, cached {r['cached_total']:.1f} s "
              f"(extraction {r['extraction']:.2f} s) = {r['through_total'] / r['cached_total']:.1f}x, "
              f"per epoch {r['through_epoch'] / r['cached_epoch']:.1f}x  "
              f"(load average {os.getloadavg()[0]:.1f})")
    m = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
    print(f"\nimages {args.images}, batch {args.batch}, MobileNet V1 0.25 96x96, backbone frozen, "
          f"median of {args.rounds} round(s):")
    print(f"through the frozen backbone: first epoch {m['through_first']:.2f} s, then "
          f"{m['through_epoch']:.3f} s/epoch")
    print(f"cached features: extraction {m['extraction']:.2f} s, first epoch {m['cached_first']:.2f} s, "
          f"then {m['cached_epoch']:.4f} s/epoch")
    print(f"per-epoch speed-up (steady state): {m['through_epoch'] / m['cached_epoch']:.1f}x "
          "(target >= 50x)")
    print(f"{args.epochs} head epochs including extraction: {m['through_total']:.1f} s vs "
          f"{m['cached_total']:.1f} s = {m['through_total'] / m['cached_total']:.1f}x (target >= 6x)")


if __name__ == "__main__":
    main()
