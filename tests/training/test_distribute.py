"""`train.strategy: mirrored` trains with MirroredStrategy over two logical CPU devices.

Logical devices must be configured before TensorFlow starts, so the run happens in a subprocess."""

import json
import subprocess
import sys
import textwrap

import pytest

from helpers import make_class_folders, tiny_config

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tinyvision.config import validate_config
    from tinyvision.training.distribute import make_strategy
    from tinyvision.run.stages import prepare_data, train_stage
    from tinyvision.run.run import make_run_folder
    cfg = validate_config(json.loads(sys.argv[1]))
    strategy = make_strategy(cfg.train.strategy)
    cfg, run = make_run_folder(cfg)
    result = train_stage(cfg, run, prepare_data(cfg, run, progress=False))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "devices": list(strategy.extended.worker_devices),
                      "epochs": len(result.history),
                      "loss": [row["loss"] for row in result.history]}))
""")


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=8)
    raw = tiny_config(root, tmp_path / "runs")
    raw["train"].update(strategy="mirrored", head={"epochs": 1, "cache_features": False},
                        fine_tune={"epochs": 1, "unfreeze_from": 0})
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(raw)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and len(report["devices"]) == 2
    assert report["epochs"] == 2 and all(loss == loss for loss in report["loss"])  # not NaN


def test_unknown_strategy_is_a_config_error(tmp_path):
    from tinyvision.config import validate_config
    from tinyvision.errors import ConfigError

    raw = tiny_config(tmp_path, tmp_path / "runs")
    raw["train"]["strategy"] = "horovod"
    with pytest.raises(ConfigError, match=r"train.strategy.*'mirrored'.*received 'horovod'"):
        validate_config(raw)
