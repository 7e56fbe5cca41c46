"""Typed records: what the stages hand each other and what a run folder keeps as JSON.

Each record is a dataclass with one `to_json` and one `from_json`; its field names are the JSON
keys (`json_key` where a key is a Python word, e.g. summary.json's "float"), so each key is spelled
here and nowhere else: producers fill the fields by name, readers use attributes. Every file
carries its record's `version`; a reader refuses another version with what to do instead of
half-reading it (files written before versions existed have the layout of version 1).

One name per quantity: `int8_bytes` is the int8 model's size everywhere (export, verify,
summary, search, registry), `arena_bytes` the tensor arena the Python TFLM interpreter needs.

- `Evaluation`: metrics.json, the float model on the evaluation split.
- `ExportResult`: the export stage's result (summary.json takes its figures).
- `VerifyReport`: verify.json, the int8 model on TFLM and the reference kernels.
- `BoardFit`: export/fit.json, and the fit inside verify.json and summary.json.
- `Summary`: summary.json, the run's headline figures (its fields are the documented keys).
- `ResumeState`: checkpoints/state.json, where a killed run resumes.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tinyvision.errors import RunError
from tinyvision.files import atomic_write_json

_R = TypeVar("_R", bound="Record")


def json_key(name: str) -> dict:
    """Field metadata: the JSON key of a field whose name cannot be the key."""
    return {"key": name}


def nested(record: type[Record]) -> dict:
    """Field metadata: the field holds another record (kept as its JSON inside this one)."""
    return {"record": record}


@dataclass
class Record:
    """Base of the records: `to_json`, `from_json`, `read` and `write` with a checked version."""

    VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str] = "record"
    # what to do about a damaged file; {folder}: the folder of the file (the run, or its export/)
    ADVICE: ClassVar[str] = "run the stage that writes it again"

    def to_json(self) -> dict[str, Any]:
        """The JSON object, `version` first; fields that are None are left out."""
        out: dict[str, Any] = {"version": self.VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.metadata.get("key", f.name)] = value.to_json() if isinstance(value, Record) \
                else value
        return out

    @classmethod
    def _advice(cls, source: str) -> str:
        return cls.ADVICE.format(folder=Path(source).parent if source else "RUN")

    @classmethod
    def from_json(cls: type[_R], data: Any, source: str = "") -> _R:
        """The record from its JSON object; a RunError naming `source` when the object is not
        one, is of another version or lacks a required field."""
        where = source or cls.WHAT
        advice = cls._advice(source)
        if not isinstance(data, dict):
            raise RunError(f"{where} holds a {type(data).__name__}, not a {cls.WHAT}; "
                           f"{advice}.")
        version = data.get("version", 1)  # written before records carried versions: version 1
        if version != cls.VERSION:
            newer = isinstance(version, int) and version > cls.VERSION
            raise RunError(f"{where} is a {cls.WHAT} of version {version!r}; this tinyvision reads "
                           f"version {cls.VERSION}. "
                           + ("Use the newer tinyvision that wrote it, or " if newer else "")
                           + f"{advice}.")
        values: dict[str, Any] = {}
        missing = []
        for f in fields(cls):
            key = f.metadata.get("key", f.name)
            if key not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    missing.append(key)
                continue
            value = data[key]
            inner = f.metadata.get("record")
            if inner is not None and value is not None:
                value = inner.from_json(value, f"{where}'s {key}")
            values[f.name] = value
        if missing:
            raise RunError(f"{where} lacks {', '.join(missing)}; {advice}.")
        return cls(**values)

    @classmethod
    def read(cls: type[_R], path: Path) -> _R | None:
        """The record in `path`, or None when the file is not there; a RunError when it is
        damaged or of another version."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
            reason = f"{type(exc).__name__}: {exc}"[:200]
            raise RunError(f"{path} cannot be read ({reason}); {cls._advice(str(path))}.") \
                from None
        return cls.from_json(data, str(path))

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())


@dataclass
class FitEstimate(Record):
    """The estimates a measured fit replaced (flash and RAM totals, latency), kept beside it."""

    WHAT: ClassVar[str] = "fit estimate"
    ADVICE: ClassVar[str] = "run `tinyvision export` (or `verify`) again to rewrite it"

    flash: int
    ram: int
    latency_ms: float
    cycles_per_mac: float


@dataclass
class BoardFit(Record):
    """Does the int8 model fit the board (deploy/fit.py): flash and RAM (each a table of parts
    with `total`, `available`, `fits`, `measured`), the latency and how it was found."""

    WHAT: ClassVar[str] = "board fit"
    ADVICE: ClassVar[str] = "run `tinyvision export` (or `verify`) again to rewrite it"

    board: str
    title: str
    core: str
    clock_mhz: float
    basis: str  # "measured" on the emulated firmware, or "estimate"
    flash: dict[str, Any]
    ram: dict[str, Any]
    macs: int
    cycles_per_mac: float
    latency_ms: float
    latency_basis: str  # "instructions" (counted on the emulated core) or "macs"
    latency_note: str
    fits: bool
    advice: list[str] = field(default_factory=list)
    # a measured fit keeps the estimate beside it
    estimate: FitEstimate | None = field(default=None, metadata=nested(FitEstimate))
    firmware: dict[str, Any] | None = None  # the measured firmware: core, instructions, ...
    cycles_per_instruction: float | None = None


