"""What the package asks pip for: dependencies without known CVEs."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _minimum(requirement: str) -> tuple[int, ...]:
    found = re.search(r">=\s*([\d.]+)", requirement)
    assert found, f"{requirement} has no lower bound"
    return tuple(int(p) for p in found.group(1).split("."))


def test_pillow_is_at_least_10_3():
    """Pillow before 10.3 has known CVEs (e.g. CVE-2024-28219, a buffer overflow)."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pillow = next(d for d in dependencies if d.lower().startswith("pillow"))
    assert _minimum(pillow) >= (10, 3)
    assert tuple(int(p) for p in version("pillow").split(".")[:2]) >= (10, 3)
