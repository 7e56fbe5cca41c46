"""The whole run config (`RunConfig`) and its small sections: export, deploy, verify, evaluate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator, model_validator

from tinyvision.config._base import Section
from tinyvision.config.data import DataConfig
from tinyvision.config.model import ModelConfig
from tinyvision.config.search import SearchConfig
from tinyvision.config.train import TrainConfig

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# C11 and C++17 keywords, with C++'s alternative operator tokens
C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef
    union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic
    _Imaginary _Noreturn _Static_assert _Thread_local alignas alignof and and_eq asm bitand bitor
    bool catch char8_t char16_t char32_t class compl concept consteval constexpr constinit
    const_cast co_await co_return co_yield decltype delete dynamic_cast explicit export false
    friend mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected
    public reinterpret_cast requires static_assert static_cast template this thread_local throw
    true try typeid typename using virtual wchar_t xor xor_eq""".split())
# Names the generated application (deploy/app.py: main.cc, model_ops.h; camera_c.py) declares
# or uses where the array is visible: an array of the same name would not compile, or would be
# shadowed by a local. Keep in step with those generators.
APP_NAMES = frozenset({
    "main", "argc", "argv", "model", "resolver", "interpreter", "input", "frames", "outputs",
    "inputs", "rc", "g_arena", "g_frame", "kArenaBytes", "kOutputOrder", "ReadFrame",
    "kModelOpCount", "ModelOpResolver", "RegisterModelOps", "tv_preprocess", "tflite", "std",
    # the instruction counter of the Cortex-M build (-DTV_COUNT_INSTRUCTIONS)
    "t0", "t1", "SysTick", "TickCounter", "g_counter", "kMaxEvents", "g_event_tags",
    "g_event_ticks", "kStackPaint", "kStackPaintBytes", "g_stack_top", "PaintStack", "StackUsed"})
# the C library's names the application includes (stdio, stdint, string)
C_LIBRARY_NAMES = frozenset({
    "FILE", "NULL", "EOF", "size_t", "int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t",
    "uint32_t", "int64_t", "uint64_t", "printf", "fprintf", "fopen", "fclose", "fread", "fwrite",
    "stdin", "stdout", "stderr", "memcpy", "memset", "strlen", "mallinfo"})
# the prefixes of the generated C's own names (tv_preprocess, TV_* and TINYVISION_* macros) and
# of TFLM's (the tflite namespace, TfLite* types, kTfLite* constants); case-insensitive
RESERVED_PREFIXES = ("tv_", "tinyvision", "tflite", "ktflite")


CameraPixelFormat = Literal["rgb565", "rgb888", "grayscale", "yuv422"]
Interpolation = Literal["nearest", "bilinear"]
# the byte orders each format can have; the first is the default
CAMERA_BYTE_ORDERS = {"rgb565": ("big", "little"), "rgb888": ("rgb", "bgr"),
                      "grayscale": ("none",), "yuv422": ("yuyv", "uyvy")}


class CameraConfig(Section):
    format: CameraPixelFormat = Field(
        "rgb565", description="pixel format of the camera frame")
    width: int = Field(320, ge=1, le=8192)
    height: int = Field(240, ge=1, le=8192)
    byte_order: str | None = Field(
        None,
        description="rgb565: big (high byte first, as OV7670-class sensors send) or little; "
                    "yuv422: yuyv or uyvy; rgb888: rgb or bgr; default: the first")
    interpolation: Interpolation = Field(
        "bilinear", description="resizing in the generated C preprocessing")

    @model_validator(mode="after")
    def _byte_order_of_the_format(self) -> CameraConfig:
        allowed = CAMERA_BYTE_ORDERS[self.format]
        if self.byte_order is None:
            self.byte_order = allowed[0]
        elif self.byte_order not in allowed:
            raise ValueError(f"byte_order {self.byte_order!r} does not apply to {self.format}: "
                             f"use one of {', '.join(allowed)}")
        if self.format == "yuv422" and self.width % 2:
            raise ValueError(f"a yuv422 frame has an even width (two pixels share U and V), "
                             f"got {self.width}")
        return self


class DeployConfig(Section):
    camera: CameraConfig | None = Field(
        None,
        description="the camera frames the device feeds the model; the export generates C "
                    "preprocessing from them. None: frames are images at the model's input size")


ExportFormat = Literal["int8", "float16", "onnx", "onnx_int8", "coreml"]
WeightQuantization = Literal["per_channel", "per_tensor"]


