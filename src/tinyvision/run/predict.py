"""Run a trained model on new image files: labels, scores and (box models) pixel boxes.

The model is a run's float `.keras` or int8 `.tflite` (the latter on the LiteRT reference kernels,
bit-exact with TensorFlow Lite Micro). Everything else comes from the run directory: input size,
colour mode and resize from config.yaml, class names from manifest.jsonl, multi-label thresholds
from thresholds.json. Images go through `data.cache.decode_image` with the run's `DecodeSpec`, so
the model sees exactly the pixels it was trained on. An int8 model's thresholds are snapped to
its output grid, as in the exported C arrays, so predict answers as the device does.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyvision.config import RunConfig, load_config
from tinyvision.data.cache import (image_extensions, BadImage, DecodeSpec, decode_image,
                                   letterbox_placement, source_region)
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources.boxes import image_size
from tinyvision.deploy.camera import RAW_FRAME_SUFFIXES
from tinyvision.deploy.outputs import snap_thresholds
from tinyvision.deploy.runners import ReferenceRunner
from tinyvision.layout import CONFIG_FILE
from tinyvision.errors import ConfigError, DataError, ExportError, ModelError, RunError, check_choice
from tinyvision.evaluate.tta import int8_scorer, keras_scorer, tta_outputs
from tinyvision.files import atomic_path, atomic_write_text
from tinyvision.models.outputs import ModelOutputs, has_class_output, output_kinds, split_outputs
from tinyvision.report.plots import PRED_COLOUR, annotate
from tinyvision.run.device import CameraScorer
from tinyvision.run.folder import RunDir, open_run_dir
from tinyvision.run.prepared import decode_spec

log = logging.getLogger("tinyvision")

MODEL_KINDS = frozenset({"auto", "int8", "float"})
OUTPUT_FORMATS = frozenset({"table", "json", "csv"})
_SUFFIX_KIND = {".tflite": "int8", ".keras": "float"}
BATCH = 64  # images decoded and scored at a time


# ---- results ---------------------------------------------------------------------------------
@dataclass
class Prediction:
    """One image's answer: predicted labels, the top-k (class, score) pairs, and for box models
    the box in pixel xyxy of the original (EXIF-rotated) image."""

    path: str
    labels: list[str]
    top: list[tuple[str, float]]
    box: list[float] | None = None
    size: tuple[int, int] | None = None  # (width, height) of the original image, when known

    def to_json(self) -> dict:
        row: dict = {"path": self.path, "labels": self.labels,
                     "scores": {name: round(score, 6) for name, score in self.top}}
        if self.box is not None:
            row["box"] = [round(v, 2) for v in self.box]
        if self.size is not None:
            row["width"], row["height"] = self.size
        return row


@dataclass
class Predictor:
    """A loaded model plus what the run says about its inputs and outputs."""

    model_path: Path
    kind: str  # "int8" or "float"
    cfg: RunConfig
    classes: list[str]
    task: str
    thresholds: np.ndarray | None  # multi-label only
    spec: DecodeSpec  # how the run's cache decoded images: predict decodes the same way
    scorer: object = field(repr=False)  # uint8 images -> scores or (scores, boxes)
    camera: CameraScorer | None = field(default=None, repr=False)  # the device's camera path

    def outputs(self, images: np.ndarray, tta: bool = False,
                flips: Sequence[str] = ("horizontal",)) -> ModelOutputs:
        """Scores (N, classes) and normalised boxes (N, 4), either None where the model has no
        such output, for uint8 model inputs."""
        kinds = output_kinds(self.task, len(self.classes))
        result = tta_outputs(self.scorer, images, flips if tta else (), kinds=kinds)
        return split_outputs(result, self.task, len(self.classes))

    def predict(self, paths: Sequence[str | Path], tta: bool = False, top_k: int = 5,
                flips: Sequence[str] = ("horizontal",)) -> list[Prediction]:
        """Decode `paths` as the run's cache did and predict each; in input order."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"Expected top_k to be a positive integer, received top_k={top_k!r}.")
        if self.camera is not None and tta:
            raise ConfigError("--tta does not apply to --camera: the device sees each frame once.")
        results: list[Prediction] = []
        for start in range(0, len(paths), BATCH):
            chunk = [Path(p) for p in paths[start:start + BATCH]]
            if self.camera is not None:
                outputs = self._camera_outputs(chunk)
            else:
                outputs = self.outputs(decode_images(chunk, self.spec), tta, flips)
            for i, path in enumerate(chunk):
                scores = None if outputs.scores is None else outputs.scores[i]
                box = None if outputs.boxes is None else outputs.boxes[i]
                results.append(self._prediction(path, scores, box, top_k))
        return results

    def _camera_outputs(self, paths: list[Path]) -> ModelOutputs:
        try:
            return split_outputs(self.camera.outputs(paths), self.task, len(self.classes))
        except BadImage as exc:
            raise DataError(f"Cannot read an image: {exc}. Pass image files or raw frames of "
                            f"{self.camera.plan.camera.describe()}.") from None
        except ExportError as exc:  # a raw frame of the wrong size
            raise DataError(str(exc)) from None

    def _prediction(self, path: Path, scores: np.ndarray | None, box: np.ndarray | None,
                    top_k: int) -> Prediction:
        if scores is None:  # a one-class box model: its class is always the one
            scores = np.ones(1, np.float32)
        order = np.argsort(-scores, kind="stable")[:top_k]
        top = [(self.classes[k], float(scores[k])) for k in order]
        if self.task == "multilabel":
            labels = [c for c, s, t in zip(self.classes, scores, self.thresholds) if s >= t]
        else:
            labels = [self.classes[int(np.argmax(scores))]]
        if box is None:
            return Prediction(str(path), labels, top)
        size = (self.camera.frame_size() if self.camera is not None
                and path.suffix.lower() in RAW_FRAME_SUFFIXES else image_size(path))
        return Prediction(str(path), labels, top, box_to_pixels(box, size, self.spec), size)


