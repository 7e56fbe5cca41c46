"""What the tests share: tiny generated images and class folders, a tiny run config, COCO / VOC
annotation files, and helpers for models (settled BatchNorm, int8 runs on TFLM and LiteRT).

Tests never read files outside their tmp_path. TensorFlow loads only in the model helpers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tinyvision.config import validate_config

if TYPE_CHECKING:  # keras loads inside the model helpers, so data tests stay free of TensorFlow
    import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ---- images, class folders, a tiny run config --------------------------------------------------
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_image(path: Path, colour=(128, 128, 128), size=(40, 30), mode="RGB", fmt=None,
                seed: int = 0) -> Path:
    """A noisy image of roughly one colour (so classes are learnable), saved as `path`."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def make_class_folders(root: Path, per_class: int = 12, classes=("red", "green", "blue"),
                       size=(40, 30)) -> Path:
    for c in classes:
        for i in range(per_class):
            write_image(root / c / f"{c}_{i}.png", COLOURS[c], size=size, seed=i)
    return root


def tiny_config(root: Path, runs_dir: Path, **sections) -> dict:
    """A config that trains MobileNet V1 0.25 at 32x32 from scratch for a few steps."""
    raw = {
        "name": "tiny",
        "seed": 1,
        "runs_dir": str(runs_dir),
        "data": {"source": {"format": "folder", "root": str(root)}, "val_fraction": 0.2,
                 "test_fraction": 0.2, "workers": 2},
        "model": {"alpha": 0.25, "input_size": 32, "weights": "none"},
        # min_steps 0 and no augmentation: the few steps asked for, as before train.recipe
        "train": {"batch_size": 8, "max_steps_per_epoch": 3, "min_steps": 0, "augment": [],
                  "head": {"epochs": 1, "learning_rate": 0.01},
                  "fine_tune": {"epochs": 2, "learning_rate": 0.01, "unfreeze_from": 0}},
        "export": {"representative_samples": 16},
        "verify": {"tflm_samples": 5},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


# ---- COCO / VOC annotation files -------------------------------------------------------------
CATEGORIES = ["person", "bicycle", "car", "dog", "cat", "bird"]


def cat_id(name: str) -> int:
    """COCO-like gappy ids: person=1, bicycle=3, car=5, ..."""
    return 2 * CATEGORIES.index(name) + 1


def write_png(path: Path, size: tuple[int, int] = (100, 100), colour=(120, 120, 120)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def coco_document(images: list[dict], annotations: list[tuple], categories=CATEGORIES,
                  url_base: str | None = None) -> dict:
    """images: [{"file_name", "width", "height"}]; annotations: (image index, category, [x,y,w,h])
    or (image index, category, bbox, iscrowd). Ids are 10 + index so they differ from indices."""
    doc_images = []
    for i, image in enumerate(images):
        entry = {"id": 10 + i, "license": 1, **image}
        if url_base:
            entry["coco_url"] = f"{url_base}/{image['file_name']}"
        doc_images.append(entry)
    doc_annotations = []
    for j, (image, category, bbox, *rest) in enumerate(annotations):
        crowd = rest[0] if rest else 0
        segmentation = ({"counts": [5, 10, 3], "size": [images[image]["height"],
                                                        images[image]["width"]]}
                        if crowd else [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1],
                                        bbox[0] + bbox[2], bbox[1] + bbox[3]]])
        doc_annotations.append({"id": 1000 + j, "image_id": 10 + image,
                                "category_id": cat_id(category), "bbox": list(bbox),
                                "area": 0.5 * bbox[2] * bbox[3], "iscrowd": crowd,
                                "segmentation": segmentation})
    return {"info": {"description": "test"}, "images": doc_images, "annotations": doc_annotations,
            "categories": [{"id": cat_id(c), "name": c, "supercategory": "x"} for c in categories]}


