"""The `search:` section: the candidate space and the budget of `tinyvision search`.

Each list is a set of choices for one setting; a list of one value fixes it. `None` (the default
of the first four) means the run config's own value only, so a search widens only what it is
told to, apart from the defaults below.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from tinyvision.config._base import Section
from tinyvision.config.model import ColorMode


class SearchConfig(Section):
    backbones: list[str] | None = Field(
        None, description="backbone names to try (default: the config's model.backbone)")
    alphas: list[float] = Field(
        default_factory=lambda: [0.25, 0.35, 0.5],
        description="width multipliers to try (MobileNets; other backbones ignore alpha)")
    input_sizes: list[int] = Field(
        default_factory=lambda: [64, 80, 96], description="square input sizes to try")
    color_modes: list[ColorMode] | None = Field(
        None, description="colour modes to try (default: the config's resolved model.color_mode)")
    dropouts: list[float] = Field(default_factory=lambda: [0.0, 0.2])
    learning_rate: tuple[float, float] = Field(
        (1e-3, 1e-2), description="log-uniform range of the (last stage's) learning rate")
    unfreeze_from: list[str | int | float] | None = Field(
        None, description="fine-tune starts to try (pretrained weights only)")
    trials: int = Field(20, ge=1, description="trials, pruned ones included")
    epochs: int = Field(
        8, ge=1, description="most epochs a trial trains (the halving pruner's full budget)")
    minutes: float | None = Field(
        None, gt=0, description="end the study after this long, with the best so far")
    storage: str | None = Field(
        None, description="an Optuna RDB URL shared by several machines; default: "
                          "sqlite in <runs_dir>/search/<study>.sqlite3")
    study: str | None = Field(None, description="study name (default: the config's name)")
    latency_ms: float | None = Field(
        None, gt=0, description="estimated latency limit on the board")
    retrain: bool = Field(
        True, description="retrain the best fitting candidate with the full recipe, export, "
                          "verify on TFLM and check the fit")

    @field_validator("alphas", "input_sizes", "dropouts")
    @classmethod
    def _not_empty(cls, value: list) -> list:
        if not value:
            raise ValueError("give at least one value")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"expected 0 < low <= high, got {list(value)}")
        return value
