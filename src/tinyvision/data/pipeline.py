"""tf.data datasets fed from the image cache: shuffle indices, gather a batch, prefetch.

Images are gathered from the memmap a batch at a time (sorted reads, one numpy call), so the input
pipeline costs a memory copy per batch and the training step stays the bottleneck.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def cache_dataset(images: np.ndarray, indices: np.ndarray, targets: np.ndarray, batch_size: int,
                  shuffle: bool = False, seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """Batches of (float32 images 0..255, targets) for the samples `indices` of `images`.

    The model normalises its own input, so pixels stay in 0..255 here. With `shuffle`, the order
    is reshuffled every epoch from `seed` (deterministic for a given seed).
    """
    indices = np.asarray(indices, np.int64)
    targets = tf.constant(np.asarray(targets, np.float32))
    height, width, channels = images.shape[1:]

    def gather(batch_idx: np.ndarray) -> np.ndarray:
        order = np.argsort(batch_idx)
        out = np.empty((len(batch_idx), height, width, channels), np.uint8)
        out[order] = images[batch_idx[order]]  # sorted reads are sequential in the memmap
        return out

    def load(positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        rows = tf.gather(tf.constant(indices), positions)
        batch = tf.numpy_function(gather, [rows], tf.uint8, stateful=False)
        batch.set_shape([None, height, width, channels])
        return tf.cast(batch, tf.float32), tf.gather(targets, positions)

    ds = tf.data.Dataset.range(len(indices))
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
