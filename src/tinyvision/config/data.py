"""data: where the images and labels come from (`data.source`: class folders, COCO, Pascal
VOC, CSV, a merge of them), the splits, the decoding settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field, field_validator, model_validator

from tinyvision.config._base import Section, choices
from tinyvision.errors import did_you_mean

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # the common ones; data.cache reads more


class FolderSource(Section):
    """Class-per-folder images: `root/<class>/*.jpg`, or `root/{train,val,test}/<class>/*.jpg`.

    A file name found in several class folders is one multi-label sample with all those labels.
    """

    format: Literal["folder"] = "folder"
    root: Path
    extensions: list[str] | None = Field(
        None, description="file extensions read as images; default: every format Pillow decodes "
                          "(JPEG, PNG, GIF, BMP, TIFF, WebP, ...)")

    @field_validator("extensions")
    @classmethod
    def _dotted_lowercase(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [e.lower() if e.startswith(".") else "." + e.lower() for e in value]


# The choices of the data sources, each declared once.
SourceMode = Literal["presence", "largest"]
# What to do with crowd / difficult / truncated objects: count them like any object, ignore them
# (they do not make a class present, but their image is never a negative), or drop their image.
ObjectPolicy = Literal["include", "ignore", "drop_image"]
ProblemPolicy = Literal["error", "skip"]
DedupeMode = Literal["content", "path", "none"]
ResizeMode = Literal["stretch", "center_crop", "letterbox"]
SplitName = Literal["train", "val", "test"]
SOURCE_MODES, OBJECT_POLICIES = choices(SourceMode), choices(ObjectPolicy)
PROBLEM_POLICIES, DEDUPE_MODES = choices(ProblemPolicy), choices(DedupeMode)
RESIZE_MODES = choices(ResizeMode)
_SPLIT_NAMES = get_args(SplitName)


class NegativeOptions(Section):
    """An extra class of images that show none of the positive classes.

    Images are sampled evenly across the other categories (round robin, seeded) so that the
    negatives are not all kitchens; by default as many as the largest positive class has.
    """

    name: str = "negative"
    size: int | None = Field(
        None, ge=1,
        description="total negatives; default: size of the largest class")
    from_categories: list[str] | None = Field(
        None,
        description="default: every category that is not positive")
    include_empty: bool = Field(
        True,
        description="images with no annotated object at all are candidates too")
    allow_small_positives: bool = Field(
        False,
        description="False: an image with any object of a positive class (however small) is never "
                    "a negative. True: images whose positive objects are all below `min_area` may "
                    "be negatives (VWW style).")


class AnnotationSource(Section):
    """Options shared by the detection-annotation formats (COCO, Pascal VOC)."""

    mode: SourceMode = Field(
        "presence",
        description="presence: multi-label \"is there a <class>\" labels; largest: the largest "
                    "object's class + box.")
    classes: list[str] | dict[str, list[str]] | None = Field(
        None,
        description="Output classes: names of categories, or {output class: [categories]} to group"
                    " categories. Required for presence; for largest, default: every category that"
                    " occurs.")
    min_area: float | dict[str, float] = Field(
        0.0,
        description="Smallest object that counts, as a fraction of the image area: one number or "
                    "{class: number}.")
    negative: NegativeOptions | None = None
    max_per_class: int | dict[str, int] | None = Field(
        None,
        description="At most this many images per class (seeded undersampling): one number or "
                    "{class: number}.")
    on_problem: ProblemPolicy = Field(
        "error",
        description="error: bad entries stop the build with one summary; skip: they are dropped, "
                    "with a warning.")
    check_images: bool = Field(True, description="check that every selected image file exists")

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
    iscrowd: ObjectPolicy | None = Field(
        None,
        description="Crowd regions: default include for presence (a crowd shows the class), ignore"
                    " for largest.")
    area: Literal["box", "segmentation"] = Field(
        "box",
        description="which area `min_area` and \"largest\" compare")

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
    image_sets: dict[SplitName, str] | None = Field(
        None,
        description="VOCdevkit only: {split: image set name}; default train/val/test lists that "
                    "exist.")
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
    images: Path | None = Field(
        None,
        description="root of relative image paths; default: the CSV's folder")
    classes: list[str] | None = Field(
        None,
        description="class order and allow-list; default: sorted labels found")
    box_units: Literal["pixel", "normalized"] = "pixel"
    delimiter: str = Field(",", min_length=1, max_length=1)
    label_separator: str = Field(";", min_length=1, max_length=1)
    on_problem: ProblemPolicy = "error"
    check_images: bool = True


InnerSource = Annotated[Union[FolderSource, CocoSource, VocSource, CsvSource],
                        Field(discriminator="format")]


class MergeInput(Section):
    """One source of a merge and how its classes map onto the merged classes."""

    source: InnerSource
    class_map: dict[str, str | None] = Field(
        default_factory=dict,
        description="{source class: merged class}; null drops the class; \"*\" maps every class "
                    "not listed.")


class MergeSource(Section):
    """Several sources as one manifest; duplicates (same path, or same bytes with `content`) are
    one sample whose labels are the union (the first source's box and split win)."""

    format: Literal["merge"] = "merge"
    inputs: list[MergeInput] = Field(min_length=1)
    classes: list[str] | None = Field(
        None,
        description="merged class order; default: order of first appearance")
    dedupe: DedupeMode = "content"


DataSource = Annotated[Union[FolderSource, CocoSource, VocSource, CsvSource, MergeSource],
                       Field(discriminator="format")]


class DataConfig(Section):
    source: DataSource
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    cache_dir: Path | None = Field(None, description="default: <runs_dir>/.cache")
    workers: int = Field(0, ge=0, description="decoding workers; 0 = one per CPU core")
    resize: ResizeMode = "stretch"
    crop_to_box: bool = Field(
        False,
        description="Crop each image to its sample's box enlarged by `crop_margin` x the box's "
                    "width (height) on each side, clipped to the image, before resizing; samples "
                    "without a box keep the whole image.")
    crop_margin: float = Field(0.1, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g}"
                             " leaves too little for training; keep the sum below 0.9")
        return self
