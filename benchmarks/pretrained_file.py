"""A pretrained model file of your own, for transfer studies (issue 19): a finished run's float
model rebuilt as a user's Keras model file would be.

The file holds an input of [-1, 1] pixels, the MobileNet V1 backbone with keras.applications'
layer names, global pooling and a Dense softmax classifier (`predictions`), saved as `.h5` (the
legacy HDF5 format Keras 2 wrote, which most users' files are). Transfer it to another set with
`model.weights: FILE` and `model.cut_at: conv_pw_13_relu` (or any layer `tinyvision layers FILE`
lists). For example, the demo's shapes as the "different task":

    tinyvision demo --runs-dir runs           # or any finished run with backbone mobilenet_v1
    python benchmarks/pretrained_file.py runs/demo/export/model_float.keras shapes.h5 \\
        --alpha 0.25 --size 96
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from tinyvision.models.backbones import build_backbone, copy_weights, get_backbone, leaf_layers  # noqa: E402
from tinyvision.models.user_models import load_trained_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_model", help="a run's export/model_float.keras (MobileNet V1)")
    parser.add_argument("out", help="the .h5 file to write")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    trained = load_trained_model(args.run_model)
    inputs = keras.Input((args.size, args.size, 3), name="input_1")
    features = build_backbone(get_backbone("mobilenet_v1"), inputs, args.alpha, {})
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(features)
    classes = trained.outputs[0].shape[-1]
    x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="user_mobilenet")
    copied = copy_weights([layer for layer in leaf_layers(trained)
                           if not layer.name.startswith("head_")], model)
    model.save(args.out)
    print(f"{args.out}: MobileNet V1 {args.alpha} at {args.size}x{args.size}, {copied} layers' "
          f"weights from {args.run_model}")


if __name__ == "__main__":
    main()
