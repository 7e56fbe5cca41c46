"""deploy/litert.litert_bytes converts a frozen in-memory function instead of Keras' own
`model.export(format="litert")` (a SavedModel written to disk, 10x slower): the int8 model must
compute exactly what Keras' export computes, with the outputs in the Keras model's order."""

import numpy as np
import pytest

from helpers import random_images, settle_batchnorm

pytestmark = pytest.mark.slow


def _int8_settings(calibration):
    import tensorflow as tf

    def representative():
        for image in calibration:
            yield [image[None].astype(np.float32)]

    return dict(optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative,
                target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                inference_input_type=tf.int8, inference_output_type=tf.int8)


def _keras_ordered_outputs(data: bytes, images: np.ndarray) -> list[np.ndarray]:
    """Each output (in the signature's output_0, output_1, ... order) for every int8 image, on
    LiteRT's reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=data,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    signature = interpreter.get_signature_runner().get_output_details()
    order = [signature[f"output_{k}"]["index"] for k in range(len(signature))]
    rows = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        rows.append([interpreter.get_tensor(i)[0].copy() for i in order])
    return [np.stack([row[k] for row in rows]) for k in range(len(order))]


@pytest.mark.parametrize("task,shapes", [("multiclass", [(3,)]),
                                         ("detection", [(3,), (4,)])])
def test_the_in_memory_conversion_computes_what_keras_export_does(tmp_path, task, shapes):
    import tensorflow as tf

    from tinyvision.config import ModelConfig
    from tinyvision.deploy.litert import litert_bytes
    from tinyvision.models.build import build_model

    model = build_model(ModelConfig(weights="none", alpha=0.25, input_size=32), 3, task)
    calibration = random_images(24, 32, 3, seed=1)
    settle_batchnorm(model, calibration)
    ours = litert_bytes(model, **_int8_settings(calibration))
    target = tmp_path / "keras.tflite"
    model.export(str(target), format="litert", verbose=False,
                 input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)],
                 **_int8_settings(calibration))
    images = np.random.default_rng(2).integers(-128, 128, (20, 32, 32, 3)).astype(np.int8)
    expected = _keras_ordered_outputs(target.read_bytes(), images)
    got = _keras_ordered_outputs(ours, images)
    assert [o.shape[1:] for o in got] == shapes  # the class scores first, as in Keras
    for k, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {k}")
    assert len(np.unique(got[0])) > 3  # the outputs vary: the comparison can tell models apart
