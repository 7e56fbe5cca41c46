"""cache_dataset: plain batches as before, augmentation, detection targets, a two-output fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tinyvision.data.pipeline import cache_dataset

N, H, W = 10, 16, 16


def _memmap(tmp_path, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    path = tmp_path / "images.u8"
    images = np.memmap(path, np.uint8, "w+", shape=(N, H, W, channels))
    images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
    images.flush()
    return np.memmap(path, np.uint8, "r", shape=(N, H, W, channels))


def test_plain_batches_are_the_cached_pixels_in_order(tmp_path):
    images = _memmap(tmp_path)
    indices = np.array([7, 2, 5, 0, 9])
    targets = np.eye(5, dtype=np.float32)
    batches = list(cache_dataset(images, indices, targets, batch_size=2))
    assert [len(x) for x, _ in batches] == [2, 2, 1]
    x = np.concatenate([b[0] for b in batches])
    np.testing.assert_array_equal(x, images[indices].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), targets)


def test_shuffle_is_seeded(tmp_path):
    images = _memmap(tmp_path)
    order = [np.concatenate([y.numpy().argmax(1) for _, y in
                             cache_dataset(images, np.arange(N), np.eye(N), 4, shuffle=True,
                                           seed=s)]) for s in (1, 1, 2)]
    np.testing.assert_array_equal(order[0], order[1])
    assert sorted(order[0]) == list(range(N)) and not np.array_equal(order[0], order[2])


def test_augmentation_is_seeded_and_new_each_epoch(tmp_path):
    images = _memmap(tmp_path, channels=1)
    augment = [{"op": "rotation", "degrees": 20}, {"op": "brightness", "delta": 0.1}]

    def epochs(seed: int, count: int = 2) -> list[np.ndarray]:
        ds = cache_dataset(images, np.arange(N), np.zeros((N, 2)), 4, seed=seed, augment=augment)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(count)]

    first, second = epochs(3)
    np.testing.assert_array_equal(first, epochs(3, 1)[0])  # same seed, same augmentation
    assert not np.allclose(first, second)  # a new draw every epoch
    assert not np.allclose(first, images[:].astype(np.float32))
    assert first.shape == (N, H, W, 1) and first.min() >= 0 and first.max() <= 255


def test_boxes_make_class_and_box_targets(tmp_path):
    images = _memmap(tmp_path)
    boxes = np.tile([[0.2, 0.3, 0.6, 0.7]], (N, 1)).astype(np.float32)
    boxes[1] = np.nan
    ds = cache_dataset(images, np.arange(N), np.eye(N)[:, :3], 4, boxes=boxes,
                       augment=[{"op": "flip", "mode": "horizontal", "probability": 1.0}])
    x, (y, box) = next(iter(ds))
    assert x.shape == (4, H, W, 3) and y.shape == (4, 3) and box.shape == (4, 4)
    np.testing.assert_allclose(box.numpy()[0], [0.4, 0.3, 0.8, 0.7], atol=1e-6)
    assert np.isnan(box.numpy()[1]).all()
    x, (y, box) = next(iter(cache_dataset(images, np.arange(N), np.eye(N), 4, boxes=boxes)))
    np.testing.assert_array_equal(box, boxes[:4])  # no augmentation: boxes as given


def test_rows_must_match_indices(tmp_path):
    with pytest.raises(ValueError, match=r"`boxes` has 3 rows but `indices` has 10"):
        cache_dataset(_memmap(tmp_path), np.arange(N), np.zeros((N, 2)), 4, boxes=np.zeros((3, 4)))


def test_two_output_model_trains_on_class_and_box_targets(tmp_path):
    images = _memmap(tmp_path)
    boxes = np.tile([[0.2, 0.3, 0.6, 0.7]], (N, 1)).astype(np.float32)
    inputs = keras.Input((H, W, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = [keras.layers.Dense(2, activation="softmax", name="class")(features),
               keras.layers.Dense(4, activation="sigmoid", name="box")(features)]
    model = keras.Model(inputs, outputs)
    model.compile("adam", ["categorical_crossentropy", "mae"])
    ds = cache_dataset(images, np.arange(N), np.eye(2)[np.arange(N) % 2], 4, shuffle=True,
                       repeat=True, boxes=boxes, augment=[{"op": "zoom", "range": 0.2}])
    history = model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


class _RecordingImages:
    """An image cache that records which rows each read asked for."""

    def __init__(self, images: np.ndarray):
        self.images, self.rows = images, []
        self.shape, self.dtype = images.shape, images.dtype

    def __getitem__(self, rows):
        self.rows.append(np.asarray(rows).tolist())
        return self.images[rows]


def test_each_worker_reads_only_its_part_of_every_training_batch(tmp_path):
    images = _memmap(tmp_path)
    indices = np.arange(N)
    stream = {"shuffle": True, "repeat": True, "seed": 4, "steps_per_epoch": 3}
    whole = [y.numpy().argmax(1) for _, y in
             cache_dataset(images, indices, np.eye(N), 4, **stream).take(6)]
    parts, read = [], []
    for worker in (0, 1):
        recording = _RecordingImages(images)
        ds = cache_dataset(recording, indices, np.eye(N), 4, shard=(worker, 2), **stream)
        batches = list(ds.take(6))
        parts.append([y.numpy().argmax(1) for _, y in batches])
        for x, y in batches:  # the pixels are the rows of the targets' samples
            np.testing.assert_array_equal(x.numpy(), images[y.numpy().argmax(1)])
        read.append(recording.rows)
    for step in range(6):  # the two halves make up the batch one worker would read
        np.testing.assert_array_equal(np.concatenate([parts[0][step], parts[1][step]]),
                                      whole[step])
    # every read of either worker asked for its 2 images, never the whole batch of 4
    assert read[0] and read[1] and {len(rows) for rows in read[0] + read[1]} == {2}


def test_workers_augment_their_parts_differently(tmp_path):
    images = np.zeros((N, H, W, 3), np.uint8) + 100
    augment = [{"op": "brightness", "delta": 0.3}]
    stream = {"shuffle": True, "repeat": True, "seed": 4, "steps_per_epoch": 3, "augment": augment}
    first = [next(iter(cache_dataset(images, np.arange(N), np.eye(N), 4, shard=(w, 2),
                                     **stream)))[0].numpy() for w in (0, 1)]
    assert not np.allclose(first[0], first[1])
