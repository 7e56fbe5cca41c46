"""Loading the CLI imports no TensorFlow: its stderr filter must be in place before TensorFlow
prints its start-up lines (a command module importing Keras at the top broke that once)."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_loads_without_tensorflow():
    code = ("import sys, tinyvision.cli.app; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
