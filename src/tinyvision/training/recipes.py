"""Training recipes (`train.recipe`): the defaults that suit how the network starts.

- `pretrained` (model.weights loads trained weights): today's two stages, the head on a frozen
  backbone, then fine-tuning from three quarters of the way through the backbone.
- `scratch` (model.weights: none): one stage in which every layer trains, BatchNorm momentum 0.9,
  AdamW with warm-up then cosine at a rate scaled with the batch size, augmentation suited to the
  task, no early stopping (the schedule ends the run), enough steps for a small set.

`auto` picks one from `model.weights`. A recipe only fills in what the config leaves out: every
key the config (or a `key=value` override) sets wins, and the run's config.yaml holds the result.
The scratch values were measured on real photo sets (docs/training.md, bench_recipes.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tinyvision.config import RunConfig, validate_config

SCRATCH_BATCH_SIZE = 64
SCRATCH_LEARNING_RATE = 5e-3  # AdamW at batch 64; other batches: x sqrt(batch / 64)
SCRATCH_EPOCHS = 40
SCRATCH_MIN_STEPS = 1500  # a small set trains for more epochs rather than stopping half-learnt
SCRATCH_BN_MOMENTUM = 0.9  # statistics of random layers move fast; 0.99 lags behind them
PRETRAINED_MIN_STEPS = 200
MIN_BATCHES_PER_EPOCH = 4  # a small set gets a smaller batch so that an epoch has this many
SMALLEST_AUTO_BATCH = 8
# Augmentation from scratch: a mirror image shows the same class, a window of 70-100 % of the
# image the same object, and lighting changes between shots. Detection: the flip only, which moves
# the box exactly.
SCRATCH_AUGMENT = [{"op": "flip", "mode": "horizontal"},
                   {"op": "random_crop", "scale": [0.7, 1.0]},
                   {"op": "brightness", "delta": 0.1},
                   {"op": "contrast", "factor": 0.2}]
# Detection: the box must be found, not remembered. A few hundred photos show their objects in few
# places and sizes (mostly large and central), so the box moves: zoom in and out by up to 40 %
# and shift by up to a quarter of the side (grey where the image leaves the frame), plus the
# flip and lighting changes (docs/training.md, detection; bench_detection.py).
SCRATCH_DETECTION_AUGMENT = [{"op": "flip", "mode": "horizontal"},
                             {"op": "zoom", "range": 0.4},
                             {"op": "translation", "fraction": 0.25},
                             {"op": "brightness", "delta": 0.1},
                             {"op": "contrast", "factor": 0.2}]
SCRATCH_DETECTION_LEARNING_RATE = 1.4e-2  # at batch 64 (1e-2 at 32): the box learns faster
# A box from scratch keeps improving long after a class. Twice the steps at half the batch (the
# same images seen, the same minutes): +0.11 to +0.13 over the mean box on all three raccoon
# splits, where 4000 steps at 64 gave +0.08 on the hardest (docs/training.md, detection).
SCRATCH_DETECTION_MIN_STEPS = 8000
SCRATCH_DETECTION_BATCH_SIZE = 32  # also on small sets: the step floor, not epochs, sets the length
# The last epoch's box, not the best val epoch's: on 30 val photos the choice chased noise
# (the last was as good or better on the test split in 8 of 11 runs).
SCRATCH_DETECTION_KEEP = "last"


@dataclass(frozen=True)
class Recipe:
    """The recipe a run trains with: its name, why it was chosen, the values it filled in and
    those the config had set itself."""

    name: str
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)
    kept: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the console, e.g. `recipe: scratch (model.weights is none): ...`."""
        if self.name == "pretrained":
            what = "two stages: head on the frozen backbone, then fine-tuning"
        else:
            what = "one stage, whole network trains"
        line = f"recipe: {self.name} ({self.reason}): {what}"
        shown = {k: v for k, v in self.settings.items()
                 if k not in ("train.augment", "train.start_check")
                 and not k.startswith("train.lr_find")}
        if shown:
            line += "; " + ", ".join(f"{_short(k)}={_text(v)}" for k, v in shown.items())
        if "train.augment" in self.settings:
            ops = [op["op"] for op in self.settings["train.augment"]]
            line += f"; augment {'+'.join(ops) if ops else 'none'}"
        if self.kept:
            line += "; from the config: " + ", ".join(f"{_short(k)}={_text(v)}"
                                                      for k, v in self.kept.items())
        return line