def write_coco(folder: Path, images: list[dict], annotations: list[tuple], name: str = "instances.json",
               write_images: bool = True, indent: int | None = None, **kwargs) -> Path:
    """Write an instances file into `folder` and (optionally) the images into `folder/images`."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = coco_document(images, annotations, **kwargs)
    path = folder / name
    path.write_text(json.dumps(doc, indent=indent))
    if write_images:
        for i, image in enumerate(images):  # distinct colours: distinct bytes
            write_png(folder / "images" / image["file_name"], (image["width"], image["height"]),
                      (i % 256, (i // 256) % 256, 200))
    return path


def square_images(n: int, prefix: str = "img", size: int = 100) -> list[dict]:
    return [{"file_name": f"{prefix}{i:03d}.png", "width": size, "height": size} for i in range(n)]


def voc_xml(filename: str | None, size: tuple[int, int] | None,
            objects: list[tuple]) -> str:
    """objects: (name, (xmin, ymin, xmax, ymax)[, difficult[, truncated]])."""
    parts = ["<annotation>", "<folder>VOC2012</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for name, box, *flags in objects:
        difficult = flags[0] if flags else 0
        truncated = flags[1] if len(flags) > 1 else 0
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose>"
                     f"<truncated>{truncated}</truncated><difficult>{difficult}</difficult>"
                     f"<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>"
                     f"<ymax>{box[3]}</ymax></bndbox>"
                     # VOC person objects carry <part> boxes; they are not objects.
                     "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
                     "<ymax>2</ymax></bndbox></part></object>")
    parts.append("</annotation>")
    return "\n".join(parts)


# ---- models and int8 runtimes ------------------------------------------------------------------
ALLOWED_TFLM_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D",
    "RESHAPE", "SOFTMAX", "LOGISTIC", "ADD", "MUL", "SUB", "PAD", "CONCATENATION", "HARD_SWISH",
    "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "MAXIMUM", "MINIMUM", "TANH",
})


def random_images(count: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (blurred noise), so activations are not pure noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, size // 4, size // 4, channels)).astype(np.float32)
    return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)


def settle_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """models.build.settle_batchnorm, imported when called (keeps TensorFlow out of data tests)."""
    from tinyvision.models.build import settle_batchnorm as settle

    settle(model, images)


def run_both_runtimes(path: Path, images: np.ndarray, arena_bytes: int = 4 * 1024 * 1024
                      ) -> list[np.ndarray]:
    """int8 outputs of every image on TFLM and on LiteRT reference kernels; asserts they are
    equal. Returns the outputs in the Keras model's output order (from the signature), each
    (N, ...) int8."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tflite_micro import runtime

    from tinyvision.deploy.outputs import input_normalization, pixel_quantization, quantize_images

    reference = Interpreter(model_path=str(path),
                            experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    reference.allocate_tensors()
    inp = reference.get_input_details()[0]
    # pixel - 128, or round(pixel x 256/255) - 128 where the normalisation is folded into it
    pixels = pixel_quantization(*inp["quantization"], input_normalization(path))
    assert inp["dtype"] == np.int8 and pixels.zero_point == -128
    assert pixels.scale in (1.0, 255 / 256)
    # The flatbuffer's output order need not be Keras's; the signature maps output_k -> tensor.
    subgraph_order = [d["index"] for d in reference.get_output_details()]
    signature = reference.get_signature_runner().get_output_details()
    keras_order = [signature[f"output_{k}"]["index"] for k in range(len(signature))]
    positions = [subgraph_order.index(index) for index in keras_order]
    micro = runtime.Interpreter.from_file(str(path), arena_size=arena_bytes)
    outputs: list[list[np.ndarray]] = [[] for _ in keras_order]
    for image in images:
        x = quantize_images(image[None], pixels)
        reference.set_tensor(inp["index"], x)
        reference.invoke()
        micro.set_input(x, 0)
        micro.invoke()
        for k, (index, position) in enumerate(zip(keras_order, positions)):
            expected = reference.get_tensor(index)
            got = np.array(micro.get_output(position))
            assert got.dtype == np.int8 and np.array_equal(got, expected), (
                f"output {k}: TFLM {got.tolist()} != LiteRT reference {expected.tolist()}")
            outputs[k].append(expected[0].copy())
    return [np.stack(o) for o in outputs]


def export_and_compare(model: keras.Model, images: np.ndarray, path: Path) -> list[np.ndarray]:
    """Full-int8 export (tinyvision's exporter), a check that every op is a TFLM op, and the
    TFLM == LiteRT-reference check on `images`. Returns the int8 outputs (Keras order)."""
    from tinyvision.deploy.litert import export_int8
    from tinyvision.deploy.outputs import op_names
    from tinyvision.deploy.runners import check_model

    export_int8(model, images, path)
    check_model(path)
    ops = set(op_names(path))
    assert ops <= ALLOWED_TFLM_OPS, f"ops outside the TFLM set: {sorted(ops - ALLOWED_TFLM_OPS)}"
    return run_both_runtimes(path, images[:3])


# ---- hand-built runs (the real stages around a model made by hand, no training) ---------------
CHANNEL = {"red": 0, "green": 1, "blue": 2}


def colour_model(classes, task, size=32, box=None):
    """Softmax (sigmoid for multilabel) of the mean colour, weighted toward each class's channel.

    With `box`, a second output: that constant normalised box (a [class, box] model)."""
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(classes), name="logits")
    logits = dense(pooled)
    weights = np.full((3, len(classes)), -6.0, np.float32)
    for k, name in enumerate(classes):
        weights[CHANNEL[name], k] = 12.0
    dense.set_weights([weights, np.zeros(len(classes), np.float32)])
    scores = keras.layers.Activation("sigmoid" if task == "multilabel" else "softmax")(logits)
    if box is None:
        return keras.Model(inputs, scores, name="colour")
    box_layer = keras.layers.Dense(4, name="box")
    boxes = box_layer(pooled)
    box_layer.set_weights([np.zeros((3, 4), np.float32), np.asarray(box, np.float32)])
    return keras.Model(inputs, [scores, boxes], name="colour_box")


