"""train: the recipe, budget, batch, optimizer, loss, schedules and stages of training."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from tinyvision.config._base import Section, choices
from tinyvision.config.augment import AugmentList
from tinyvision.errors import did_you_mean

# The choices of training, each declared once (docs/training.md).
Recipe = Literal["auto", "pretrained", "scratch"]
Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]
Schedule = Literal["constant", "step", "cosine", "one_cycle", "plateau"]
Loss = Literal["auto", "cross_entropy", "bce", "focal", "soft_f1"]
BoxLoss = Literal["l1", "smooth_l1", "giou"]
ClassWeightMode = Literal["none", "balanced"]
Stage = Literal["head", "fine_tune"]
BatchNormPolicy = Literal["auto", "frozen", "train"]
Monitor = Literal["auto", "val_accuracy", "val_iou", "val_loss"]
Keep = Literal["best", "last"]
StartCheck = Literal["switch", "warn", "off"]
Strategy = Literal["none", "mirrored", "multi_worker"]
Precision = Literal["float32", "mixed"]
OPTIMIZERS, SCHEDULES, LOSSES = choices(Optimizer), choices(Schedule), choices(Loss)
BOX_LOSSES, CLASS_WEIGHT_MODES = choices(BoxLoss), choices(ClassWeightMode)
STAGES, STRATEGIES = get_args(Stage), choices(Strategy)


class ScheduleConfig(Section):
    """Learning-rate schedule of one stage; a plain string (`schedule: step`) names one with its
    defaults. Each parameter is read only by the schedules named in its comment."""

    name: Schedule = "cosine"
    warmup_epochs: float | None = Field(
        None, ge=0.0,
        description="constant, step, cosine: linear warm-up from 1% of the rate; None: "
                    "train.warmup_epochs.")
    step_epochs: float = Field(
        3.0, gt=0.0,
        description="step: multiply the rate by `factor` this often")
    factor: float = Field(
        0.1, gt=0.0, lt=1.0,
        description="step, plateau: the multiplier of each decay")
    patience: int = Field(
        2, ge=1,
        description="plateau: epochs without improvement of train.monitor")
    min_learning_rate: float = Field(1e-7, ge=0.0, description="plateau: the floor")
    final_fraction: float = Field(
        0.01, gt=0.0, le=1.0,
        description="cosine: the last rate / learning_rate")
    pct_start: float = Field(
        0.3, gt=0.0, lt=1.0,
        description="one_cycle: fraction of steps spent rising")
    div_factor: float = Field(
        25.0, gt=1.0,
        description="one_cycle: starts at learning_rate / div_factor")
    final_div_factor: float = Field(1e4, gt=1.0, description="one_cycle: ends at the start / this")

    @model_validator(mode="before")
    @classmethod
    def _name_only(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class LrMultipliers(Section):
    """Discriminative learning rates: the stage's rate times a multiplier per layer group."""

    early: float = Field(1.0, gt=0.0, description="backbone layers before `lr_split`")
    late: float = Field(1.0, gt=0.0, description="backbone layers from `lr_split` on")
    head: float = Field(1.0, gt=0.0, description="the head (layers named head_*)")


class LrFindConfig(Section):
    """`tinyvision lr-find`: an exponential sweep of the learning rate over `steps` steps."""

    start: float = Field(1e-7, gt=0.0)
    end: float = Field(10.0, gt=0.0)
    steps: int = Field(200, ge=10, le=10000)
    stage: Stage = Field(
        "head",
        description="which layers train during the sweep")
    weights: str | None = Field(
        None,
        description="start from these weights instead of a fresh model: a run directory (its best "
                    "checkpoint), e.g. a run whose head is trained, before sweeping for fine-"
                    "tuning; or a .weights.h5 file")

    @model_validator(mode="after")
    def _increasing(self) -> LrFindConfig:
        if self.end <= self.start:
            raise ValueError(f"lr_find.end must be above lr_find.start; got start={self.start:g}, "
                             f"end={self.end:g}")
        return self