def choose_recipe(cfg: RunConfig) -> tuple[str, str]:
    """(recipe name, reason) for `train.recipe`."""
    if cfg.train.recipe != "auto":
        return cfg.train.recipe, "train.recipe"
    if cfg.model.pretrained:
        return "pretrained", f"model.weights is {cfg.model.weights}"
    return "scratch", "model.weights is none"


def recipe_values(name: str, cfg: RunConfig, n_train: int, task: str,
                  explicit: bool = False) -> dict[str, Any]:
    """Every value a recipe would set (dotted key -> value), before explicit settings win.
    `explicit`: the config named the recipe (train.recipe: pretrained keeps the user's choice
    after a failed start check, and warns)."""
    if name == "pretrained":
        return {"train.min_steps": PRETRAINED_MIN_STEPS,
                "train.start_check": "warn" if explicit else "switch"}
    detection = task == "detection"
    if is_set(cfg, "train.batch_size"):
        batch = cfg.train.batch_size
    elif detection:
        batch = auto_batch_size(n_train, SCRATCH_DETECTION_BATCH_SIZE, min_batches=1)
    else:
        batch = auto_batch_size(n_train, SCRATCH_BATCH_SIZE)
    augment = SCRATCH_DETECTION_AUGMENT if detection else SCRATCH_AUGMENT
    rate = (SCRATCH_DETECTION_LEARNING_RATE if detection else SCRATCH_LEARNING_RATE)
    return {
        "train.head.epochs": 0,
        "train.fine_tune.unfreeze_from": 0,
        "train.fine_tune.batchnorm": "train",
        "train.fine_tune.epochs": SCRATCH_EPOCHS,
        "train.fine_tune.learning_rate": scaled_learning_rate(batch, rate),
        "train.batch_size": batch,
        "train.min_steps": SCRATCH_DETECTION_MIN_STEPS if detection else SCRATCH_MIN_STEPS,
        "train.patience": None,
        "train.lr_find.stage": "fine_tune",  # the whole network trains, so the sweep does too
        "model.batchnorm_momentum": SCRATCH_BN_MOMENTUM,
        "train.augment": augment,
        "train.start_check": "off",
        **({"train.keep": SCRATCH_DETECTION_KEEP} if detection else {}),
    }


def apply_recipe(cfg: RunConfig, n_train: int, task: str,
                 extra: dict[str, Any] | None = None) -> tuple[RunConfig, Recipe]:
    """The config with the recipe's values filled in where the config is silent, and the recipe.

    `extra` (dotted key -> value) is applied too, e.g. the resolved `model.color_mode`.
    """
    name, reason = choose_recipe(cfg)
    values = recipe_values(name, cfg, n_train, task, explicit=cfg.train.recipe != "auto")
    settings = {k: v for k, v in values.items() if not is_set(cfg, k)}
    kept = {k: _value(cfg, k) for k in values if is_set(cfg, k)}
    updates = {"train.recipe": name, **settings, **(extra or {})}
    return with_settings(cfg, updates), Recipe(name, reason, settings, kept)


def switched_settings(cfg: RunConfig, n_train: int, task: str) -> dict[str, Any]:
    """The fine-tuning a failed start check switches to: the scratch recipe's one stage (every
    layer and BatchNorm training, its rate, length, augmentation and momentum), from the weights
    the head stage ends with (the given weights, a trained head)."""
    values = recipe_values("scratch", cfg, n_train, task)
    keep = ("train.fine_tune.", "train.batch_size", "train.min_steps", "train.patience",
            "train.augment", "train.keep", "model.batchnorm_momentum")
    return {key: value for key, value in values.items() if key.startswith(keep)}