class ExportConfig(Section):
    formats: list[ExportFormat] = Field(
        default_factory=lambda: ["int8"],
        description="int8 (LiteRT, the device model; always made), float16 (LiteRT), onnx "
                    "(float), onnx_int8 (QDQ), coreml (ML Program); each verified in its runtime")
    representative_samples: int = Field(
        200, ge=8,
        description="training images used to calibrate int8, drawn class-balanced; at least "
                    "one training batch")
    weight_quantization: WeightQuantization = Field(
        "per_channel", description="int8 weight scales: one per output channel, or per tensor")
    max_class_drop: float = Field(
        0.05, ge=0.0, le=1.0,
        description="warn when a class's F1 drops more than this from float to int8")
    qat: Literal["auto", "on", "off"] = Field(
        "auto",
        description="quantisation-aware fine-tuning: auto runs it when post-training int8 loses "
                    "more than qat_threshold accuracy to float on the val split")
    qat_threshold: float = Field(0.01, ge=0.0, le=1.0)
    qat_steps: int = Field(300, ge=1, description="optimiser steps of the QAT fine-tune")
    qat_learning_rate: float = Field(1e-4, gt=0.0)
    c_array_name: str = Field(
        "g_model",
        description="the model's C array in export/model_int8.h: a C identifier that is no "
                    "keyword and no name the generated application or the C library uses")
    board: str | None = Field(
        None,
        description="a board profile (stm32h743, nrf52840, ... or a YAML path): the export "
                    "fails with a fit table when the model does not fit it")

    @field_validator("formats")
    @classmethod
    def _int8_first_and_once(cls, value: list[str]) -> list[str]:
        # int8 is the model verify runs on TFLM and the C array holds: always made, listed first
        return ["int8", *dict.fromkeys(f for f in value if f != "int8")]

    @field_validator("c_array_name")
    @classmethod
    def _c_identifier(cls, value: str) -> str:
        if not _C_IDENTIFIER.match(value):
            raise ValueError(f"must be a C identifier (letters, digits, '_', not starting with a "
                             f"digit), got {value!r}")
        clash = _c_name_clash(value)
        if clash:
            raise ValueError(f"{value!r} is {clash}, so the generated C would not compile or "
                             "would mean something else; choose another name, e.g. g_model or "
                             "person_model")
        return value


def _c_name_clash(name: str) -> str | None:
    """Why `name` cannot be the model array's name in the generated C, or None."""
    if name in C_KEYWORDS:
        return "a C/C++ keyword"
    if name in APP_NAMES:
        return "a name the generated application declares or uses (export/app/main.cc)"
    if name in C_LIBRARY_NAMES:
        return "a name from the C library the application includes"
    if name.startswith("_") or "__" in name:
        return "reserved in C and C++ (a leading or a double underscore)"
    if name.lower().startswith(RESERVED_PREFIXES):
        return (f"named like the generated code's or TFLM's own names (prefixes "
                f"{', '.join(RESERVED_PREFIXES)})")
    return None


class VerifyConfig(Section):
    tflm_samples: int = Field(
        100, ge=1,
        description="test images run on TFLM and compared to LiteRT reference")
    max_arena_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="upper end of the arena search")
    tflm_source: Path | None = Field(
        None,
        description="a TFLM C++ source tree (build.sh, tflm_flags.mk) to compile the generated "
                    "application against and check it on the host; default $TINYVISION_TFLM_SOURCE")
    app_frames: int = Field(
        8, ge=1, description="camera frames the compiled application is checked on")
    firmware: bool = Field(
        True,
        description="also build the application as firmware for export.board's core (CMSIS-NN "
                    "kernels) and run it on the emulated core (QEMU), on the same frames: "
                    "measured flash, RAM and instructions replace the estimates; needs the Arm "
                    "toolchain and qemu-system-arm (without them: said, and estimates kept)")


class EvaluateConfig(Section):
    beta: float = Field(
        1.0, gt=0.0,
        description="F-beta weight of recall for multi-label thresholds (2: recall)")
    tta: bool = Field(
        False,
        description="test-time augmentation: average scores over the image and its mirror image")
    worst_n: int = Field(8, ge=1, description="most confident wrong predictions kept per class")


class RunConfig(Section):
    name: str = "run"
    seed: int = 0
    runs_dir: Path = Path("runs")
    overwrite: bool = Field(False, description="reuse runs/<name> instead of picking a free name")
    tracking: Literal["none", "mlflow"] = Field(
        "none",
        description="Also log each finished run to MLflow (extra \"mlflow\"); the sqlite registry "
                    "is always kept.")
    tracking_uri: str | None = None
    tracking_experiment: str = "tinyvision"
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

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
