"""docs/security.md names the test that holds each promise: every file and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_security_page_names_exists():
    text = (ROOT / "docs" / "security.md").read_text()
    named = 0
    for cell in re.findall(r"\| ([^|]*`[^|]*\.py[^|]*) \|\n", text):
        current = None
        for ref in re.findall(r"`([\w/]*\.py)?(?:::(\w+))?`", cell):
            path, test = ref
            if path:
                current = ROOT / "tests" / path
                assert current.is_file(), f"docs/security.md names {path}, which does not exist"
            if test:
                assert current is not None and f"def {test}(" in current.read_text(), \
                    f"docs/security.md names {test} in {current}, which does not define it"
                named += 1
    assert named >= 15