# ---- loading ---------------------------------------------------------------------------------
def load_predictor(target: str | Path, kind: str = "auto",
                   trust_model_code: bool = False, camera: bool = False) -> Predictor:
    """A run directory (its int8 model when exported, else the float one; `kind` chooses) or a
    model file inside a run's export/ folder, ready to predict. `trust_model_code`: load a float
    model that stores Python code (never on the strength of the run's own config). `camera`:
    see each file as the device does — rendered into a frame of deploy.camera (raw .raw/.bin
    frames as they are), the generated preprocessing's integer path, the int8 model."""
    kind = check_choice("kind", kind, MODEL_KINDS)
    model_path, run = resolve_model(Path(target), kind)
    cfg = load_config(run.config)
    manifest = Manifest.load(run.require(run.manifest, "tinyvision train"))
    kind, spec = _SUFFIX_KIND[model_path.suffix], decode_spec(cfg)
    scorer, output_q = _load_scorer(model_path, kind, spec, manifest.task, len(manifest.classes),
                                    trust_model_code)
    thresholds = _thresholds(model_path, run, manifest) if manifest.task == "multilabel" else None
    if thresholds is not None and output_q is not None:  # as on the device: the int8 output grid
        thresholds = snap_thresholds(thresholds, output_q)
    if cfg.data.crop_to_box:
        log.warning("the run trained on images cropped to their boxes (data.crop_to_box); predict "
                    "sees whole images, so crop them to the object first for the same pixels")
    camera_scorer = None
    if camera:
        if kind != "int8":
            raise ConfigError("--camera runs the exported int8 model, as the device does; drop "
                              "--kind float (or run `tinyvision export` first).")
        camera_scorer = CameraScorer(cfg, model_path, len(manifest.classes))
    return Predictor(model_path, kind, cfg, manifest.classes, manifest.task, thresholds, spec,
                     scorer, camera_scorer)


def resolve_model(target: Path, kind: str = "auto") -> tuple[Path, RunDir]:
    """(model file, its run directory) for a run directory or a model file in a run."""
    if target.is_dir():
        run = open_run_dir(target)
        if kind == "auto":
            kind = "int8" if run.int8_model.exists() else "float"
        path = run.int8_model if kind == "int8" else run.float_model
        producer = "tinyvision export" if kind == "int8" else "tinyvision train"
        return run.require(path, f"{producer} {run.root}"), run
    if not target.exists():
        raise RunError(f"MODEL={target} does not exist; pass a run directory (runs/NAME) or a "
                       "model file in its export/ folder (model_int8.tflite, model_float.keras).")
    if target.suffix not in _SUFFIX_KIND:
        raise ModelError(f"MODEL={target} is neither a .tflite (int8) nor a .keras (float) model; "
                         "pass a run directory or one of its export/ model files.")
    if kind not in ("auto", _SUFFIX_KIND[target.suffix]):
        raise ConfigError(f"kind={kind!r} does not match MODEL={target} (a "
                          f"{_SUFFIX_KIND[target.suffix]} model); drop --kind or pass the run "
                          "directory.")
    return target, _run_of(target)


