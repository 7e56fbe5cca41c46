"""The run config: one YAML file per run, validated by pydantic before any work starts.

Every section forbids unknown keys; an error names the field (`train.batch_size`), the value received
and what is allowed, with close matches for a mistyped key. `key=value` overrides from the command
line use the same dotted names.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      ValidationError, field_validator, model_validator)

from tinyvision.errors import ConfigError, did_you_mean

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---- data ------------------------------------------------------------------------------------
class FolderSource(Section):
    """Class-per-folder images: `root/<class>/*.jpg`, or `root/{train,val,test}/<class>/*.jpg`.

    A file name found in several class folders is one multi-label sample with all those labels.
    """

    format: Literal["folder"] = "folder"
    root: Path
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))

    @field_validator("extensions")
    @classmethod
    def _dotted_lowercase(cls, value: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else "." + e.lower() for e in value]


# Options of the annotation sources, one frozen set each (the Literal types below spell the same).
SOURCE_MODES = frozenset({"presence", "largest"})
# What to do with crowd / difficult / truncated objects: count them like any object, ignore them
# (they do not make a class present, but their image is never a negative), or drop their image.
OBJECT_POLICIES = frozenset({"include", "ignore", "drop_image"})
PROBLEM_POLICIES = frozenset({"error", "skip"})
DEDUPE_MODES = frozenset({"content", "path", "none"})
ObjectPolicy = Literal["include", "ignore", "drop_image"]
_SPLIT_NAMES = ("train", "val", "test")


class NegativeOptions(Section):
    """An extra class of images that show none of the positive classes.

    Images are sampled evenly across the other categories (round robin, seeded) so that the
    negatives are not all kitchens; by default as many as the largest positive class has.
    """

    name: str = "negative"
    size: int | None = Field(None, ge=1)  # total negatives; default: size of the largest class
    from_categories: list[str] | None = None  # default: every category that is not positive
    include_empty: bool = True  # images with no annotated object at all are candidates too
    # False: an image with any object of a positive class (however small) is never a negative.
    # True: images whose positive objects are all below `min_area` may be negatives (VWW style).
    allow_small_positives: bool = False


class AnnotationSource(Section):
    """Options shared by the detection-annotation formats (COCO, Pascal VOC)."""

    # presence: multi-label "is there a <class>" labels; largest: the largest object's class + box.
    mode: Literal["presence", "largest"] = "presence"
    # Output classes: names of categories, or {output class: [categories]} to group categories.
    # Required for presence; for largest, default: every category that occurs.
    classes: list[str] | dict[str, list[str]] | None = None
    # Smallest object that counts, as a fraction of the image area: one number or {class: number}.
    min_area: float | dict[str, float] = 0.0
    negative: NegativeOptions | None = None
    # At most this many images per class (seeded undersampling): one number or {class: number}.
    max_per_class: int | dict[str, int] | None = None
    # error: bad entries stop the build with one summary; skip: they are dropped, with a warning.
    on_problem: Literal["error", "skip"] = "error"
    check_images: bool = True  # check that every selected image file exists

    @field_validator("classes", mode="before")
    @classmethod
    def _single_category_groups(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("negative", mode="before")
    @classmethod
    def _negative_switch(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("min_area")
    @classmethod
    def _area_fractions(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        for v in (value.values() if isinstance(value, dict) else [value]):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"an area is a fraction of the image area in [0, 1), got {v}")
        return value

    @field_validator("max_per_class")
    @classmethod
    def _positive_caps(cls, value: int | dict[str, int] | None) -> int | dict[str, int] | None:
        for v in (value.values() if isinstance(value, dict) else [] if value is None else [value]):
            if v < 1:
                raise ValueError(f"a cap is a number of images >= 1, got {v}")
        return value

    @model_validator(mode="after")
    def _consistent_classes(self) -> AnnotationSource:
        groups = self.class_groups
        if self.mode == "presence" and not groups:
            raise ValueError("mode 'presence' needs `classes`, e.g. classes: [person, car]")
        if self.negative is not None and self.mode != "presence":
            raise ValueError("`negative` applies to mode 'presence' only; remove it")
        if groups:
            _check_groups(groups)
            names = list(groups)
            if self.negative is not None and self.negative.name in groups:
                raise ValueError(f"negative.name={self.negative.name!r} is also a positive class; "
                                 "pick another name")
            for key in ("min_area", "max_per_class"):
                value = getattr(self, key)
                if isinstance(value, dict):
                    _check_keys(key, value, names)
        return self

    @property
    def class_groups(self) -> dict[str, list[str]] | None:
        """{output class: [source categories]}, or None for "every category"."""
        if self.classes is None:
            return None
        if isinstance(self.classes, dict):
            return {k: list(v) for k, v in self.classes.items()}
        return {c: [c] for c in self.classes}


def _check_groups(groups: dict[str, list[str]]) -> None:
    seen: dict[str, str] = {}
    for name, members in groups.items():
        if not members:
            raise ValueError(f"class {name!r} lists no categories")
        for member in members:
            if member in seen:
                raise ValueError(f"category {member!r} is in both {seen[member]!r} and {name!r}")
            seen[member] = name


def _check_keys(field: str, value: dict, names: list[str]) -> None:
    for key in value:
        if key not in names:
            raise ValueError(f"{field} names {key!r}, which is not one of the classes "
                             f"{names}.{did_you_mean(key, names)}")


class CocoSource(AnnotationSource):
    """COCO instances JSON: one file split later (`annotations` + `images`), or given splits
    (`train_annotations` + `train_images`, `val_...`, `test_...`; `images` is the default root)."""

    format: Literal["coco"] = "coco"
    annotations: Path | None = None
    images: Path | None = None
    train_annotations: Path | None = None
    val_annotations: Path | None = None
    test_annotations: Path | None = None
    train_images: Path | None = None
    val_images: Path | None = None
    test_images: Path | None = None
    # Crowd regions: default include for presence (a crowd shows the class), ignore for largest.
    iscrowd: ObjectPolicy | None = None
    area: Literal["box", "segmentation"] = "box"  # which area `min_area` and "largest" compare

    @model_validator(mode="after")
    def _files_and_roots(self) -> CocoSource:
        split_files = [s for s in _SPLIT_NAMES if getattr(self, f"{s}_annotations")]
        if self.annotations and split_files:
            raise ValueError("give either `annotations` (one file, split later) or "
                             f"{', '.join(s + '_annotations' for s in split_files)}, not both")
        if not self.annotations and not split_files:
            raise ValueError("`annotations` (a COCO instances JSON) is required, or "
                             "train_annotations/val_annotations for given splits")
        if split_files and "train" not in split_files:
            raise ValueError("val/test annotation files need `train_annotations` too")
        for split, _, images in self.annotation_files():
            if images is None:
                key = f"{split}_images" if split else "images"
                raise ValueError(f"`{key}` (the folder its file_name entries are relative to) "
                                 "is required")
        return self

    def annotation_files(self) -> list[tuple[str, Path, Path | None]]:
        """(split or "", annotation file, images root) of each file."""
        if self.annotations:
            return [("", self.annotations, self.images)]
        return [(s, getattr(self, f"{s}_annotations"), getattr(self, f"{s}_images") or self.images)
                for s in _SPLIT_NAMES if getattr(self, f"{s}_annotations")]

    @property
    def crowd_policy(self) -> str:
        return self.iscrowd or ("include" if self.mode == "presence" else "ignore")


class VocSource(AnnotationSource):
    """Pascal VOC XML: a VOCdevkit (`root` = VOCdevkit or VOC2012 folder; splits from
    ImageSets/Main) or a plain layout (`root` with images/ and annotations/, or both given)."""

    format: Literal["voc"] = "voc"
    root: Path | None = None
    annotations: Path | None = None
    images: Path | None = None
    # VOCdevkit only: {split: image set name}; default train/val/test lists that exist.
    image_sets: dict[Literal["train", "val", "test"], str] | None = None
    difficult: ObjectPolicy = "ignore"
    truncated: ObjectPolicy = "include"

    @model_validator(mode="after")
    def _root_or_folders(self) -> VocSource:
        if self.root is None and (self.annotations is None or self.images is None):
            raise ValueError("give `root` (a VOCdevkit, VOC2012 or folder with images/ and "
                             "annotations/), or both `annotations` and `images` folders")
        return self


class CsvSource(Section):
    """CSV rows `path,label[;label...]` (classification) or `path,x1,y1,x2,y2,label` (one box per
    row, pixel xyxy). An optional header names the columns (path, label, x1, y1, x2, y2, split)."""

    format: Literal["csv"] = "csv"
    path: Path
    images: Path | None = None  # root of relative image paths; default: the CSV's folder
    classes: list[str] | None = None  # class order and allow-list; default: sorted labels found
    box_units: Literal["pixel", "normalized"] = "pixel"
    delimiter: str = Field(",", min_length=1, max_length=1)
    label_separator: str = Field(";", min_length=1, max_length=1)
    on_problem: Literal["error", "skip"] = "error"
    check_images: bool = True


InnerSource = Annotated[Union[FolderSource, CocoSource, VocSource, CsvSource],
                        Field(discriminator="format")]


class MergeInput(Section):
    """One source of a merge and how its classes map onto the merged classes."""

    source: InnerSource
    # {source class: merged class}; null drops the class; "*" maps every class not listed.
    class_map: dict[str, str | None] = Field(default_factory=dict)


class MergeSource(Section):
    """Several sources as one manifest; duplicates (same path, or same bytes with `content`) are
    one sample whose labels are the union (the first source's box and split win)."""

    format: Literal["merge"] = "merge"
    inputs: list[MergeInput] = Field(min_length=1)
    classes: list[str] | None = None  # merged class order; default: order of first appearance
    dedupe: Literal["content", "path", "none"] = "content"


DataSource = Annotated[Union[FolderSource, CocoSource, VocSource, CsvSource, MergeSource],
                       Field(discriminator="format")]


class DataConfig(Section):
    source: DataSource
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    cache_dir: Path | None = None  # default: <runs_dir>/.cache
    workers: int = Field(0, ge=0)  # decoding workers; 0 = one per CPU core
    resize: Literal["stretch", "center_crop", "letterbox"] = "stretch"
    # Crop each image to its sample's box enlarged by `crop_margin` x the box's width (height) on
    # each side, clipped to the image, before resizing; samples without a box keep the whole image.
    crop_to_box: bool = False
    crop_margin: float = Field(0.1, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g}"
                             " leaves too little for training; keep the sum below 0.9")
        return self


