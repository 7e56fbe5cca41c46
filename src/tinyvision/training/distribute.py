"""tf.distribute strategies named in the config (`train.strategy`); no home-made distribution.

- none: the default strategy (one device).
- mirrored: synchronous data parallelism over this machine's GPUs, or over its logical CPU
  devices when it has no GPU and more than one logical CPU is configured.
- multi_worker: MultiWorkerMirroredStrategy; the cluster comes from the TF_CONFIG environment
  variable as tf.distribute documents (without it: a single worker).
"""

from __future__ import annotations

import tensorflow as tf

def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy `train.strategy` names (config.train.Strategy, checked by the config)."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)