DETECTION_BOX = [0.25, 0.25, 0.75, 0.75]  # the hand-built detection model's constant box


def box_images(root):
    """Grey 40x30 images with one coloured rectangle each, listed in a `path,x1,y1,x2,y2,label`
    CSV: a single-object detection data set."""
    rows = []
    for name in ("red", "green", "blue"):
        for i in range(8):
            pixels = np.full((30, 40, 3), 128, np.uint8)
            x1, y1 = 2 + 2 * i, 1 + i
            pixels[y1:y1 + 15, x1:x1 + 20] = COLOURS[name]
            root.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / f"{name}_{i}.png")
            rows.append(f"{name}_{i}.png,{x1},{y1},{x1 + 20},{y1 + 15},{name}")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return {"source": {"format": "csv", "path": str(root / "boxes.csv")}}


def handbuilt_run(tmp, multilabel=False, detection=False, make_model=None, **sections):
    """A run directory made by the real stages around a hand-built model (no training);
    `make_model(cfg, data)` replaces the colour model."""
    from tinyvision.files import atomic_path
    from tinyvision.run.stages import evaluate_stage, export_stage, prepare_data, verify_stage
    from tinyvision.run.run import make_run_folder

    root = make_class_folders(tmp / "images", per_class=8)
    if detection:
        sections["data"] = box_images(tmp / "boxes")
    if multilabel:  # half-red, half-green images that are in both folders
        for i in range(6):
            path = write_image(root / "red" / f"mix_{i}.png", (220, 30, 30), seed=100 + i)
            pixels = np.asarray(Image.open(path)).copy()
            pixels[:, 20:] = np.asarray(Image.open(root / "green" / f"green_{i}.png"))[:, 20:]
            Image.fromarray(pixels).save(path)
            shutil.copy(path, root / "green" / f"mix_{i}.png")
    raw = tiny_config(root, tmp / "runs",
                      export={"representative_samples": 8, **sections.pop("export", {})},
                      verify={"tflm_samples": 3, **sections.pop("verify", {})}, **sections)
    cfg, run = make_run_folder(validate_config(raw))
    data = prepare_data(cfg, run, progress=False)
    model = (make_model(cfg, data) if make_model else
             colour_model(data.manifest.classes, data.manifest.task,
                          box=DETECTION_BOX if detection else None))
    with atomic_path(run.float_model, suffix=".keras") as tmp_model:
        model.save(tmp_model)
    evaluate_stage(cfg, run, data, model)
    export_stage(cfg, run, data, model)
    verify_stage(cfg, run, data)
    return cfg, run, data, model