# ---- model -----------------------------------------------------------------------------------
class BackboneDefaults(NamedTuple):
    alpha: float  # width multiplier used when `model.alpha` is not given
    width_multiplier: bool  # False: a fixed width (alpha must be 1.0)
    imagenet: bool  # keras.applications has ImageNet weights: the default of `model.weights`


# The backbones of the model registry (tinyvision.models.backbones.BACKBONES; a test keeps the two
# in step), described in docs/models.md.
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
PLAIN_CNN_POOLS = frozenset({"max", "avg", "stride", "none"})
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")  # whole-model files that `cut_at` can cut


class PlainCnnConfig(Section):
    """Backbone `plain_cnn`: one block per `filters` entry: conv, BatchNorm, ReLU, then 2x2 max or
    average pooling, or a stride-2 conv (`stride`), or neither (`none`)."""

    filters: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1, max_length=16)
    kernel_size: int = Field(3, ge=1, le=9)
    pool: Literal["max", "avg", "stride", "none"] = "max"
    batchnorm: bool = True

    @field_validator("filters")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if not all(1 <= f <= 4096 for f in value):
            raise ValueError(f"each block's filters must be between 1 and 4096, got {value}")
        return value


class ModelConfig(Section):
    backbone: str = "mobilenet_v1"  # a name of BACKBONE_NAMES (docs/models.md)
    # Width multiplier (MobileNets); default: the backbone's (BACKBONE_DEFAULTS), 1.0 if fixed.
    alpha: float = Field(0.25, gt=0.0, le=4.0)
    input_size: tuple[int, int] = (96, 96)  # height, width; an int means a square
    # auto: grayscale when the sampled training images are gray (equal channels), else rgb
    color_mode: Literal["auto", "rgb", "grayscale"] = "auto"
    # imagenet | none | a weights file (.h5) of this backbone | with `cut_at`, a Keras model file
    # (.keras/.h5). Default: imagenet where keras.applications has weights for the backbone, else none.
    weights: str = "imagenet"
    cut_at: str | None = None  # layer of the model file in `weights` whose output is the backbone
    allow_unsafe_model_code: bool = False  # let that file run stored Python code (Lambda layers)
    plain_cnn: PlainCnnConfig | None = None  # blocks of backbone plain_cnn; default [16, 32, 64]
    # Normalisation inside the model, value = pixel * scale + offset, one number or one per RGB
    # channel; default: the backbone's ([-1, 1] for MobileNets and for a cut model file).
    input_scale: float | tuple[float, float, float] | None = None
    input_offset: float | tuple[float, float, float] | None = None
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    # auto: detection from a source with one box per image (coco/voc mode largest, CSV with box
    # columns), unless data.crop_to_box; multi-label when an image has several labels
    task: Literal["auto", "multiclass", "multilabel", "detection"] = "auto"
    # None: 0.99 (Keras default) with pretrained weights, 0.9 when training from scratch
    # (train.recipe: scratch writes 0.9 into the run's config).
    batchnorm_momentum: float | None = Field(None, gt=0.0, lt=1.0)

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
            close = difflib.get_close_matches(value, sorted(BACKBONE_NAMES), n=2, cutoff=0.5)
            hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise ValueError(f"unknown backbone {value!r}. {hint}Available: "
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


# ---- augmentation ----------------------------------------------------------------------------
# Training-only, on-the-fly augmentation: `train.augment` is a list of ops, each a mapping with
# `op` and that op's parameters (docs/augmentation.md). Geometric ops also move a detection box.
GEOMETRIC_AUGMENT_OPS = frozenset({"flip", "rotation", "zoom", "translation", "shear",
                                   "random_crop"})
PIXEL_AUGMENT_OPS = frozenset({"contrast", "brightness", "hue", "saturation", "channel_shift",
                               "cutout", "noise", "grayscale"})
RGB_ONLY_AUGMENT_OPS = frozenset({"hue", "saturation", "grayscale"})
FLIP_MODES = frozenset({"horizontal", "vertical", "horizontal_and_vertical"})
FILL_MODES = frozenset({"reflect", "constant", "nearest", "wrap"})


class AugmentOp(Section):
    """One augmentation op; it is applied to each training image with `probability`."""

    probability: float = Field(1.0, gt=0.0, le=1.0)


class GeometricAugmentOp(AugmentOp):
    """An op that moves pixels. All geometric ops of a list form one affine transform per image,
    so they share one fill: give `fill_mode`/`fill_value` on one op or the same on all."""

    # None: reflect for classification, constant for detection (a reflected object fools a box).
    fill_mode: Literal["reflect", "constant", "nearest", "wrap"] | None = None
    fill_value: float | None = Field(None, ge=0.0, le=255.0)  # constant fill; None: 128


class FlipAugment(GeometricAugmentOp):
    op: Literal["flip"]
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"
    probability: float = Field(0.5, gt=0.0, le=1.0)  # per flipped axis


class RotationAugment(GeometricAugmentOp):
    op: Literal["rotation"]
    degrees: float = Field(gt=0.0, le=180.0)  # angle drawn uniformly in [-degrees, degrees]


class ZoomAugment(GeometricAugmentOp):
    op: Literal["zoom"]
    range: float = Field(gt=0.0, lt=1.0)  # scale drawn in [1 - range, 1 + range]; > 1 zooms in


class TranslationAugment(GeometricAugmentOp):
    op: Literal["translation"]
    fraction: float = Field(gt=0.0, le=0.5)  # shift per axis in [-fraction, fraction] of the side


class ShearAugment(GeometricAugmentOp):
    op: Literal["shear"]
    degrees: float = Field(gt=0.0, lt=60.0)  # x and y shear angles, each in [-degrees, degrees]


class RandomCropAugment(GeometricAugmentOp):
    """Crop a random window (area fraction `scale`, aspect `ratio`) and resize it to the input."""

    op: Literal["random_crop"]
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    keep_box: bool = True  # detection: the window always contains the whole box

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered_positive(cls, value: tuple[float, float], info: Any) -> tuple[float, float]:
        low, high = value
        upper = 1.0 if info.field_name == "scale" else 10.0
        if not 0.0 < low <= high <= upper:
            raise ValueError(f"expected [low, high] with 0 < low <= high <= {upper:g}, "
                             f"got {list(value)}")
        return value


class ContrastAugment(AugmentOp):
    op: Literal["contrast"]
    factor: float = Field(gt=0.0, le=1.0)  # contrast x U(1 - factor, 1 + factor) about the mean


class BrightnessAugment(AugmentOp):
    op: Literal["brightness"]
    delta: float = Field(gt=0.0, le=1.0)  # adds U(-delta, delta) x 255


class HueAugment(AugmentOp):
    op: Literal["hue"]
    delta: float = Field(gt=0.0, le=0.5)  # hue turned by U(-delta, delta) of a full turn (RGB only)


class SaturationAugment(AugmentOp):
    op: Literal["saturation"]
    factor: float = Field(gt=0.0, le=1.0)  # saturation x U(1 - factor, 1 + factor) (RGB only)


class ChannelShiftAugment(AugmentOp):
    op: Literal["channel_shift"]
    intensity: float = Field(gt=0.0, le=255.0)  # each channel + U(-intensity, intensity)


class CutoutAugment(AugmentOp):
    op: Literal["cutout"]
    size: float = Field(gt=0.0, lt=1.0)  # patch side as a fraction of the image side
    count: int = Field(1, ge=1, le=16)
    fill_value: float = Field(128.0, ge=0.0, le=255.0)
    # Detection: a patch hiding more than this fraction of the box is not applied.
    max_box_cover: float = Field(0.5, ge=0.0, le=1.0)


class NoiseAugment(AugmentOp):
    op: Literal["noise"]
    stddev: float = Field(gt=0.0, le=128.0)  # Gaussian noise, in pixel levels (0..255)


class GrayscaleAugment(AugmentOp):
    op: Literal["grayscale"]
    probability: float = Field(0.2, gt=0.0, le=1.0)  # RGB only


AUGMENT_MODELS = (FlipAugment, RotationAugment, ZoomAugment, TranslationAugment, ShearAugment,
                  RandomCropAugment, ContrastAugment, BrightnessAugment, HueAugment,
                  SaturationAugment, ChannelShiftAugment, CutoutAugment, NoiseAugment,
                  GrayscaleAugment)
_AUGMENT_BY_OP = {get_args(m.model_fields["op"].annotation)[0]: m for m in AUGMENT_MODELS}


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
            close = difflib.get_close_matches(str(op), list(_AUGMENT_BY_OP), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"augment[{i}]: unknown op {op!r}.{hint} "
                             f"Known ops: {', '.join(_AUGMENT_BY_OP)}")
        allowed = [k for k in model.model_fields if k != "op"]
        for key in entry:
            if key != "op" and key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=2, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
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


# ---- training --------------------------------------------------------------------------------
# Options of training, one frozen set each (the Literal types below spell the same; docs/training.md).
OPTIMIZERS = frozenset({"adam", "adamw", "sgd", "rmsprop"})
SCHEDULES = frozenset({"constant", "step", "cosine", "one_cycle", "plateau"})
LOSSES = frozenset({"auto", "cross_entropy", "bce", "focal", "soft_f1"})
BOX_LOSSES = frozenset({"l1", "smooth_l1", "giou"})
CLASS_WEIGHT_MODES = frozenset({"none", "balanced"})
LR_FIND_STAGES = frozenset({"head", "fine_tune"})


class ScheduleConfig(Section):
    """Learning-rate schedule of one stage; a plain string (`schedule: step`) names one with its
    defaults. Each parameter is read only by the schedules named in its comment."""

    name: Literal["constant", "step", "cosine", "one_cycle", "plateau"] = "cosine"
    # constant, step, cosine: linear warm-up from 1% of the rate; None: train.warmup_epochs.
    warmup_epochs: float | None = Field(None, ge=0.0)
    step_epochs: float = Field(3.0, gt=0.0)  # step: multiply the rate by `factor` this often
    factor: float = Field(0.1, gt=0.0, lt=1.0)  # step, plateau: the multiplier of each decay
    patience: int = Field(2, ge=1)  # plateau: epochs without improvement of train.monitor
    min_learning_rate: float = Field(1e-7, ge=0.0)  # plateau: the floor
    final_fraction: float = Field(0.01, gt=0.0, le=1.0)  # cosine: the last rate / learning_rate
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)  # one_cycle: fraction of steps spent rising
    div_factor: float = Field(25.0, gt=1.0)  # one_cycle: starts at learning_rate / div_factor
    final_div_factor: float = Field(1e4, gt=1.0)  # one_cycle: ends at the start / this

    @model_validator(mode="before")
    @classmethod
    def _name_only(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class LrMultipliers(Section):
    """Discriminative learning rates: the stage's rate times a multiplier per layer group."""

    early: float = Field(1.0, gt=0.0)  # backbone layers before `lr_split`
    late: float = Field(1.0, gt=0.0)  # backbone layers from `lr_split` on
    head: float = Field(1.0, gt=0.0)  # the head (layers named head_*)


class LrFindConfig(Section):
    """`tinyvision lr-find`: an exponential sweep of the learning rate over `steps` steps."""

    start: float = Field(1e-7, gt=0.0)
    end: float = Field(10.0, gt=0.0)
    steps: int = Field(200, ge=10, le=10000)
    stage: Literal["head", "fine_tune"] = "head"  # which layers train during the sweep
    # start from these weights instead of a fresh model: a run directory (its best checkpoint),
    # e.g. a run whose head is trained, before sweeping for fine-tuning; or a .weights.h5 file
    weights: str | None = None

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
    # Compute the frozen backbone's features once and train the head on them (only when the
    # stage uses no augmentation, which would change the features every epoch).
    cache_features: bool = True


class FineTuneStage(Section):
    """Stage 2: the backbone is unfrozen from `unfreeze_from` on and fine-tuned at a lower rate."""

    epochs: int = Field(10, ge=0)
    learning_rate: float = Field(1e-4, gt=0.0)
    # "auto": the block 3/4 of the way through the backbone (MobileNet V1: block_10 of 13); a block
    # "block_N" (numbered per backbone, docs/models.md); a layer or native block name ("conv_pw_11",
    # "conv4_block1"); a layer index (int); or a fraction of the backbone's layers (float, 0..1).
    unfreeze_from: str | int | float = "auto"

    @field_validator("unfreeze_from")
    @classmethod
    def _fraction_range(cls, value: str | int | float) -> str | int | float:
        if isinstance(value, float) and not 0.0 <= value <= 1.0:
            raise ValueError(f"a fraction of the backbone's layers must be in [0, 1] (0: all "
                             f"train, 1: only the head), got {value}")
        return value

    # frozen: BatchNorm stays in inference mode (right for pretrained weights); train: it updates;
    # auto: frozen with pretrained weights, train when the backbone starts from random weights.
    batchnorm: Literal["auto", "frozen", "train"] = "auto"
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # Per layer group, e.g. {early: 0.1, late: 0.5, head: 1.0}; None: one rate for all.
    lr_multipliers: LrMultipliers | None = None
    # Where "late" starts (same forms as unfreeze_from); None: halfway from unfreeze_from to the head.
    lr_split: str | int | float | None = None

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
    # Wall-clock minutes of training (every epoch with its validation pass): the throughput of
    # the first steps sizes the schedule, so it finishes (warm-up and cosine) on time.
    minutes: float | None = Field(None, gt=0.0, le=100_000.0)

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
    # auto: `pretrained` when model.weights loads trained weights (imagenet, a file), `scratch`
    # when it is none. pretrained: two stages (head, then fine-tuning). scratch: one stage, every
    # layer trains (docs/training.md). A recipe only fills in settings the config leaves out.
    recipe: Literal["auto", "pretrained", "scratch"] = "auto"
    # Length of the whole training (None: each stage's `epochs`); the stages share it in
    # proportion to their epochs, except that a minutes budget goes to the last stage once the
    # head stage has run its epochs.
    budget: BudgetConfig | None = None
    # Fewest optimizer steps of a stage: a small set trains for more epochs. None: the recipe's.
    min_steps: int | None = Field(None, ge=0)
    batch_size: int = Field(64, ge=1, le=4096)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adamw"
    # Decoupled weight decay of adamw, sgd and rmsprop (adam has none: use adamw for it).
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd and rmsprop
    nesterov: bool = False  # sgd
    warmup_epochs: float = Field(1.0, ge=0.0)  # default warm-up of each stage's schedule
    # auto: cross_entropy for multi-class (and the class of a detection), bce for multi-label.
    loss: Literal["auto", "cross_entropy", "bce", "focal", "soft_f1"] = "auto"
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)  # cross_entropy, bce, focal
    focal_gamma: float = Field(2.0, ge=0.0)
    # Multi-label: positives weighted alpha, negatives 1 - alpha; multi-class: a constant factor
    # (as Keras). None: no balancing.
    focal_alpha: float | None = Field(None, gt=0.0, lt=1.0)
    box_loss: Literal["l1", "smooth_l1", "giou"] = "giou"  # detection: loss of the box output
    box_loss_weight: float = Field(1.0, ge=0.0)  # total = class loss + weight x box loss
    # none | balanced (inverse class frequency) | {class: weight}; multi-label: positive weights.
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    oversample: bool = False  # repeat rarer-class training samples so classes are seen equally
    lr_find: LrFindConfig = Field(default_factory=LrFindConfig)
    monitor: Literal["val_loss", "val_accuracy"] = "val_accuracy"
    # Early stopping: epochs without improvement of `monitor`; None: off (the schedule ends the
    # run; the best epoch's weights are still kept).
    patience: int | None = Field(5, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap for quick trials and tests
    # tf.distribute strategy: none | mirrored (GPUs, or logical CPUs) | multi_worker (TF_CONFIG).
    strategy: Literal["none", "mirrored", "multi_worker"] = "none"
    head: HeadStage = Field(default_factory=HeadStage)
    fine_tune: FineTuneStage = Field(default_factory=FineTuneStage)
    # Training-only augmentation ops, in order (docs/augmentation.md); empty: none.
    augment: AugmentList = Field(default_factory=list)

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


# ---- export and verification -----------------------------------------------------------------
class ExportConfig(Section):
    representative_samples: int = Field(200, ge=8)  # training images used to calibrate int8
    c_array_name: str = "g_model"

    @field_validator("c_array_name")
    @classmethod
    def _c_identifier(cls, value: str) -> str:
        if not _C_IDENTIFIER.match(value):
            raise ValueError(f"must be a C identifier (letters, digits, '_', not starting with a "
                             f"digit), got {value!r}")
        return value


class VerifyConfig(Section):
    tflm_samples: int = Field(100, ge=1)  # test images run on TFLM and compared to LiteRT reference
    max_arena_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # upper end of the arena search


class EvaluateConfig(Section):
    beta: float = Field(1.0, gt=0.0)  # F-beta weight of recall for multi-label thresholds (2: recall)
    tta: bool = False  # test-time augmentation: average scores over the image and its mirror image
    worst_n: int = Field(8, ge=1)  # most confident wrong predictions kept per class


class RunConfig(Section):
    name: str = "run"
    seed: int = 0
    runs_dir: Path = Path("runs")
    overwrite: bool = False  # reuse runs/<name> instead of picking a free name
    # Also log each finished run to MLflow (extra "mlflow"); the sqlite registry is always kept.
    tracking: Literal["none", "mlflow"] = "none"
    tracking_uri: str | None = None
    tracking_experiment: str = "tinyvision"
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @model_validator(mode="after")
    def _detection_keeps_the_whole_image(self) -> RunConfig:
        if self.model.task == "detection" and self.data.crop_to_box:
            raise ValueError("model.task=detection predicts the box, so the image cannot be cropped "
                             "to it: set data.crop_to_box: false, or model.task: multiclass to "
                             "classify the cropped object.")
        return self

    @property
    def cache_dir(self) -> Path:
        return self.data.cache_dir or self.runs_dir / ".cache"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---- loading ---------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> RunConfig:
    """Read a YAML file (or take `base`), apply `key=value` overrides, validate.

    Relative data paths in a file are resolved against the file's folder, so a config works from
    any working directory.
    """
    raw: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"Cannot read config {path}: {exc.strerror}.") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config {path} must be a mapping of sections (data:, model:, ...), "
                              f"got a {type(loaded).__name__}.")
        raw = _resolve_relative_paths(loaded, path.parent)
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, source=str(path) if path else "config")


