"""tf.data datasets fed from the image cache: shuffle indices, gather a batch, augment, prefetch.

Images are gathered from the image cache a batch at a time (sorted positioned reads), so the input
pipeline costs a memory copy per batch and the training step stays the bottleneck. Augmentation
(training only: pass `augment` for the training split and never for val/test/calibration) runs in
the same parallel map, vectorised over the batch and seeded per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tinyvision.data.augment import Augmenter


def cache_dataset(images: np.ndarray, indices: np.ndarray, targets: np.ndarray | None,
                  batch_size: int,
                  shuffle: bool = False, seed: int = 0, repeat: bool = False,
                  augment: Sequence | None = None,
                  boxes: np.ndarray | None = None, steps_per_epoch: int | None = None,
                  first_epoch: int = 0, shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """Batches of (float32 images 0..255, targets) for the samples `indices` of `images`.

    The model normalises its own input, so pixels stay in 0..255 here. With `shuffle`, the order
    is reshuffled every epoch from `seed` (deterministic for a given seed). `augment`: the
    `train.augment` ops (dicts or config models), applied on the fly, seeded from `seed`.
    `boxes` (detection): float32 (len(indices), 4) normalised xyxy aligned with `targets`, NaN
    rows for samples without a box; targets become `(class_targets, box)` (or the box alone when
    `targets` is None: a one-class box model) and geometric ops move the box with the image.
    With `steps_per_epoch` (training: shuffle and repeat), epoch e's batches and augmentation
    depend only on (seed, e), and the stream starts at `first_epoch`: a resumed run sees exactly
    the batches an uninterrupted one would (`training_batches`).
    `shard` (index, count): one of `count` workers training together; each batch of `batch_size`
    is cut into `count` equal parts and this dataset reads only part `index` from the cache (the
    parts of all workers make up the batch one worker would read).
    """
    indices = np.asarray(indices, np.int64)
    columns = {} if targets is None else {"targets": np.asarray(targets, np.float32)}
    if boxes is not None:
        columns["boxes"] = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not columns:
        raise ValueError("cache_dataset needs targets, boxes or both")
    _check_lengths(len(indices), columns)
    augmenter = (Augmenter(augment, images.shape[1:], detection=boxes is not None)
                 if augment else None)
    read = _batch_reader(images, indices)
    tables = {name: tf.constant(values) for name, values in columns.items()}

    def load(positions: tf.Tensor, rnd: tf.Tensor | None = None):
        x = read(positions)
        col = {name: tf.gather(table, positions) for name, table in tables.items()}
        box = col.get("boxes")
        if augmenter is None:
            x = tf.cast(x, tf.float32)
        else:  # warps the uint8 pixels (cheaper), returns float32
            x, box = augmenter(x, box, tf.stack([rnd, tf.constant(seed, tf.int64)]))
        if box is None:
            return x, col["targets"]
        return x, (box if "targets" not in col else (col["targets"], box))

    ds = position_batches(len(indices), batch_size, shuffle, seed, repeat, steps_per_epoch,
                          first_epoch)
    if shard is not None:
        ds = ds.map(lambda positions, batch_seed: shard_of_batch(positions, batch_seed, *shard))
    if augmenter is None:
        ds = ds.map(lambda positions, batch_seed: positions)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def shard_of_batch(positions: tf.Tensor, batch_seed: tf.Tensor, index: int, count: int
                   ) -> tuple[tf.Tensor, tf.Tensor]:
    """Worker `index` of `count`'s equal part of a batch of positions, with a seed of its own (the
    workers' parts would otherwise be augmented alike)."""
    size = tf.shape(positions)[0] // count
    part = positions[index * size:(index + 1) * size]
    return part, batch_seed * count + index


def position_batches(n: int, batch_size: int, shuffle: bool = False, seed: int = 0,
                     repeat: bool = False, steps_per_epoch: int | None = None,
                     first_epoch: int = 0) -> tf.data.Dataset:
    """(positions, batch seed) batches over range(n): the order shared by every dataset here.

    Training (shuffle, repeat and `steps_per_epoch`) uses `training_batches`; otherwise a plain
    (optionally reshuffled) order, each batch with a fresh random seed.
    """
    if steps_per_epoch is not None and shuffle and repeat:
        return training_batches(n, batch_size, steps_per_epoch, seed, first_epoch)
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return tf.data.Dataset.zip(ds.batch(batch_size),
                               tf.data.Dataset.random(seed, rerandomize_each_iteration=True))


def training_batches(n: int, batch_size: int, steps_per_epoch: int, seed: int,
                     first_epoch: int = 0) -> tf.data.Dataset:
    """Endless (positions, batch number) for training, epoch by epoch from `first_epoch`.

    Epoch e is `steps_per_epoch` batches drawn from permutations of range(n) seeded by (seed, e)
    (a new permutation whenever one runs out), and a batch's number is e * steps + its step, so
    batches and their augmentation seeds are a function of (seed, e) alone.
    """
    seed_t = tf.constant(seed, tf.int64)

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        def permutation(p: tf.Tensor) -> tf.Tensor:
            key = tf.stack([seed_t, e * 1_000_003 + p])
            return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), key)

        batches = (tf.data.Dataset.range(1_000_000).map(permutation).unbatch()
                   .batch(batch_size).take(steps_per_epoch).enumerate())
        return batches.map(lambda step, positions: (positions, e * steps_per_epoch + step))

    return tf.data.Dataset.range(first_epoch, 1 << 40).flat_map(epoch)


def _batch_reader(images: np.ndarray, indices: np.ndarray):
    """positions (B,) -> uint8 (B, H, W, C) images of `indices[positions]`, read from `images`."""
    height, width, channels = images.shape[1:]
    rows_of = tf.constant(indices)

    def gather(batch_idx: np.ndarray) -> np.ndarray:
        # the cache (data.cache.CachedImages) sorts the reads itself, one read per run of indices
        return np.asarray(images[batch_idx], np.uint8)

    def read(positions: tf.Tensor) -> tf.Tensor:
        batch = tf.numpy_function(gather, [tf.gather(rows_of, positions)], tf.uint8,
                                  stateful=False)
        batch.set_shape([None, height, width, channels])
        return batch

    return read


def _check_lengths(n: int, columns: dict[str, np.ndarray]) -> None:
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"cache_dataset: `{name}` has {len(values)} rows but `indices` has "
                             f"{n}; pass one row per index (e.g. {name}[indices]).")
