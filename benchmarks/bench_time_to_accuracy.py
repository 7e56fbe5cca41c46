"""Time to accuracy on the demo task: `tinyvision train` vs the notebook recipe.

Baseline (what the notebooks do): keras.utils.image_dataset_from_directory on the JPEG folders,
the same backbone (MobileNet V1 0.25, 96x96, from scratch: no weights can be downloaded here),
Adam 1e-3, early stopping on validation accuracy (patience 5, best weights restored).
tinyvision: the demo config (`tinyvision.data.demo.demo_config`), cache build included.
Both train on the same train/ folder and are scored on the same val/ folder. For each seed (both
sides use it), prints the baseline's best validation accuracy and wall time, the wall time
tinyvision needs to first reach that accuracy, and the ratio (target <= 0.5 for every seed).

    python benchmarks/bench_time_to_accuracy.py [--seeds 0 1 2] [--per-class 1200]
        [--max-epochs 40] [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinyvision.config import validate_config  # noqa: E402
from tinyvision.data.demo import SHAPES, demo_config, make_shapes_dataset  # noqa: E402


def split_folders(source: Path, target: Path, val_every: int = 5) -> Path:
    """source/<class>/*.jpg -> target/{train,val}/<class>/ (every 5th image to val)."""
    for shape in SHAPES:
        for i, image in enumerate(sorted((source / shape).glob("*.jpg"))):
            split = "val" if i % val_every == 0 else "train"
            (target / split / shape).mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, target / split / shape / image.name)
    return target


def baseline(root: Path, max_epochs: int, seed: int = 0
             ) -> tuple[float, float, list[tuple[float, float]]]:
    """(best val accuracy, total wall seconds, [(seconds since start, val accuracy)] per epoch)."""
    start = time.perf_counter()
    load = dict(image_size=(96, 96), batch_size=32, label_mode="categorical", seed=seed)
    train = keras.utils.image_dataset_from_directory(root / "train", shuffle=True, **load)
    val = keras.utils.image_dataset_from_directory(root / "val", shuffle=False, **load)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.applications.MobileNet(input_tensor=x, include_top=False, weights=None,
                                     alpha=0.25).output
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(SHAPES), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    curve = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            curve.append((time.perf_counter() - start, float(logs["val_accuracy"])))

    stop = keras.callbacks.EarlyStopping("val_accuracy", patience=5, restore_best_weights=True)
    model.fit(train.prefetch(tf.data.AUTOTUNE), validation_data=val, epochs=max_epochs,
              callbacks=[Clock(), stop], verbose=0)
    return max(a for _, a in curve), time.perf_counter() - start, curve


def tinyvision_curve(root: Path, runs: Path, seed: int = 0) -> list[tuple[float, float]]:
    """[(seconds since start, val accuracy)] per epoch of `tinyvision train` with the demo config
    (its settings resolved as `tinyvision train` resolves them: colour mode, recipe)."""
    from tinyvision.run.run import make_run_folder
    from tinyvision.run.stages import prepare_data, prepare_manifest, resolve_settings, train_stage

    start = time.perf_counter()
    raw = demo_config(root, runs)
    raw["seed"] = seed
    raw["data"] |= {"test_fraction": 0.0, "val_fraction": 0.0}  # the val/ folder is the val split
    cfg, run = make_run_folder(validate_config(raw))
    manifest = prepare_manifest(cfg, run)
    cfg, _ = resolve_settings(cfg, manifest)
    data = prepare_data(cfg, run, manifest, progress=False)
    train_stage(cfg, run, data)
    total = time.perf_counter() - start
    with open(run.log) as handle:
        rows = list(csv.DictReader(handle))
    epoch_seconds = [float(r["seconds"]) for r in rows]
    overhead = total - sum(epoch_seconds)  # data, model build, compile: all counted up front
    curve, elapsed = [], overhead
    for row, seconds in zip(rows, epoch_seconds):
        elapsed += seconds
        curve.append((elapsed, float(row["val_accuracy"])))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1200)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, help="a demo dataset folder (default: generate one)")
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.data or make_shapes_dataset(tmp / "shapes", args.per_class)
        root = split_folders(source, tmp / "split")
        for seed in args.seeds:
            best, base_seconds, base_curve = baseline(root, args.max_epochs, seed)
            keras.backend.clear_session()
            curve = tinyvision_curve(root, tmp / f"runs-{seed}", seed)
            keras.backend.clear_session()
            reached = next((seconds for seconds, acc in curve if acc >= best), None)
            print(f"seed {seed}: baseline (image_dataset_from_directory + Adam 1e-3 + early "
                  f"stopping): best val accuracy {best:.4f} after {len(base_curve)} epochs, "
                  f"{base_seconds:.0f} s")
            print(f"seed {seed}: tinyvision train (demo config): final val accuracy "
                  f"{curve[-1][1]:.4f} after {len(curve)} epochs, {curve[-1][0]:.0f} s")
            if reached is None:
                print(f"seed {seed}: tinyvision never reached the baseline's best accuracy")
                ratios.append(None)
            else:
                ratios.append(reached / base_seconds)
                print(f"seed {seed}: tinyvision reached {best:.4f} at {reached:.0f} s: ratio "
                      f"{reached / base_seconds:.2f} (target <= 0.5)", flush=True)
    shown = ", ".join("never" if r is None else f"{r:.2f}" for r in ratios)
    held = all(r is not None and r <= 0.5 for r in ratios)
    print(f"ratios over seeds {args.seeds}: {shown}; target <= 0.5 for every seed: "
          f"{'held' if held else 'MISSED'}")


if __name__ == "__main__":
    main()