def validate_config(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def apply_override(raw: dict, item: str) -> None:
    """Apply one `dotted.key=value` override; the value is parsed as YAML (`0.5`, `[96, 96]`)."""
    if "=" not in item:
        raise ConfigError(f"Override {item!r} must look like key=value, e.g. train.batch_size=32.")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"Override key {key!r} is empty or has an empty part.")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"Override {item!r}: `{part}` is a value, not a section.")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} invalid field(s):"]
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not _is_union_tag(p)]
        field = ".".join(loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            section = ".".join(loc[:-1]) or "top level"
            allowed = _allowed_keys(error["loc"][:-1])
            hint = ""
            close = difflib.get_close_matches(loc[-1], allowed, n=3, cutoff=0.5)
            if close:
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?"
            lines.append(f"  - unknown key `{field}` in section {section}.{hint} "
                         f"Allowed keys: {', '.join(allowed)}.")
        elif error["type"] == "missing":
            lines.append(f"  - `{field}` is required but missing.")
        elif not loc:  # a check across sections: its message names the fields
            lines.append(f"  - {error['msg'].removeprefix('Value error, ')}")
        else:
            received = error.get("input")
            lines.append(f"  - `{field}`: {error['msg']}; received {received!r}.")
    return "\n".join(lines)


_SOURCE_TAGS: set[str] = set()


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in _source_tags()


def _source_models() -> tuple[type[BaseModel], ...]:
    inner = get_args(DataSource)[0]
    return get_args(inner) or (inner,)  # Union[X] of one member collapses to X


def _source_tags() -> set[str]:
    if not _SOURCE_TAGS:
        for member in _source_models():
            _SOURCE_TAGS.update(get_args(member.model_fields["format"].annotation))
    return _SOURCE_TAGS


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names of the section at `loc` (a pydantic error location)."""
    model: Any = RunConfig
    for part in loc:
        if _is_union_tag(part):
            model = next(m for m in _source_models()
                         if part in get_args(m.model_fields["format"].annotation))
            continue
        if isinstance(part, int):  # an item of a list of sections (merge inputs)
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _section_type(annotation: Any) -> Any:
    """The section model behind `X`, `Annotated[X, ...]`, `list[X]` or `X | None`."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    members = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(members) == 1:
        annotation = members[0]
    return annotation


# Keys of a data source that hold paths (relative to the config file's folder).
_SOURCE_PATH_KEYS = ("root", "annotations", "images", "path", "train_annotations",
                     "val_annotations", "test_annotations", "train_images", "val_images",
                     "test_images")


def _resolve_relative_paths(raw: dict, folder: Path) -> dict:
    """Make data paths in a config file relative to the file, not to the working directory."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), dict):
        _resolve_source_paths(data["source"], folder)
    return raw


def _resolve_source_paths(source: dict, folder: Path) -> None:
    for key in _SOURCE_PATH_KEYS:
        value = source.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            source[key] = str((folder / value).resolve())
    for item in source.get("inputs") or []:  # a merge: resolve each input's source as well
        if isinstance(item, dict) and isinstance(item.get("source"), dict):
            _resolve_source_paths(item["source"], folder)
