"""The CLI keeps TensorFlow's native start-up and converter lines off the terminal unless
--verbose asks for them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import handbuilt_run

pytestmark = pytest.mark.slow

NOISE = ("oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit",
         "All log messages before absl::InitializeLog", "fully_quantize:",
         "This TensorFlow binary is optimized")


def _export(run_root, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyvision.cli", *flags, "export", str(run_root)],
                          capture_output=True, text=True, timeout=600)


def test_a_command_prints_none_of_tensorflows_startup_lines(tmp_path):
    _, run, _, _ = handbuilt_run(tmp_path)
    quiet = _export(run.root)
    assert quiet.returncode == 0, quiet.stderr
    output = quiet.stdout + quiet.stderr
    assert "int8 model:" in output
    assert not [line for line in NOISE if line in output], output
    verbose = _export(run.root, "--verbose")
    assert verbose.returncode == 0 and "oneDNN custom operations" in verbose.stderr