@dataclass
class Evaluation(Record):
    """metrics.json: the float model's metrics on the evaluation split (evaluate/metrics.py's
    dict, with split, images, tta and, for a box, "boxes" with its constant baselines), the
    worst predictions and boxes, and the learnt-nothing warnings."""

    WHAT: ClassVar[str] = "evaluation"
    ADVICE: ClassVar[str] = "run `tinyvision eval {folder}` again to rewrite it"

    float_metrics: dict[str, Any] = field(metadata=json_key("float"))
    warnings: list[dict[str, str]] = field(default_factory=list)
    worst_predictions: dict[str, list[dict[str, Any]]] | None = None  # per class
    worst_boxes: list[dict[str, Any]] | None = None  # lowest IoU first


@dataclass
class ExportResult(Record):
    """What the export stage made: the int8 model and the other formats, with their sizes."""

    WHAT: ClassVar[str] = "export result"
    ADVICE: ClassVar[str] = "run `tinyvision export` again"

    int8_bytes: int
    float_bytes: int
    calibration_images: int
    quantization: dict[str, Any]  # input and output scales and zero points
    weight_quantization: str
    formats: dict[str, dict[str, Any]]  # format -> {file, bytes}
    qat: dict[str, Any]
    ops: list[str]
    macs: int
    arena_bytes: int
    seconds: float
    fit: BoardFit | None = field(default=None, metadata=nested(BoardFit))


@dataclass
class VerifyReport(Record):
    """verify.json: the int8 model on TFLM (a sample, byte for byte) and on the LiteRT reference
    kernels (the whole split), its metrics, and the device side."""

    WHAT: ClassVar[str] = "verify report"
    ADVICE: ClassVar[str] = "run `tinyvision verify {folder}` again to rewrite it"

    tflm_images: int
    reference_images: int
    tflm_equals_reference: bool
    arena_bytes: int
    int8_bytes: int
    ops: dict[str, int]  # op -> how many times the model uses it
    input_quantization: dict[str, Any]
    reference_ms_per_image: float | None = None  # time to score one image, Python side
    tflm_ms_per_image: float | None = None
    split: str | None = None
    tta: bool | None = None
    metrics: dict[str, Any] | None = None
    delta: dict[str, float] | None = None  # int8 - float, per headline metric
    class_drops: list[dict[str, Any]] | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)
    formats: dict[str, dict[str, Any]] | None = None  # the other formats on their runtimes
    qat: dict[str, Any] | None = None
    app: dict[str, Any] | None = None  # the generated application built and run on the host
    firmware: dict[str, Any] | None = None  # the firmware on the emulated core
    fit: BoardFit | None = field(default=None, metadata=nested(BoardFit))
    camera: dict[str, Any] | None = None  # train/serve skew through deploy.camera


@dataclass
class Summary(Record):
    """summary.json: a run's headline figures, written at its end (also when the export was
    refused: status export_failed, with `error`)."""

    WHAT: ClassVar[str] = "run summary"
    ADVICE: ClassVar[str] = "train the run again, or remove the file"

    run: str
    status: str
    task: str
    classes: list[str]
    images: dict[str, int]  # split -> images
    recipe: str | None = None
    bad_images: int = 0
    best_epoch: int | None = None
    start: dict[str, Any] | None = None  # the start check of pretrained weights
    training: dict[str, Any] | None = None  # seconds and the stages' epochs
    float_metrics: dict[str, Any] | None = field(default=None, metadata=json_key("float"))
    box_baselines: dict[str, Any] | None = None  # the constant boxes a box must beat
    warnings: list[dict[str, str]] = field(default_factory=list)
    params: int | None = None
    macs: int | None = None
    int8: dict[str, Any] | None = None
    delta: dict[str, float] | None = None
    int8_bytes: int | None = None
    float_bytes: int | None = None
    arena_bytes: int | None = None
    ops: list[str] | None = None
    app: dict[str, Any] | None = None
    firmware: dict[str, Any] | None = None
    fit: BoardFit | None = field(default=None, metadata=nested(BoardFit))
    camera: dict[str, Any] | None = None
    qat: dict[str, Any] | None = None
    formats: dict[str, dict[str, Any]] | None = None
    seconds: float | None = None
    error: str | None = None
    study: str | None = None  # the `tinyvision search` study a trial run belongs to


@dataclass
class ResumeState(Record):
    """checkpoints/state.json: the last finished epoch of a stage, the weights and optimizer files
    that hold it, and the counters the callbacks keep, so a killed run resumes where it stopped."""

    WHAT: ClassVar[str] = "resume state"
    ADVICE: ClassVar[str] = "resume it with the tinyvision that started it, or start a new run"

    stage: str
    stage_epochs: int
    epoch_offset: int
    finished: bool
    weights: str  # file names in checkpoints/
    optimizer: str | None = None
    best: float | None = None  # the monitored value of the kept checkpoint, and its epoch
    best_epoch: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list)  # the epoch log's rows so far
    early_stopping: dict[str, Any] | None = None
    plateau: dict[str, Any] | None = None
    planned_steps: int | None = None  # a minutes budget had sized the stage
    schedule: dict[str, Any] | None = None  # a minutes budget had stretched the schedule
