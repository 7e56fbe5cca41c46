"""Helpers for model tests: settle an untrained model's BatchNorm statistics, and run an int8 model
on TFLM and on LiteRT's reference kernels, demanding equal outputs for every output tensor."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

ALLOWED_TFLM_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D",
    "RESHAPE", "SOFTMAX", "LOGISTIC", "ADD", "MUL", "SUB", "PAD", "CONCATENATION", "HARD_SWISH",
    "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "MAXIMUM", "MINIMUM",
})


def random_images(count: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (blurred noise), so activations are not pure noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, size // 4, size // 4, channels)).astype(np.float32)
    return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)


def settle_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics from one training-mode pass over `images`.

    An untrained deep network's activations shrink layer by layer until int8 scales collapse
    (~1e-9), which makes the interpreters abort on SOFTMAX; with batch statistics each layer's
    output is normalised again, as after training. Much cheaper than fitting.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images.astype(np.float32), training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def run_both_runtimes(path: Path, images: np.ndarray, arena_bytes: int = 4 * 1024 * 1024
                      ) -> list[np.ndarray]:
    """int8 outputs of every image on TFLM and on LiteRT reference kernels; asserts they are
    equal. Returns the outputs in the Keras model's output order (from the signature), each
    (N, ...) int8."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tflite_micro import runtime

    reference = Interpreter(model_path=str(path),
                            experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    reference.allocate_tensors()
    inp = reference.get_input_details()[0]
    assert inp["dtype"] == np.int8 and inp["quantization"] == (1.0, -128)
    # The flatbuffer's output order need not be Keras's; the signature maps output_k -> tensor.
    subgraph_order = [d["index"] for d in reference.get_output_details()]
    signature = reference.get_signature_runner().get_output_details()
    keras_order = [signature[f"output_{k}"]["index"] for k in range(len(signature))]
    positions = [subgraph_order.index(index) for index in keras_order]
    micro = runtime.Interpreter.from_file(str(path), arena_size=arena_bytes)
    outputs: list[list[np.ndarray]] = [[] for _ in keras_order]
    for image in images:
        x = (image.astype(np.int16) - 128).astype(np.int8)[None]
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
