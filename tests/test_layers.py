"""The architecture is enforced: import-linter's contract (pyproject.toml) keeps the layers of
docs/architecture.md and forbids cycles, and it fails on a deliberately upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(source_root: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def copy_of_the_package(tmp_path_factory) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "src" / "tinyvision", src / "tinyvision",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_the_package_keeps_its_layers(copy_of_the_package, tmp_path):
    result = _lint(copy_of_the_package, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(copy_of_the_package, tmp_path):
    """data/ (low) importing run/ (high), even inside a function, is refused and named."""
    cache = copy_of_the_package / "tinyvision" / "data" / "cache.py"
    original = cache.read_text()
    try:
        cache.write_text(original + "\n\ndef _upward():\n    from tinyvision.run import folder\n"
                         "    return folder\n")
        result = _lint(copy_of_the_package, tmp_path)
    finally:
        cache.write_text(original)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "tinyvision.data.cache -> tinyvision.run.folder" in \
        result.stdout
