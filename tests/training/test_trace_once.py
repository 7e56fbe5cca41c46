"""Each fit traces its train step once: the optimizer's variables exist before the first trace
(training/optimizers.build_optimizer_state). TensorFlow traces a function that creates variables
a second time, which doubled the start-up of every stage (about 4 s per stage at 32x32)."""

import keras
import pytest

from helpers import make_class_folders, tiny_config
from tinyvision.config import validate_config

pytestmark = pytest.mark.slow


def test_each_stage_traces_its_train_step_once(tmp_path, monkeypatch):
    from tinyvision.run.run import make_run_folder
    from tinyvision.run.stages import prepare_data, train_stage

    traced = []
    train_step = keras.Model.train_step

    def counted(self, data):  # runs only while TensorFlow traces the step
        traced.append(self.name)
        return train_step(self, data)

    monkeypatch.setattr(keras.Model, "train_step", counted)
    raw = tiny_config(make_class_folders(tmp_path / "images", per_class=8), tmp_path / "runs")
    raw["model"]["weights"] = "none"
    cfg, run = make_run_folder(validate_config(raw))
    result = train_stage(cfg, run, prepare_data(cfg, run, progress=False))
    stages = {row["stage"] for row in result.history}
    assert stages == {"head", "fine_tune"}
    assert len(traced) == 2, traced  # one trace per stage, not two
