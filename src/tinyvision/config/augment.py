"""train.augment: training-only augmentation ops, one mapping each (docs/augmentation.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from tinyvision.config._base import Section, choices
from tinyvision.errors import did_you_mean

# Training-only, on-the-fly augmentation: `train.augment` is a list of ops, each a mapping with
# `op` and that op's parameters (docs/augmentation.md). Geometric ops also move a detection box.
FlipMode = Literal["horizontal", "vertical", "horizontal_and_vertical"]
FillMode = Literal["reflect", "constant", "nearest", "wrap"]
FLIP_MODES, FILL_MODES = choices(FlipMode), choices(FillMode)


class AugmentOp(Section):
    """One augmentation op; it is applied to each training image with `probability`."""

    probability: float = Field(1.0, gt=0.0, le=1.0)


class GeometricAugmentOp(AugmentOp):
    """An op that moves pixels. All geometric ops of a list form one affine transform per image,
    so they share one fill: give `fill_mode`/`fill_value` on one op or the same on all."""

    fill_mode: FillMode | None = Field(
        None,
        description="None: reflect for classification, constant for detection (a reflected object "
                    "fools a box).")
    fill_value: float | None = Field(None, ge=0.0, le=255.0, description="constant fill; None: 128")


class FlipAugment(GeometricAugmentOp):
    op: Literal["flip"]
    mode: FlipMode = "horizontal"
    probability: float = Field(0.5, gt=0.0, le=1.0, description="per flipped axis")


class RotationAugment(GeometricAugmentOp):
    op: Literal["rotation"]
    degrees: float = Field(
        gt=0.0, le=180.0,
        description="angle drawn uniformly in [-degrees, degrees]")


class ZoomAugment(GeometricAugmentOp):
    op: Literal["zoom"]
    range: float = Field(
        gt=0.0, lt=1.0,
        description="scale drawn in [1 - range, 1 + range]; > 1 zooms in")


class TranslationAugment(GeometricAugmentOp):
    op: Literal["translation"]
    fraction: float = Field(
        gt=0.0, le=0.5,
        description="shift per axis in [-fraction, fraction] of the side")


class ShearAugment(GeometricAugmentOp):
    op: Literal["shear"]
    degrees: float = Field(
        gt=0.0, lt=60.0,
        description="x and y shear angles, each in [-degrees, degrees]")


class RandomCropAugment(GeometricAugmentOp):
    """Crop a random window (area fraction `scale`, aspect `ratio`) and resize it to the input."""

    op: Literal["random_crop"]
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    keep_box: bool = Field(True, description="detection: the window always contains the whole box")

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered_positive(cls, value: tuple[float, float], info: Any) -> tuple[float, float]:
        low, high = value
        upper = 1.0 if info.field_name == "scale" else 10.0
        if not 0.0 < low <= high <= upper:
            raise ValueError(f"expected [low, high] with 0 < low <= high <= {upper:g}, "
                             f"got {list(value)}")
        return value


class MoveBoxAugment(GeometricAugmentOp):
    """Detection: scale the image about its box by a factor drawn in `scale`, then shift it so
    that the box lands anywhere in the frame (inside it where it fits). A few hundred photos
    otherwise show the object in few places, and a box head learns where objects usually are
    instead of where this one is. Without a box (classification, or an image without one): the
    same scale about the centre and a shift anywhere the image stays in the frame."""

    op: Literal["move_box"]
    scale: tuple[float, float] = (0.6, 1.2)

    @field_validator("scale")
    @classmethod
    def _ordered_positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 < low <= high <= 4.0:
            raise ValueError(f"expected [low, high] with 0 < low <= high <= 4, got {list(value)}")
        return value


class ContrastAugment(AugmentOp):
    op: Literal["contrast"]
    factor: float = Field(
        gt=0.0, le=1.0,
        description="contrast x U(1 - factor, 1 + factor) about the mean")


class BrightnessAugment(AugmentOp):
    op: Literal["brightness"]
    delta: float = Field(gt=0.0, le=1.0, description="adds U(-delta, delta) x 255")


class HueAugment(AugmentOp):
    op: Literal["hue"]
    delta: float = Field(
        gt=0.0, le=0.5,
        description="hue turned by U(-delta, delta) of a full turn (RGB only)")


class SaturationAugment(AugmentOp):
    op: Literal["saturation"]
    factor: float = Field(
        gt=0.0, le=1.0,
        description="saturation x U(1 - factor, 1 + factor) (RGB only)")


class ChannelShiftAugment(AugmentOp):
    op: Literal["channel_shift"]
    intensity: float = Field(
        gt=0.0, le=255.0,
        description="each channel + U(-intensity, intensity)")


class CutoutAugment(AugmentOp):
    op: Literal["cutout"]
    size: float = Field(gt=0.0, lt=1.0, description="patch side as a fraction of the image side")
    count: int = Field(1, ge=1, le=16)
    fill_value: float = Field(128.0, ge=0.0, le=255.0)
    max_box_cover: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Detection: a patch hiding more than this fraction of the box is not applied.")


class NoiseAugment(AugmentOp):
    op: Literal["noise"]
    stddev: float = Field(gt=0.0, le=128.0, description="Gaussian noise, in pixel levels (0..255)")


class GrayscaleAugment(AugmentOp):
    op: Literal["grayscale"]
    probability: float = Field(0.2, gt=0.0, le=1.0, description="RGB only")


AUGMENT_MODELS = (FlipAugment, RotationAugment, ZoomAugment, TranslationAugment, ShearAugment,
                  RandomCropAugment, MoveBoxAugment, ContrastAugment, BrightnessAugment, HueAugment,
                  SaturationAugment, ChannelShiftAugment, CutoutAugment, NoiseAugment,
                  GrayscaleAugment)
_AUGMENT_BY_OP = {get_args(m.model_fields["op"].annotation)[0]: m for m in AUGMENT_MODELS}
# Ops that move pixels (one affine transform, moving a detection box too) and ops that need RGB
GEOMETRIC_AUGMENT_OPS = frozenset(op for op, m in _AUGMENT_BY_OP.items()
                                  if issubclass(m, GeometricAugmentOp))
PIXEL_AUGMENT_OPS = frozenset(_AUGMENT_BY_OP) - GEOMETRIC_AUGMENT_OPS
RGB_ONLY_AUGMENT_OPS = frozenset({"hue", "saturation", "grayscale"})


def _check_augment_entries(value: Any) -> Any:
    """Name the op in errors about unknown ops and parameters, with close matches."""
    if not isinstance(value, list):
        return value
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or "op" not in entry:
            raise ValueError(f"augment[{i}] must be a mapping with an `op` key, e.g. "
                             f"{{op: flip, mode: horizontal}}; got {entry!r}")
        op = entry["op"]
        model = _AUGMENT_BY_OP.get(op) if isinstance(op, str) else None
        if model is None:
            hint = did_you_mean(op, _AUGMENT_BY_OP, n=3, cutoff=0.5)
            raise ValueError(f"augment[{i}]: unknown op {op!r}.{hint} "
                             f"Known ops: {', '.join(_AUGMENT_BY_OP)}")
        allowed = [k for k in model.model_fields if k != "op"]
        for key in entry:
            if key != "op" and key not in allowed:
                hint = did_you_mean(key, allowed, n=2, cutoff=0.5)
                raise ValueError(f"augment[{i}] (op {op!r}): unknown parameter {key!r}.{hint} "
                                 f"Parameters of {op}: {', '.join(allowed)}")
    return value


def _one_fill(ops: list) -> list:
    """The geometric ops are one transform, so at most one fill mode and one fill value."""
    for name in ("fill_mode", "fill_value"):
        given = {(o.op, getattr(o, name)) for o in ops
                 if isinstance(o, GeometricAugmentOp) and getattr(o, name) is not None}
        if len({v for _, v in given}) > 1:
            listed = ", ".join(f"{op}.{name}={v!r}" for op, v in sorted(given, key=str))
            raise ValueError(f"geometric ops are applied as one transform and share one {name}; "
                             f"got {listed}. Give the same value (or set it on one op only)")
    return ops


AugmentEntry = Annotated[Union[AUGMENT_MODELS], Field(discriminator="op")]
AugmentList = Annotated[list[AugmentEntry], BeforeValidator(_check_augment_entries),
                        AfterValidator(_one_fill)]
