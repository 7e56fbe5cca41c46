"""The run config: one YAML file per run, validated by pydantic before any work starts.

Every section forbids unknown keys; an error names the field (`train.batch_size`), the value received
and what is allowed, with close matches for a mistyped key. `key=value` overrides from the command
line use the same dotted names.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tinyvision.errors import ConfigError

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


DataSource = Annotated[Union[FolderSource], Field(discriminator="format")]


class DataConfig(Section):
    source: DataSource
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    cache_dir: Path | None = None  # default: <runs_dir>/.cache
    workers: int = Field(0, ge=0)  # decoding workers; 0 = one per CPU core
    resize: Literal["stretch", "center_crop", "letterbox"] = "stretch"

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g}"
                             " leaves too little for training; keep the sum below 0.9")
        return self


# ---- model -----------------------------------------------------------------------------------
class ModelConfig(Section):
    backbone: Literal["mobilenet_v1"] = "mobilenet_v1"
    alpha: float = Field(0.25, gt=0.0, le=4.0)
    input_size: tuple[int, int] = (96, 96)  # height, width; an int means a square
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    weights: str = "imagenet"  # imagenet | none | path to a weights file
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    task: Literal["auto", "multiclass", "multilabel"] = "auto"
    # None: 0.99 (Keras default) with pretrained weights, 0.9 when training from scratch.
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

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"


# ---- training --------------------------------------------------------------------------------
class HeadStage(Section):
    """Stage 1: the backbone is frozen and only the head learns."""

    epochs: int = Field(10, ge=0)
    learning_rate: float = Field(1e-3, gt=0.0)


class FineTuneStage(Section):
    """Stage 2: the backbone is unfrozen from `unfreeze_from` on and fine-tuned at a lower rate."""

    epochs: int = Field(10, ge=0)
    learning_rate: float = Field(1e-4, gt=0.0)
    # A block ("block_10": MobileNet V1 blocks 1..13), a layer name ("conv_pw_11") or a layer index.
    unfreeze_from: str | int = "block_10"
    # frozen: BatchNorm stays in inference mode (right for pretrained weights); train: it updates;
    # auto: frozen with pretrained weights, train when the backbone starts from random weights.
    batchnorm: Literal["auto", "frozen", "train"] = "auto"


class TrainConfig(Section):
    batch_size: int = Field(64, ge=1, le=4096)
    optimizer: Literal["adam", "adamw"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)  # linear warm-up, then cosine decay, in each stage
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    monitor: Literal["val_loss", "val_accuracy"] = "val_accuracy"
    patience: int = Field(5, ge=1)  # early stopping: epochs without improvement of `monitor`
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap for quick trials and tests
    head: HeadStage = Field(default_factory=HeadStage)
    fine_tune: FineTuneStage = Field(default_factory=FineTuneStage)


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


class RunConfig(Section):
    name: str = "run"
    seed: int = 0
    runs_dir: Path = Path("runs")
    overwrite: bool = False  # reuse runs/<name> instead of picking a free name
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)

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
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _section_type(annotation: Any) -> Any:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _resolve_relative_paths(raw: dict, folder: Path) -> dict:
    """Make data paths in a config file relative to the file, not to the working directory."""
    data = raw.get("data")
    if isinstance(data, dict):
        source = data.get("source")
        if isinstance(source, dict):
            for key in ("root", "annotations", "images", "path"):
                value = source.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute():
                    source[key] = str((folder / value).resolve())
    return raw
