"""Run an int8 model: LiteRT's reference kernels (bit-exact with TFLM, far faster) and the TFLite
Micro interpreter itself, plus the smallest arena TFLM runs it in and a check for models the
interpreters would abort on."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tinyvision.deploy.outputs import (Quantization, dequantize, input_normalization,
                                      keras_output_order, pixel_quantization, quantize_images)
from tinyvision.errors import VerifyError

MIN_ARENA_BYTES = 1024
ARENA_RESOLUTION = 16  # TFLM aligns arena allocations to 16 bytes


class ReferenceRunner:
    """LiteRT with reference kernels (bit-exact with TFLM); NOT the default XNNPACK delegate.

    Outputs are in the Keras model's order: the converter may list them differently in the file
    (a [class, box] model lists the box first), so they are ordered by the serving signature
    (output_0, output_1, ...); without one, the output with `n_classes` values comes first.
    """

    def __init__(self, model_path: str | Path, n_classes: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        check_model(model_path)
        self.interpreter = Interpreter(model_path=os.fspath(model_path),
                                       experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        self.input_index = inp["index"]
        # in pixels, also for a model whose input normalisation was folded into it
        self.input_q = pixel_quantization(*inp["quantization"], input_normalization(model_path))
        self.input_shape = tuple(inp["shape"])
        in_file_order = self.interpreter.get_output_details()
        ordered = keras_output_order(self.interpreter, n_classes)
        self.output_indices = [d["index"] for d in ordered]
        self.output_qs = [Quantization(*d["quantization"]) for d in ordered]
        # position of each (Keras-ordered) output among the file's outputs: TFLM's output index
        self.file_positions = [[d["index"] for d in in_file_order].index(i)
                               for i in self.output_indices]
        self.output_shapes = [tuple(int(v) for v in d["shape"]) for d in ordered]
        self.output_q = self.output_qs[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """int8 inputs (N, H, W, C) -> one int8 array (N, ...) per output, one invoke per image."""
        rows = []
        for x in batch:
            self.interpreter.set_tensor(self.input_index, x[None])
            self.interpreter.invoke()
            rows.append([self.interpreter.get_tensor(i)[0].copy() for i in self.output_indices])
        return [np.stack([row[k] for row in rows]) for k in range(len(self.output_indices))]

    def run_int8(self, batch: np.ndarray) -> np.ndarray:
        """int8 inputs -> int8 values of the first (class) output."""
        return self.run_all(batch)[0]

    def scores(self, images: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        """uint8 images -> dequantised outputs: an array, or a tuple for a [class, box] model."""
        outputs = self.run_all(quantize_images(images, self.input_q))
        values = tuple(dequantize(o, q) for o, q in zip(outputs, self.output_qs))
        return values[0] if len(values) == 1 else values


def run_tflm(model_path: str | Path, batch: np.ndarray, arena_bytes: int,
             positions: list[int] | None = None) -> np.ndarray | list[np.ndarray]:
    """int8 inputs -> int8 outputs on the TFLM interpreter: the first output as an array, or with
    `positions` (TFLM output indices, e.g. `ReferenceRunner.file_positions`) a list of arrays."""
    from tflite_micro import runtime

    wanted = positions if positions is not None else [0]
    try:
        interpreter = runtime.Interpreter.from_file(os.fspath(model_path), arena_size=arena_bytes)
        rows = []
        for x in batch:
            interpreter.set_input(x[None], 0)
            interpreter.invoke()
            rows.append([np.array(interpreter.get_output(i))[0] for i in wanted])
    except (RuntimeError, ValueError) as exc:
        raise VerifyError(f"TensorFlow Lite Micro cannot run {model_path} with a {arena_bytes}-byte "
                          f"arena: {exc}") from None
    outputs = [np.stack([row[k] for row in rows]) for k in range(len(wanted))]
    return outputs if positions is not None else outputs[0]


def _tflm_runs(model_path: str | Path, sample: np.ndarray, arena_bytes: int) -> bool:
    from tflite_micro import runtime

    try:
        with _silence_stderr():  # TFLM reports each failed allocation on stderr: expected here
            interpreter = runtime.Interpreter.from_file(os.fspath(model_path), arena_size=arena_bytes)
            interpreter.set_input(sample[None], 0)
            interpreter.invoke()
        return True
    except RuntimeError:
        return False


@contextmanager
def _silence_stderr():
    """Redirect file descriptor 2 (where C++ code writes) to /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def find_arena_bytes(model_path: str | Path, sample: np.ndarray, max_bytes: int) -> int:
    """The tensor arena TFLM needs for the model (to 16 bytes): what its recording allocator
    used with a `max_bytes` arena, checked by running the model in exactly that arena.

    Not a bisection: TFLM's Python interpreter can crash the process (SIGSEGV) when an arena
    far too small fails at certain allocation steps, so only arenas that suffice are tried."""
    check_model(model_path)  # TFLM would abort the process on a collapsed softmax
    used = _recorded_arena(model_path, sample, max_bytes)
    if used is None:
        raise VerifyError(f"TensorFlow Lite Micro cannot run {model_path} even with a "
                          f"{max_bytes}-byte arena (verify.max_arena_bytes); the model may use an op "
                          "TFLM lacks or need more memory. Raise verify.max_arena_bytes or shrink "
                          "the model (model.alpha, model.input_size).")
    needed = max(MIN_ARENA_BYTES, -(-used // ARENA_RESOLUTION) * ARENA_RESOLUTION)
    if not _tflm_runs(model_path, sample, needed):
        raise VerifyError(f"TensorFlow Lite Micro recorded {used} arena bytes for {model_path} "
                          f"but cannot run it in {needed}.")
    return needed


def _recorded_arena(model_path: str | Path, sample: np.ndarray, max_bytes: int) -> int | None:
    """Arena bytes the recording allocator reports after one invoke (None if it cannot run)."""
    import ctypes
    import re
    import tempfile

    from tflite_micro import runtime

    with tempfile.TemporaryFile(mode="w+") as capture:  # TFLM reports on stderr (fd 2)
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            interpreter = runtime.Interpreter.from_file(os.fspath(model_path), arena_size=max_bytes)
            interpreter.set_input(sample[None], 0)
            interpreter.invoke()
            interpreter.print_allocations()
        except RuntimeError:
            return None
        finally:
            ctypes.CDLL(None).fflush(None)  # C stdio may buffer what goes to a file
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        found = re.search(r"Arena allocation total (\d+) bytes", capture.read())
    return int(found.group(1)) if found else None


def check_model(model_path: str | Path) -> None:
    """Refuse models the interpreters would abort the whole process on, with a reason.

    A softmax whose input range collapsed to ~0 (an untrained or diverged model) makes both TFLM
    and LiteRT abort in C++; say so instead.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(model_path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("SOFTMAX", "LOGISTIC"):
            scale = tensors[int(op["inputs"][0])]["quantization"][0]
            if 0 < scale < 1e-6:
                raise VerifyError(f"{model_path}: the input of {op['op_name']} has quantisation "
                                  f"scale {scale:.3g}, i.e. its activations are all ~0. The model "
                                  "is untrained or its training diverged; retrain it.")