def _run_of(model_path: Path) -> RunDir:
    for folder in (model_path.parent, model_path.parent.parent):
        if (folder / CONFIG_FILE).is_file():
            return RunDir(folder)
    raise RunError(f"{model_path} is not inside a run directory: predict reads the run's "
                   "config.yaml (input size, colour mode, resize) and manifest.jsonl (class names) "
                   "from the folder above export/. Keep the model in <run>/export/ or pass the run "
                   "directory.")


def _load_scorer(model_path: Path, kind: str, spec: DecodeSpec, task: str, n_classes: int,
                 trust_model_code: bool = False):
    """(uint8 images -> outputs, quantisation of the int8 class output or None)."""
    output_q = None
    if kind == "int8":
        runner = ReferenceRunner(model_path, n_classes)
        shapes, input_shape = runner.output_shapes, runner.input_shape
        scorer = int8_scorer(runner)
        output_q = runner.output_q if has_class_output(task, n_classes) else None
    else:
        from tinyvision.models.user_models import load_trained_model

        model = load_trained_model(model_path, trust_model_code)
        outputs = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
        shapes, input_shape = [tuple(s) for s in outputs], tuple(model.input_shape)
        scorer = keras_scorer(model)
    _check_shapes(model_path, input_shape, shapes, spec, task, n_classes)
    return scorer, output_q


def _check_shapes(model_path: Path, input_shape: tuple, output_shapes: list[tuple],
                  spec: DecodeSpec, task: str, n_classes: int) -> None:
    expected = (*spec.size, spec.channels)
    if tuple(input_shape[1:]) != expected:
        raise ModelError(f"{model_path} takes inputs of shape {list(input_shape[1:])} but the run's "
                         f"config.yaml says {list(expected)} (model.input_size, model.color_mode); "
                         "the model is not from this run.")
    widths = {"class": n_classes, "box": 4}
    expected_outputs = [[widths[k]] for k in output_kinds(task, n_classes)]
    if [[int(s[-1])] for s in output_shapes] != expected_outputs:
        raise ModelError(f"{model_path} has outputs {[list(s[1:]) for s in output_shapes]}, but the "
                         f"run is {task} with {n_classes} class(es) in manifest.jsonl (expected "
                         f"outputs {expected_outputs}: "
                         f"{', '.join(output_kinds(task, n_classes))}); the model is not from "
                         "this run.")


def _thresholds(model_path: Path, run: RunDir, manifest: Manifest) -> np.ndarray:
    from tinyvision.evaluate.thresholds import DEFAULT_THRESHOLD, load_thresholds
    from tinyvision.layout import THRESHOLDS_FILE

    for path in (model_path.parent / THRESHOLDS_FILE, run.root / THRESHOLDS_FILE):
        if path.exists():
            return load_thresholds(path, manifest.classes).as_array()
    log.warning("no thresholds.json beside %s or in %s; every class uses %g. Run `tinyvision "
                "eval %s` to tune them.", model_path, run.root, DEFAULT_THRESHOLD, run.root)
    return np.full(len(manifest.classes), DEFAULT_THRESHOLD)


# ---- images ----------------------------------------------------------------------------------
def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly, plus every image file under named folders (sorted)."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in image_extensions())
            if not files:
                raise DataError(f"Folder {item} holds no image files (of any format Pillow reads).")
            found += files
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"Image {item} does not exist; check the path.")
    if not found:
        raise DataError("No images given; pass image files or folders of images.")
    return found


def decode_images(paths: Sequence[Path], spec: DecodeSpec) -> np.ndarray:
    """uint8 (N, H, W, C) model inputs, decoded exactly as the training cache was."""
    batch = np.empty((len(paths), *spec.size, spec.channels), np.uint8)
    for i, path in enumerate(paths):
        if not Path(path).is_file():
            raise DataError(f"Image {path} does not exist; check the path.")
        try:
            batch[i] = decode_image(path, spec)
        except BadImage as exc:
            raise DataError(f"Cannot read image {path}: {exc}. Pass only image files that open "
                            "in an image viewer.") from None
    return batch


