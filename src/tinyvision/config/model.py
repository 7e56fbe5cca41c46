"""model: backbone, width, input size, colour mode, weights (pretrained, none, a file), head."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, field_validator, model_validator

from tinyvision.config._base import Section, choices
from tinyvision.errors import did_you_mean


class BackboneDefaults(NamedTuple):
    alpha: float  # width multiplier used when `model.alpha` is not given
    width_multiplier: bool  # False: a fixed width (alpha must be 1.0)
    imagenet: bool  # keras.applications has ImageNet weights: the default of `model.weights`


# The backbones and their defaults, declared once: models.backbones.BACKBONES adds how to build each
# (a test keeps the names in step) and reads its width from here; described in docs/models.md.
BACKBONE_DEFAULTS: dict[str, BackboneDefaults] = {
    "mobilenet_v1": BackboneDefaults(0.25, True, True),
    "mobilenet_v2": BackboneDefaults(0.35, True, True),
    "mobilenet_v3_small": BackboneDefaults(0.75, True, True),
    "mobilenet_v3_large": BackboneDefaults(0.75, True, True),
    "mobilenet_v3_small_minimalistic": BackboneDefaults(1.0, True, True),
    "mobilenet_v3_large_minimalistic": BackboneDefaults(1.0, True, True),
    "resnet50": BackboneDefaults(1.0, False, True),
    "efficientnet_b0": BackboneDefaults(1.0, False, True),
    "squeezenet_1_1": BackboneDefaults(1.0, False, False),
    "plain_cnn": BackboneDefaults(1.0, False, False),
}
BACKBONE_NAMES = frozenset(BACKBONE_DEFAULTS)
PlainCnnPool = Literal["max", "avg", "stride", "none"]
ColorMode = Literal["auto", "rgb", "grayscale"]
Task = Literal["auto", "multiclass", "multilabel", "detection"]
PLAIN_CNN_POOLS, COLOR_MODES, TASKS = choices(PlainCnnPool), choices(ColorMode), choices(Task)
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")  # whole-model files that `cut_at` can cut


class PlainCnnConfig(Section):
    """Backbone `plain_cnn`: one block per `filters` entry: conv, BatchNorm, ReLU, then 2x2 max or
    average pooling, or a stride-2 conv (`stride`), or neither (`none`)."""

    filters: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1, max_length=16)
    kernel_size: int = Field(3, ge=1, le=9)
    pool: PlainCnnPool = "max"
    batchnorm: bool = True

    @field_validator("filters")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if not all(1 <= f <= 4096 for f in value):
            raise ValueError(f"each block's filters must be between 1 and 4096, got {value}")
        return value


class ModelConfig(Section):
    backbone: str = Field("mobilenet_v1", description="a name of BACKBONE_NAMES (docs/models.md)")
    alpha: float = Field(
        0.25, gt=0.0, le=4.0,
        description="Width multiplier (MobileNets); default: the backbone's (BACKBONE_DEFAULTS), "
                    "1.0 if fixed.")
    input_size: tuple[int, int] = Field(
        (96, 96),
        description="height, width; an int means a square")
    color_mode: ColorMode = Field(
        "auto",
        description="auto: grayscale when the sampled training images are gray (equal channels), "
                    "else rgb")
    weights: str = Field(
        "imagenet",
        description="imagenet | none | a weights file (.h5) of this backbone | with `cut_at`, a "
                    "Keras model file (.keras/.h5). Default: imagenet where keras.applications has"
                    " weights for the backbone, else none.")
    cut_at: str | None = Field(
        None,
        description="layer of the model file in `weights` whose output is the backbone")
    allow_unsafe_model_code: bool = Field(
        False,
        description="let that file run its stored Python code (Lambda layers) while this run "
                    "builds and trains; reloading the run's model later (eval, export, predict) "
                    "needs --trust-model-code on that command")
    plain_cnn: PlainCnnConfig | None = Field(
        None,
        description="blocks of backbone plain_cnn; default [16, 32, 64]")
    input_scale: float | tuple[float, float, float] | None = Field(
        None,
        description="Normalisation inside the model, value = pixel * scale + offset, one number or"
                    " one per RGB channel; default: the backbone's ([-1, 1] for MobileNets and for"
                    " a cut model file).")
    input_offset: float | tuple[float, float, float] | None = None
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    task: Task = Field(
        "auto",
        description="auto: detection from a source with one box per image (coco/voc mode largest, "
                    "CSV with box columns), unless data.crop_to_box; multi-label when an image has"
                    " several labels")
    batchnorm_momentum: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="None: 0.99 (Keras default) with pretrained weights, 0.9 when training from "
                    "scratch (train.recipe: scratch writes 0.9 into the run's config).")

    @field_validator("input_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("input_size")
    @classmethod
    def _size_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(32 <= v <= 1024 for v in value):
            raise ValueError(f"each side must be between 32 and 1024 pixels, got {list(value)}")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_kind(cls, value: str) -> str:
        if value.lower() in ("imagenet", "none"):
            return value.lower()
        if not Path(value).suffix:
            raise ValueError(f"expected 'imagenet', 'none' or a path to a weights file "
                             f"(.h5/.weights.h5/.keras), got {value!r}")
        return value

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value not in BACKBONE_NAMES:
            hint = did_you_mean(value, BACKBONE_NAMES, n=2, cutoff=0.5)
            raise ValueError(f"unknown backbone {value!r}.{hint} Available: "
                             f"{', '.join(sorted(BACKBONE_NAMES))}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _backbone_defaults(cls, value: Any) -> Any:
        """alpha and weights default to what the backbone has (1.0 / none for SqueezeNet)."""
        if isinstance(value, dict) and value.get("backbone", "mobilenet_v1") in BACKBONE_NAMES:
            defaults = BACKBONE_DEFAULTS[value.get("backbone", "mobilenet_v1")]
            value = {"alpha": defaults.alpha, **value}
            if "weights" not in value and not value.get("cut_at"):
                value["weights"] = "imagenet" if defaults.imagenet else "none"
        return value

    @model_validator(mode="after")
    def _consistent_backbone(self) -> ModelConfig:
        defaults = BACKBONE_DEFAULTS[self.backbone]
        if not defaults.width_multiplier and self.alpha != 1.0 and not self.cut_at:
            raise ValueError(f"{self.backbone} has a fixed width, so alpha must be 1.0, got "
                             f"alpha={self.alpha:g}; remove alpha or pick a mobilenet backbone")
        if self.plain_cnn is not None and self.backbone != "plain_cnn":
            raise ValueError(f"plain_cnn configures backbone plain_cnn, but backbone is "
                             f"{self.backbone!r}; remove plain_cnn or set backbone: plain_cnn")
        is_model_file = (self.weights.lower().endswith(MODEL_FILE_SUFFIXES)
                         and not self.weights.lower().endswith(".weights.h5"))
        if self.cut_at and not is_model_file:
            raise ValueError(f"cut_at={self.cut_at!r} cuts a Keras model file, so weights must be "
                             f"its path ({', '.join(MODEL_FILE_SUFFIXES)}), got {self.weights!r}")
        if not self.cut_at and self.weights.lower().endswith(".keras"):
            raise ValueError(f"weights={self.weights!r} is a whole model; set cut_at to the layer "
                             "whose output is the backbone (e.g. the last conv before pooling)")
        if self.allow_unsafe_model_code and not self.cut_at:
            raise ValueError("allow_unsafe_model_code applies to a model file cut with cut_at; "
                             "remove it")
        return self

    @property
    def channels(self) -> int:
        # "auto" counts as rgb until a run looks at its training images (data/color.py)
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"