def write_bomb_png(path: Path, side: int = 20000) -> Path:
    """A tiny PNG file whose header claims side x side pixels (400 MP): a decompression bomb.
    Only the header is valid; nothing should ever decode it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


# ---- a stand-in TFLM tree (what verify builds and runs, without the minutes-long library) -----
_FAKE_CXX = '''#!{python}
"""Stands in for g++ linking the tinyvision application (tests only). It logs where it ran and
its arguments, compiles nothing itself, and writes an "application": a Python program that runs
the real generated C preprocessing (compiled by cc into a shared object) and the model, read back
from the C array, on the Python TFLM interpreter."""
import json, re, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
with open({log!r}, "a") as handle:
    handle.write(json.dumps({{"cwd": str(Path.cwd()), "args": args}}) + "\\n")
out = Path(args[args.index("-o") + 1])
if "-c" in args:  # "compiling" a C++ file: the object holds its source, for the link below
    out.write_text(Path(next(a for a in args if a.endswith(".cc"))).read_text())
    sys.exit(0)
objects = [Path(a) for a in args if a.endswith(".o")]
cxx = {{p.name: p for p in objects if p.name in ("main.o", "model.o")}}
main, model = cxx["main.o"].read_text(), cxx["model.o"].read_text()
header = Path("camera_preprocess.h").read_text()
array = model[model.index("[] = {{"):]
array = array[:array.index("}};")]
Path(f"{{out}}.tflite").write_bytes(bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{{2}})", array)))
subprocess.run(["cc", "-shared", *[str(p) for p in objects if p.name not in cxx], "-o",
                f"{{out}}.so"], check=True)
values = dict(python=sys.executable, so=f"{{out.resolve()}}.so", tflite=f"{{out.resolve()}}.tflite",
              arena=int(re.search(r"kArenaBytes = (\\d+)", main).group(1)),
              order=re.search(r"kOutputOrder\\[\\] = \\{{([^}}]*)\\}}", main).group(1),
              frame=int(re.search(r"TV_CAMERA_FRAME_BYTES (\\d+)", header).group(1)),
              inputs=int(re.search(r"TV_INPUT_BYTES (\\d+)", header).group(1)))
out.write_text(Path({app!r}).read_text().format(**values))
out.chmod(0o755)
'''

_FAKE_APP = '''#!{python}
import ctypes, sys
import numpy as np
from tflite_micro import runtime

lib = ctypes.CDLL("{so}")
micro = runtime.Interpreter.from_file("{tflite}", arena_size={arena})
shape = micro.get_input_details(0)["shape"]
data = open(sys.argv[1], "rb").read()
print("arena_used_bytes: {arena}")
with open(sys.argv[2], "wb") as outputs, open(sys.argv[3], "wb") as inputs:
    for start in range(0, len(data) - {frame} + 1, {frame}):
        tensor = (ctypes.c_int8 * {inputs})()
        lib.tv_preprocess(ctypes.create_string_buffer(data[start:start + {frame}], {frame}), tensor)
        x = np.frombuffer(tensor, np.int8).reshape(shape)
        inputs.write(x.tobytes())
        micro.set_input(x, 0)
        micro.invoke()
        for index in ({order},):
            outputs.write(np.asarray(micro.get_output(index)).astype(np.int8).tobytes())
'''


def fake_tflm_tree(folder: Path) -> Path:
    """A TFLM source tree for tests of what `verify` builds and runs: build.sh writes an empty
    libtflm.a at once, and tflm_flags.mk makes the C preprocessing compile for real (cc, -fPIC)
    and the C++ "link" a stand-in (`_FAKE_CXX`, which logs each call in `folder/compiled.jsonl`)
    whose application computes what the real one does. Its answers must equal the Python path's,
    byte for byte, as a real build's must."""
    import sys

    (folder / "tensorflow").mkdir(parents=True, exist_ok=True)
    (folder / "build.sh").write_text('#!/bin/sh\nmkdir -p "$1" && : > "$1/libtflm.a"\n')
    (folder / "build.sh").chmod(0o755)
    (folder / "app.py.in").write_text(_FAKE_APP)
    cxx = folder / "fake-cxx"
    cxx.write_text(_FAKE_CXX.format(python=sys.executable, log=str(folder / "compiled.jsonl"),
                                    app=str(folder / "app.py.in")))
    cxx.chmod(0o755)
    (folder / "tflm_flags.mk").write_text(f"CXX := {cxx}\nCC := cc\nTFLM_OPT := -O2 -fPIC\n"
                                          "TFLM_CXXFLAGS :=\nTFLM_CFLAGS := -std=c99 -O2 -fPIC\n")
    return folder
