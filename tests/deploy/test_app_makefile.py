"""The exported application's Makefile names its own files relative to its folder and quotes the
paths it is given, so `make -C export/app` works wherever the run folder is, spaces and `$(...)`
in its name included, and never runs a command hidden in a path."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from helpers import fake_tflm_tree, handbuilt_run


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="no make or cc")
def test_make_builds_the_app_in_a_folder_named_with_a_space_and_a_dollar(tmp_path):
    tree = fake_tflm_tree(tmp_path / "tflm")
    _, run, _, _ = handbuilt_run(tmp_path)
    export = tmp_path / "my runs $(touch PWNED)" / "export"
    shutil.copytree(run.export_dir, export)
    done = subprocess.run(["make", "--no-print-directory", "-C", str(export / "app"),
                           f"TFLM_ROOT={tree}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (export / "app" / "build" / "app").is_file()
    assert not list(tmp_path.rglob("PWNED"))


def test_verify_compiles_the_c_it_generates_and_catches_a_changed_byte(tmp_path, monkeypatch):
    """With a stand-in tree (real C preprocessing, Python TFLM), verify checks the application
    it writes afresh; a broken generator (a rounding constant) is named byte for byte."""
    import json

    from tinyvision.deploy import camera_c, tflm_build
    from tinyvision.errors import VerifyError
    from tinyvision.run.stages import prepare_data, verify_stage

    monkeypatch.setenv(tflm_build.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(tflm_build.SOURCE_ENV, str(fake_tflm_tree(tmp_path / "tflm")))
    cfg, run, _, _ = handbuilt_run(tmp_path, deploy={"camera": {
        "format": "yuv422", "width": 64, "height": 48, "interpolation": "bilinear"}},
        data={"resize": "letterbox"}, verify={"app_frames": 4})
    app = json.loads(run.verify.read_text())["app"]
    assert app["checked"] and app["frames"] == 4 and app["inputs_equal"]
    generate = camera_c.camera_source
    monkeypatch.setattr(camera_c, "camera_source", lambda plan: generate(plan).replace(
        "(1 << 15)) >> 16]", "(1 << 14)) >> 16]"))
    with pytest.raises(VerifyError, match="application's input tensor differ from the Python"):
        verify_stage(cfg, run, prepare_data(cfg, run, progress=False))
