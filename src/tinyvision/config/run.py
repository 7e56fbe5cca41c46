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
    c_array_name: str = "g_model"
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
        return value


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
