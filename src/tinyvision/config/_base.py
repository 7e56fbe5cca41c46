"""What every config section shares: unknown keys are errors, assignments are validated, and each
choice is a `Literal` declared once (`choices` gives the frozen set code may need)."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def choices(literal: Any) -> frozenset[str]:
    """The values of a `Literal[...]` choice, for code that needs them as a set."""
    return frozenset(get_args(literal))