def scaled_learning_rate(batch_size: int, rate: float = SCRATCH_LEARNING_RATE) -> float:
    """A scratch rate (`rate` at batch 64) at `batch_size`: square-root scaling, as suits
    Adam-type optimizers."""
    return float(f"{rate * math.sqrt(batch_size / SCRATCH_BATCH_SIZE):.3g}")


def auto_batch_size(n_train: int, preferred: int,
                    min_batches: int = MIN_BATCHES_PER_EPOCH) -> int:
    """`preferred`, or a smaller power of two (at least 8) for a set too small to give
    `min_batches` batches an epoch at `preferred`."""
    batch = preferred
    while batch > SMALLEST_AUTO_BATCH and n_train < min_batches * batch:
        batch //= 2
    return batch


def is_set(cfg: RunConfig, dotted: str) -> bool:
    """Whether the config (file or overrides) gave `dotted` (e.g. `train.head.epochs`) itself."""
    node: Any = cfg
    for part in dotted.split("."):
        if part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return True


def with_settings(cfg: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """A validated copy of `cfg` with dotted keys set (e.g. {"train.batch_size": 32})."""
    raw = cfg.model_dump(mode="json")
    for dotted, value in settings.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return validate_config(raw, source="resolved config")


def _value(cfg: RunConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    if isinstance(node, list):
        return [item.model_dump(exclude_defaults=True) if hasattr(item, "model_dump") else item
                for item in node]
    return node


def _short(dotted: str) -> str:
    return dotted.removeprefix("train.").removeprefix("fine_tune.")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(str(v.get("op", v)) if isinstance(v, dict) else str(v) for v in value) or "none"
    return str(value)


FEW_STEPS = 300  # fewer optimizer steps in all rarely train a network from random weights
SCRATCH_LOW_RATE = 5e-4  # below this, random weights barely move in a few thousand steps


def training_warnings(cfg: RunConfig, total_steps: int) -> list[dict]:
    """Settings that will likely fail, found before training ({"code", "message"} each).
    `total_steps`: the optimizer steps of all stages (None for a minutes budget)."""
    found = []
    train, scratch = cfg.train, not cfg.model.pretrained

    def warn(code: str, message: str) -> None:
        found.append({"code": code, "message": message})

    if scratch and train.head.epochs > 0:
        warn("head_on_random_backbone",
             f"train.head.epochs={train.head.epochs} trains a head on a random backbone, whose "
             "features are noise. Set train.head.epochs: 0 (the scratch recipe does) so that the "
             "whole network trains.")
    if scratch and train.fine_tune.epochs > 0 and train.fine_tune.unfreeze_from not in (0, 0.0):
        warn("frozen_random_layers",
             f"train.fine_tune.unfreeze_from={train.fine_tune.unfreeze_from!r} keeps the layers "
             "before it at their random weights. From scratch set unfreeze_from: 0.")
    if scratch and train.fine_tune.epochs > 0 and train.fine_tune.batchnorm == "frozen":
        warn("frozen_batchnorm", "train.fine_tune.batchnorm=frozen keeps the BatchNorm statistics "
             "of random layers; from scratch use train (or auto).")
    if scratch and train.fine_tune.epochs > 0 and train.fine_tune.learning_rate < SCRATCH_LOW_RATE:
        warn("low_learning_rate",
             f"train.fine_tune.learning_rate={train.fine_tune.learning_rate:g} is a fine-tuning "
             f"rate; from random weights about {scaled_learning_rate(train.batch_size):g} trains "
             "(remove the setting to get the recipe's).")
    if total_steps is not None and total_steps < FEW_STEPS:
        warn("few_steps",
             f"only {total_steps} optimizer steps in all; a network usually needs a few hundred "
             "at least (thousands from random weights). Give more: train.budget (e.g. '3000 "
             "steps') or train.min_steps.")
    return found
