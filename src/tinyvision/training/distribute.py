"""tf.distribute strategies named in the config (`train.strategy`); no home-made distribution.

- none: the default strategy (one device).
- mirrored: synchronous data parallelism over this machine's GPUs, or over its logical CPU
  devices when it has no GPU and more than one logical CPU is configured.
- multi_worker: MultiWorkerMirroredStrategy; the cluster comes from the TF_CONFIG environment
  variable as tf.distribute documents (without it: a single worker). Every worker runs the same
  `tinyvision train`; worker 0 (the chief) keeps the run, the others train their share of each
  batch in a folder of their own (`run.run.full_run`). docs/training.md, "Several workers".
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import tensorflow as tf

from tinyvision.errors import ConfigError

_MULTI_WORKER: list[tf.distribute.Strategy] = []  # one per process: it configures TensorFlow


class WorkerRole(NamedTuple):
    """This process's place in a TF_CONFIG cluster of several workers."""

    index: int
    count: int

    @property
    def chief(self) -> bool:
        return self.index == 0


def worker_role() -> WorkerRole | None:
    """The worker index and count TF_CONFIG gives, or None outside a cluster of several."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    workers = (config.get("cluster") or {}).get("worker") or []
    if len(workers) < 2:
        return None
    return WorkerRole(int((config.get("task") or {}).get("index", 0)), len(workers))


def check_worker_batch(batch_size: int, role: WorkerRole | None) -> None:
    """Each worker trains an equal part of every batch: the batch must split evenly."""
    if role is not None and batch_size % role.count:
        raise ConfigError(f"train.batch_size {batch_size} does not split evenly between "
                          f"{role.count} workers (TF_CONFIG): give a multiple of {role.count}.")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy `train.strategy` names (config.train.Strategy, checked by the config).

    multi_worker: TensorFlow configures its collective ops when the strategy is made, which it
    can do only before it runs any op, so `full_run` makes it first and later calls get the
    same one."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        if not _MULTI_WORKER:
            _keras_multi_worker_fixes()
            _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
        return _MULTI_WORKER[0]
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def _keras_multi_worker_fixes() -> None:
    """Keras 3's TensorFlow trainer cannot `fit` under MultiWorkerMirroredStrategy (tensorflow
    issue 72388): before the first step it averages a data batch across workers with
    `strategy.reduce`, and after each step it averages the scalar logs with `axis=0`; both fail.
    The model is built from this worker's part of the batch instead, and scalar logs are averaged
    without an axis. Applied only when a multi_worker strategy is made."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_tinyvision_multi_worker", False):
        return
    reduce_per_replica = trainer.reduce_per_replica

    def symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:  # as Keras: built when the step is traced
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_logs(values, strategy, reduction):
        if trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto",
                                                                                   "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    trainer.reduce_per_replica = reduce_logs
    trainer._tinyvision_multi_worker = True
