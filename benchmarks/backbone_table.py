"""Print the backbone table of docs/models.md: parameters and MACs of each registry backbone (no
head) at one input size, counted from the built Keras graph (tinyvision.models.cost), plus which
ImageNet weights keras.applications has and how fine-tuning blocks are numbered.

Run:  python benchmarks/backbone_table.py [--size 96] [--channels 3]
Builds every backbone once per width (a minute or two on 2 cores); downloads nothing.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tinyvision.config import BACKBONE_DEFAULTS  # noqa: E402
from tinyvision.models.backbones import BACKBONES, BackboneSpec  # noqa: E402

# The widths shown per backbone: the smallest with ImageNet weights, and 1.0.
ROWS: dict[str, tuple[float, ...]] = {
    "mobilenet_v1": (0.25, 0.5, 1.0),
    "mobilenet_v2": (0.35, 1.0),
    "mobilenet_v3_small": (0.75, 1.0),
    "mobilenet_v3_large": (0.75, 1.0),
    "mobilenet_v3_small_minimalistic": (1.0,),
    "mobilenet_v3_large_minimalistic": (1.0,),
    "resnet50": (1.0,),
    "efficientnet_b0": (1.0,),
    "squeezenet_1_1": (1.0,),
    "plain_cnn": (1.0,),
}


def pretrained_text(spec: BackboneSpec) -> str:
    if not spec.imagenet:
        return "none (train from scratch, or cut your own model file)"
    alphas = "/".join(f"{a:g}" for a in spec.imagenet_alphas)
    sizes = "/".join(str(s) for s in spec.imagenet_sizes)
    return f"alpha {alphas} x {sizes} px" if spec.width_multiplier else f"{sizes} px"


def blocks_text(spec: BackboneSpec) -> str:
    if spec.block_names:
        return f"block_1..{len(spec.block_names)} = {spec.block_names[0]}..{spec.block_names[-1]}"
    if spec.num_blocks:
        return f"block_1..{spec.num_blocks}"
    return "block_1..len(filters)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="square input size in pixels")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"Backbones at {args.size}x{args.size}x{args.channels} (backbone only, no head; MACs of "
          "convolutions and dense layers, batch 1).\n")
    print("| backbone | alpha | params | MACs | features | ImageNet weights (keras.applications) "
          "| fine-tuning blocks |")
    print("|---|---|---:|---:|---|---|---|")
    for name in BACKBONES:
        spec = BACKBONES[name]
        for alpha in ROWS.get(name, (BACKBONE_DEFAULTS[name].alpha,)):
            cost, shape = _measure(name, alpha, args.size, args.channels)
            alpha_text = f"{alpha:g}" if spec.width_multiplier else "fixed"
            print(f"| `{name}` | {alpha_text} | {cost.params / 1e6:.2f} M | "
                  f"{cost.macs / 1e6:.1f} M | {shape} | {pretrained_text(spec)} | "
                  f"{blocks_text(spec)} |")
    print(f"\n(built in {time.perf_counter() - started:.0f} s)")


def _measure(name: str, alpha: float, size: int, channels: int):
    """(ModelCost, feature-map shape) of the backbone alone, built once."""
    import keras

    from tinyvision.models.cost import model_cost
    from tinyvision.models.backbones import build_backbone

    inputs = keras.Input((size, size, channels))
    features = build_backbone(BACKBONES[name], inputs, alpha)
    cost = model_cost(keras.Model(inputs, features))
    keras.backend.clear_session()
    return cost, "x".join(str(d) for d in features.shape[1:])


if __name__ == "__main__":
    main()