def box_to_pixels(box: Sequence[float], size: tuple[int, int], spec: DecodeSpec) -> list[float]:
    """A normalised xyxy box of the model input -> pixel xyxy of the original image: the inverse
    of the cache's mapping for each resize mode (stretch, center_crop, letterbox)."""
    rx1, ry1, rx2, ry2 = source_region(size, spec, None)
    target_h, target_w = spec.size
    u = np.clip(np.asarray(box, np.float64), 0.0, 1.0)
    if spec.resize == "letterbox":
        off_x, off_y, new_w, new_h = letterbox_placement((rx1, ry1, rx2, ry2), spec.size)
        xs = rx1 + (u[[0, 2]] * target_w - off_x) * (rx2 - rx1) / new_w
        ys = ry1 + (u[[1, 3]] * target_h - off_y) * (ry2 - ry1) / new_h
    else:
        xs = rx1 + u[[0, 2]] * (rx2 - rx1)
        ys = ry1 + u[[1, 3]] * (ry2 - ry1)
    xs, ys = np.clip(xs, 0, size[0]), np.clip(ys, 0, size[1])
    return [float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])]


# ---- output ----------------------------------------------------------------------------------
def to_json(predictions: Sequence[Prediction], predictor: Predictor, tta: bool) -> str:
    camera = predictor.camera.plan.camera.describe() if predictor.camera is not None else None
    return json.dumps({"model": str(predictor.model_path), "kind": predictor.kind,
                       "task": predictor.task, "tta": tta, "camera": camera,
                       "predictions": [p.to_json() for p in predictions]}, indent=2) + "\n"


def to_csv(predictions: Sequence[Prediction], top_k: int) -> str:
    """path, labels (';'-joined), class_1, score_1, ... class_k, score_k[, x1, y1, x2, y2]."""
    has_box = any(p.box is not None for p in predictions)
    k = max((len(p.top) for p in predictions), default=0)
    k = min(k, top_k)
    header = ["path", "labels"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "score")]
    header += ["x1", "y1", "x2", "y2"] if has_box else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for p in predictions:
        row = [p.path, ";".join(p.labels)]
        for name, score in p.top[:k]:
            row += [name, f"{score:.6f}"]
        row += [""] * (2 + 2 * k - len(row))
        if has_box:
            row += [f"{v:.2f}" for v in p.box] if p.box is not None else [""] * 4
        writer.writerow(row)
    return out.getvalue()


def write_annotated(predictions: Sequence[Prediction], folder: str | Path
                    ) -> list[tuple[str, Path]]:
    """Copies of the images with labels, scores and boxes drawn, written atomically to `folder`;
    returns (image, copy) pairs.

    A copy keeps its image's name unless the name is taken, by an input image, an earlier copy or
    any file already in `folder`; then it gets -2, -3, ... Nothing is ever written over."""
    from PIL import Image, ImageOps

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for p in predictions:
        target = _claim_name(folder, Path(p.path))
        try:
            with Image.open(p.path) as im:
                image = ImageOps.exif_transpose(im).convert("RGB")
            lines = [", ".join(p.labels) or "(none)"] + [f"{n} {s:.3f}" for n, s in p.top[:3]]
            boxes = [(p.box, PRED_COLOUR)] if p.box is not None else []
            fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
            with atomic_path(target, suffix=target.suffix) as tmp:
                annotate(image, lines, boxes).save(tmp, format=fmt)
        except BaseException:
            target.unlink(missing_ok=True)  # the name claimed for it, still empty
            raise
        written.append((p.path, target))
    return written


def _claim_name(folder: Path, source: Path) -> Path:
    """The first free name in `folder` for the copy of `source` (its own name, then name-2,
    name-3, ...), created empty at once (O_EXCL, links not followed) so that it is never a file
    that exists, an input image included, and no other writer takes it before the copy lands."""
    number = 1
    while True:
        name = source.name if number == 1 else f"{source.stem}-{number}{source.suffix}"
        try:
            os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return folder / name
        except FileExistsError:
            number += 1


def save_text(path: str | Path, text: str) -> Path:
    """Write an output file atomically."""
    atomic_write_text(path, text)
    return Path(path)