class HeadStage(Section):
    """Stage 1: the backbone is frozen and only the head learns."""

    epochs: int = Field(10, ge=0)
    learning_rate: float = Field(1e-3, gt=0.0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    cache_features: bool = Field(
        True,
        description="Compute the frozen backbone's features once and train the head on them (only "
                    "when the stage uses no augmentation, which would change the features every "
                    "epoch).")


class FineTuneStage(Section):
    """Stage 2: the backbone is unfrozen from `unfreeze_from` on and fine-tuned at a lower rate."""

    epochs: int = Field(10, ge=0)
    learning_rate: float = Field(1e-4, gt=0.0)
    unfreeze_from: str | int | float = Field(
        "auto",
        description="\"auto\": the block 3/4 of the way through the backbone (MobileNet V1: "
                    "block_10 of 13); a block \"block_N\" (numbered per backbone, docs/models.md);"
                    " a layer or native block name (\"conv_pw_11\", \"conv4_block1\"); a layer "
                    "index (int); or a fraction of the backbone's layers (float, 0..1).")

    @field_validator("unfreeze_from")
    @classmethod
    def _fraction_range(cls, value: str | int | float) -> str | int | float:
        if isinstance(value, float) and not 0.0 <= value <= 1.0:
            raise ValueError(f"a fraction of the backbone's layers must be in [0, 1] (0: all "
                             f"train, 1: only the head), got {value}")
        return value

    batchnorm: BatchNormPolicy = Field(
        "auto",
        description="frozen: BatchNorm stays in inference mode (right for pretrained weights); "
                    "train: it updates; auto: frozen with pretrained weights, train when the "
                    "backbone starts from random weights.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    lr_multipliers: LrMultipliers | None = Field(
        None,
        description="Per layer group, e.g. {early: 0.1, late: 0.5, head: 1.0}; None: one rate for "
                    "all.")
    lr_split: str | int | float | None = Field(
        None,
        description="Where \"late\" starts (same forms as unfreeze_from); None: halfway from "
                    "unfreeze_from to the head.")

    @field_validator("lr_split")
    @classmethod
    def _split_fraction(cls, value: str | int | float | None) -> str | int | float | None:
        if isinstance(value, float) and not 0.0 < value < 1.0:
            raise ValueError(f"a fraction of the backbone's layers must be in (0, 1), got {value}")
        return value


class BudgetConfig(Section):
    """How long training runs, as exactly one of: epochs, optimizer steps or minutes. A string
    says the same in one line: "40 epochs", "3000 steps", "10 minutes" (or "10 min")."""

    epochs: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    minutes: float | None = Field(
        None, gt=0.0, le=100_000.0,
        description="Wall-clock minutes of training (every epoch with its validation pass): the "
                    "throughput of the first steps sizes the schedule, so it finishes (warm-up and"
                    " cosine) on time.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _BUDGET_TEXT.match(value.strip().lower())
        if not match:
            raise ValueError(f"expected a number and a unit, e.g. '40 epochs', '3000 steps' or "
                             f"'10 minutes'; got {value!r}")
        number, unit = match.groups()
        key = next(k for k, words in _BUDGET_UNITS.items() if unit in words)
        return {key: float(number) if key == "minutes" else int(float(number))}

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetConfig:
        given = [k for k in ("epochs", "steps", "minutes") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of epochs, steps or minutes (e.g. budget: {minutes: "
                             f"10}}); got {', '.join(given) if given else 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("epochs", "steps", "minutes") if getattr(self, k) is not None)

    def __str__(self) -> str:
        return f"{getattr(self, self.kind):g} {self.kind}"


_BUDGET_UNITS = {"epochs": ("epoch", "epochs"), "steps": ("step", "steps"),
                 "minutes": ("m", "min", "mins", "minute", "minutes")}
_BUDGET_TEXT = re.compile(r"^(\d+(?:\.\d+)?)\s*(" + "|".join(
    w for words in _BUDGET_UNITS.values() for w in words) + r")$")


class TrainConfig(Section):
    recipe: Recipe = Field(
        "auto",
        description="auto: `pretrained` when model.weights loads trained weights (imagenet, a "
                    "file), `scratch` when it is none. pretrained: two stages (head, then fine-"
                    "tuning). scratch: one stage, every layer trains (docs/training.md). A recipe "
                    "only fills in settings the config leaves out.")
    budget: BudgetConfig | None = Field(
        None,
        description="Length of the whole training (None: each stage's `epochs`); the stages share "
                    "it in proportion to their epochs, except that a minutes budget goes to the "
                    "last stage once the head stage has run its epochs.")
    min_steps: int | None = Field(
        None, ge=0,
        description="Fewest optimizer steps of a stage: a small set trains for more epochs. None: "
                    "the recipe's.")
    batch_size: int = Field(64, ge=1, le=4096)
    optimizer: Optimizer = "adamw"
    weight_decay: float = Field(
        1e-4, ge=0.0,
        description="Decoupled weight decay of adamw, sgd and rmsprop (adam has none: use adamw "
                    "for it).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="sgd")
    warmup_epochs: float = Field(
        1.0, ge=0.0,
        description="default warm-up of each stage's schedule")
    loss: Loss = Field(
        "auto",
        description="auto: cross_entropy for multi-class (and the class of a detection), bce for "
                    "multi-label.")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="cross_entropy, bce, focal")
    focal_gamma: float = Field(2.0, ge=0.0)
    focal_alpha: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Multi-label: positives weighted alpha, negatives 1 - alpha; multi-class: a "
                    "constant factor (as Keras). None: no balancing.")
    box_loss: BoxLoss = Field(
        "giou",
        description="detection: loss of the box output")
    box_loss_weight: float = Field(
        1.0, ge=0.0,
        description="total = class loss + weight x box loss")
    class_weights: ClassWeightMode | dict[str, float] = Field(
        "none",
        description="none | balanced (inverse class frequency) | {class: weight}; multi-label: "
                    "positive weights.")
    oversample: bool = Field(
        False,
        description="repeat rarer-class training samples so classes are seen equally")
    lr_find: LrFindConfig = Field(default_factory=LrFindConfig)
    monitor: Monitor = Field(
        "auto",
        description="What 'best' means (best checkpoint, early stopping, plateau): auto is "
                    "val_accuracy for classification and val_iou for detection (the box's mean "
                    "IoU on the val split, an image of the wrong class counting 0); val_loss.")
    start_check: StartCheck | None = Field(
        None,
        description="Pretrained weights: after the head stage, check how well a head on the "
                    "frozen features tells the classes apart (val informedness; a box must beat "
                    "the constant box). Below 0.9 (features that do not suit the task, or only "
                    "partly), switch: fine-tune the whole network as the scratch recipe trains, "
                    "from the given weights; warn: keep the settings and warn; off: no check. "
                    "None: the recipe's (switch for train.recipe auto, warn for an explicit "
                    "pretrained).")
    keep: Keep = Field(
        "best",
        description="The weights a run keeps: best (the epoch with the best `monitor`, saved in "
                    "checkpoints/best.weights.h5) or last (the end of the schedule).")
    patience: int | None = Field(
        5, ge=1,
        description="Early stopping: epochs without improvement of `monitor`; None: off (the "
                    "schedule ends the run; the best epoch's weights are still kept).")
    max_steps_per_epoch: int | None = Field(
        None, ge=1,
        description="cap for quick trials and tests")
    strategy: Strategy = Field(
        "none",
        description="tf.distribute strategy: none | mirrored (GPUs, or logical CPUs) | "
                    "multi_worker (TF_CONFIG).")
    precision: Precision = Field(
        "float32",
        description="Training compute dtype: float32, or mixed (float16 on a GPU with loss "
                    "scaling, bfloat16 on a CPU; weights stay float32). The run keeps, "
                    "evaluates and exports a float32 model either way.")
    head: HeadStage = Field(default_factory=HeadStage)
    fine_tune: FineTuneStage = Field(default_factory=FineTuneStage)
    augment: AugmentList = Field(
        default_factory=list,
        description="Training-only augmentation ops, in order (docs/augmentation.md); empty: none.")

    @field_validator("class_weights", mode="before")
    @classmethod
    def _class_weight_values(cls, value: Any) -> Any:
        """One clear message instead of one per member of the union."""
        if isinstance(value, str) and value not in CLASS_WEIGHT_MODES:
            raise ValueError(f"expected 'none', 'balanced' or a mapping {{class: weight}}, got "
                             f"{value!r}.{did_you_mean(value, CLASS_WEIGHT_MODES)}")
        if isinstance(value, dict):
            bad = {k: v for k, v in value.items()
                   if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}
            if bad:
                raise ValueError(f"class weights must be numbers > 0; got {bad}")
        return value
