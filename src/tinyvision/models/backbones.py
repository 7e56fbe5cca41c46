"""Backbone registry: name -> builder plus metadata (input scaling, pretrained weights, blocks).

A builder takes the (already normalised) input tensor and returns the feature-map tensor, with
fixed layer names so that pretrained weights load by name and fine-tuning can start at a block.
The keras.applications backbones are keras.applications' own graphs built on that tensor, without
their built-in preprocessing (tinyvision normalises in its `normalize` layer, inside the model).
Pretrained weights are copied by layer name from a reference model built by keras.applications,
which works for any input size and for grayscale input (first conv kernel summed over RGB).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Callable, Iterable

import keras

from tinyvision.config import BACKBONE_DEFAULTS, PLAIN_CNN_POOLS
from tinyvision.errors import ModelError, did_you_mean
from tinyvision.models.cost import ModelCost, model_cost

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
EFFICIENTNET_WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"
AUTO_UNFREEZE_FRACTION = 0.75  # "auto" fine-tunes the last quarter of the backbone's blocks

Scale = float | tuple[float, float, float]
Reference = Callable[[tuple[int, int, int], float, str], keras.Model]


@dataclass(frozen=True)
class BackboneSpec:
    """What tinyvision needs to know about a backbone, as data."""

    name: str
    build: Callable[..., keras.KerasTensor]  # (normalised input, alpha, **options) -> features
    input_scale: Scale  # model input = pixel * scale + offset (per RGB channel if a tuple)
    input_offset: Scale
    num_blocks: int  # 0: as many as the config gives (plain_cnn)
    # Regex of a block's first layer: {n} is the block number (1-based), {name} its native name.
    block_pattern: str
    block_names: tuple[str, ...] = ()  # native block names, block_1 first (ResNet: conv2_block1)
    imagenet: tuple[tuple[float, int], ...] = ()  # (alpha, size) pairs keras.applications has
    reference: Reference | None = None  # keras.applications model, to copy weights from
    weights_url: Callable[[float, int], str] | None = None  # where keras downloads them from
    first_conv: str = ""  # layer whose kernel sees the image
    channel_order: str = "rgb"  # of first_conv's pretrained kernel ("bgr": flipped on loading)
    description: str = ""

    @property
    def width_multiplier(self) -> bool:
        """False: a fixed width, alpha must be 1.0 (config.BACKBONE_DEFAULTS, declared once)."""
        return BACKBONE_DEFAULTS[self.name].width_multiplier

    @property
    def default_alpha(self) -> float:
        """The width when `model.alpha` is not given (config.BACKBONE_DEFAULTS)."""
        return BACKBONE_DEFAULTS[self.name].alpha

    @property
    def imagenet_alphas(self) -> tuple[float, ...]:
        return tuple(sorted({alpha for alpha, _ in self.imagenet}))

    @property
    def imagenet_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({size for _, size in self.imagenet}))

    def block_start(self, layer_names: list[str], block: int) -> int:
        """Index of the first layer of block `block` (1-based) in `layer_names`."""
        available = self.num_blocks or _count_blocks(self.block_pattern, layer_names)
        if not 1 <= block <= available:
            raise ModelError(f"{self.name} has blocks block_1..block_{available}; got "
                             f"block_{block}. Pick one of those, a layer name or a fraction.")
        pattern = re.compile(self._block_regex(block))
        for index, name in enumerate(layer_names):
            if pattern.match(name):
                return index
        raise ModelError(f"No layer of block_{block} ({self._block_regex(block)}) found in the "
                         f"{self.name} model; give a layer name, index or fraction instead.")

    def auto_block(self, layer_names: list[str]) -> int:
        """The block "auto" fine-tunes from: 3/4 of the way through (MobileNet V1: block_10)."""
        available = self.num_blocks or _count_blocks(self.block_pattern, layer_names)
        return max(1, math.ceil(AUTO_UNFREEZE_FRACTION * available))

    def _block_regex(self, block: int) -> str:
        name = self.block_names[block - 1] if self.block_names else ""
        return self.block_pattern.format(n=block, name=re.escape(name))


def _count_blocks(pattern: str, layer_names: list[str]) -> int:
    """How many consecutive blocks 1, 2, ... have a layer in `layer_names`."""
    n = 0
    while any(re.match(pattern.format(n=n + 1, name=""), name) for name in layer_names):
        n += 1
    return n


# ---- builders: one per model, keras.applications style -------------------------------------
def mobilenet_v1(x: keras.KerasTensor, alpha: float) -> keras.KerasTensor:
    """MobileNet V1 (conv1, conv_dw_N / conv_pw_N for blocks 1..13), keras.applications' graph."""
    return keras.applications.MobileNet(input_tensor=x, include_top=False, weights=None,
                                        alpha=alpha).output


def mobilenet_v2(x: keras.KerasTensor, alpha: float) -> keras.KerasTensor:
    """MobileNet V2 (Conv1, expanded_conv, block_N_* for blocks 1..16, Conv_1)."""
    return keras.applications.MobileNetV2(input_tensor=x, include_top=False, weights=None,
                                          alpha=alpha).output


def mobilenet_v3(x: keras.KerasTensor, alpha: float, size: str = "small",
                 minimalistic: bool = False) -> keras.KerasTensor:
    """MobileNet V3 Small/Large (conv, expanded_conv_N_*, conv_1) without keras' own Rescaling."""
    builder = (keras.applications.MobileNetV3Small if size == "small"
               else keras.applications.MobileNetV3Large)
    return builder(input_tensor=x, include_top=False, weights=None, alpha=alpha,
                   minimalistic=minimalistic, include_preprocessing=False).output


def resnet50(x: keras.KerasTensor) -> keras.KerasTensor:
    """ResNet50 (conv1_conv, convX_blockY_* for 16 bottleneck blocks), keras.applications' graph."""
    return keras.applications.ResNet50(input_tensor=x, include_top=False, weights=None).output


def efficientnet_b0(x: keras.KerasTensor) -> keras.KerasTensor:
    """EfficientNet-B0 (stem_conv, blockNx_*, top_conv) without keras' built-in Rescaling and
    Normalization layers, which become identities (tinyvision's `normalize` does their work)."""
    shape = tuple(x.shape[1:])
    reference = keras.applications.EfficientNetB0(input_shape=shape, include_top=False,
                                                  weights=None)
    numbers = count()

    def without_preprocessing(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return keras.layers.Identity(name=f"stem_preprocessing_removed_{next(numbers)}")
        return layer.__class__.from_config(layer.get_config())

    return rebuild_on(reference, x, "top_activation", without_preprocessing)


def squeezenet_1_1(x: keras.KerasTensor) -> keras.KerasTensor:
    """SqueezeNet 1.1 (Iandola et al. 2016, v1.1 of the reference implementation) up to fire9:
    conv1, then fire modules fire2..fire9 (`fire{N}_squeeze`, `fire{N}_expand1x1`,
    `fire{N}_expand3x3`, `fire{N}_concat`) with max pooling after conv1, fire3 and fire5.
    It has no BatchNorm, so its convs start from He initialisation (as the reference code does):
    the default Glorot one lets activations fade layer by layer when training from scratch."""
    x = keras.layers.Conv2D(64, 3, strides=2, kernel_initializer="he_uniform", name="conv1")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = _fire(x, 2, squeeze=16, expand=64)
    x = _fire(x, 3, squeeze=16, expand=64)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = _fire(x, 4, squeeze=32, expand=128)
    x = _fire(x, 5, squeeze=32, expand=128)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    for number, squeeze in ((6, 48), (7, 48), (8, 64), (9, 64)):
        x = _fire(x, number, squeeze=squeeze, expand=4 * squeeze)
    return x


def _fire(x: keras.KerasTensor, number: int, squeeze: int, expand: int) -> keras.KerasTensor:
    """A fire module: 1x1 squeeze, then 1x1 and 3x3 expands side by side, concatenated."""
    name = f"fire{number}"
    init = "he_uniform"
    x = keras.layers.Conv2D(squeeze, 1, kernel_initializer=init, name=f"{name}_squeeze")(x)
    x = keras.layers.ReLU(name=f"{name}_squeeze_relu")(x)
    left = keras.layers.Conv2D(expand, 1, kernel_initializer=init, name=f"{name}_expand1x1")(x)
    left = keras.layers.ReLU(name=f"{name}_expand1x1_relu")(left)
    right = keras.layers.Conv2D(expand, 3, padding="same", kernel_initializer=init,
                                name=f"{name}_expand3x3")(x)
    right = keras.layers.ReLU(name=f"{name}_expand3x3_relu")(right)
    return keras.layers.Concatenate(name=f"{name}_concat")([left, right])


def plain_cnn(x: keras.KerasTensor, filters: Iterable[int] = (16, 32, 64), kernel_size: int = 3,
              pool: str = "max", batchnorm: bool = True) -> keras.KerasTensor:
    """A plain CNN: per entry of `filters` one block `block_N_conv` (+ `block_N_bn`),
    `block_N_relu`, then 2x2 max/avg pooling `block_N_pool`, or a stride-2 conv (`pool="stride"`),
    or neither (`"none"`)."""
    if pool not in PLAIN_CNN_POOLS:
        raise ModelError(f"model.plain_cnn.pool={pool!r}; expected one of "
                         f"{sorted(PLAIN_CNN_POOLS)}.")
    filters = list(filters)
    halvings = len(filters) if pool != "none" else 0
    if min(x.shape[1], x.shape[2]) < 2 ** halvings:
        raise ModelError(f"model.plain_cnn has {len(filters)} pooling blocks, which halve the "
                         f"{x.shape[1]}x{x.shape[2]} input {halvings} times to nothing; use fewer "
                         "filters entries, a larger model.input_size, or pool: none.")
    for n, width in enumerate(filters, start=1):
        x = keras.layers.Conv2D(width, kernel_size, strides=2 if pool == "stride" else 1,
                                padding="same", use_bias=not batchnorm, name=f"block_{n}_conv")(x)
        if batchnorm:
            x = keras.layers.BatchNormalization(name=f"block_{n}_bn")(x)
        x = keras.layers.ReLU(name=f"block_{n}_relu")(x)
        if pool == "max":
            x = keras.layers.MaxPooling2D(2, name=f"block_{n}_pool")(x)
        elif pool == "avg":
            x = keras.layers.AveragePooling2D(2, name=f"block_{n}_pool")(x)
    return x


def rebuild_on(model: keras.Model, x: keras.KerasTensor, output_layer: str,
               clone_function: Callable[[Any], Any]) -> keras.KerasTensor:
    """Re-create `model`'s graph on tensor `x` (flat: its layers join the caller's graph) with the
    layers `clone_function` gives; returns the output of the layer named `output_layer`."""
    produced: dict[str, Any] = {}

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        result = layer(*args, **kwargs)
        produced[getattr(layer, "name", "")] = result
        return result

    keras.models.clone_model(model, input_tensors=like_input(model, x),
                             clone_function=clone_function, call_function=call)
    return produced[output_layer]


def like_input(model: keras.Model, x: Any) -> Any:
    """`x` in the structure of `model.input` (loaded files often have a one-item list)."""
    return [x] if isinstance(model.input, (list, tuple)) and not isinstance(x, list) else x


# ---- pretrained references: keras.applications with weights --------------------------------
def _quietly(builder: Callable[..., keras.Model], **kwargs: Any) -> keras.Model:
    with warnings.catch_warnings():  # "weights for 224x224 will be loaded": fine, any size works
        warnings.filterwarnings("ignore", message=".*input_shape. is undefined or non-square.*")
        return builder(include_top=False, **kwargs)


def _mobilenet_v1_reference(shape: tuple[int, int, int], alpha: float, weights: str) -> keras.Model:
    return _quietly(keras.applications.MobileNet, input_shape=shape, weights=weights, alpha=alpha)


def _mobilenet_v2_reference(shape: tuple[int, int, int], alpha: float, weights: str) -> keras.Model:
    return _quietly(keras.applications.MobileNetV2, input_shape=shape, weights=weights, alpha=alpha)


def _mobilenet_v3_reference(size: str, minimalistic: bool) -> Reference:
    builder = (keras.applications.MobileNetV3Small if size == "small"
               else keras.applications.MobileNetV3Large)

    def reference(shape: tuple[int, int, int], alpha: float, weights: str) -> keras.Model:
        return _quietly(builder, input_shape=shape, weights=weights, alpha=alpha,
                        minimalistic=minimalistic, include_preprocessing=False)

    return reference


def _resnet50_reference(shape: tuple[int, int, int], alpha: float, weights: str) -> keras.Model:
    return _quietly(keras.applications.ResNet50, input_shape=shape, weights=weights)


def _efficientnet_b0_reference(shape: tuple[int, int, int], alpha: float,
                               weights: str) -> keras.Model:
    return _quietly(keras.applications.EfficientNetB0, input_shape=shape, weights=weights)


def _mobilenet_v1_file(alpha: float, size: int) -> str:
    alpha_text = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[alpha]
    size = size if size in (128, 160, 192, 224) else 224
    return f"{KERAS_WEIGHTS_URL}mobilenet/mobilenet_{alpha_text}_{size}_tf_no_top.h5"


def _mobilenet_v2_file(alpha: float, size: int) -> str:
    size = size if size in (96, 128, 160, 192, 224) else 224
    return (f"{KERAS_WEIGHTS_URL}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
            f"{float(alpha)}_{size}_no_top.h5")


def _mobilenet_v3_file(size: str, minimalistic: bool) -> Callable[[float, int], str]:
    kind = f"{size}{'_minimalistic' if minimalistic else ''}"
    return lambda alpha, _: (f"{KERAS_WEIGHTS_URL}mobilenet_v3/weights_mobilenet_v3_{kind}_224_"
                             f"{float(alpha)}_float_no_top_v2.h5")


def _pairs(alphas: Iterable[float], sizes: Iterable[int]) -> tuple[tuple[float, int], ...]:
    return tuple((a, s) for a in alphas for s in sizes)


def _fixed_width(builder: Callable[[keras.KerasTensor], keras.KerasTensor]) -> Callable[..., Any]:
    return lambda x, alpha, **options: builder(x)


def _v3(size: str, minimalistic: bool) -> BackboneSpec:
    name = f"mobilenet_v3_{size}{'_minimalistic' if minimalistic else ''}"
    alphas = (1.0,) if minimalistic else (0.75, 1.0)
    return BackboneSpec(
        name=name,
        build=lambda x, alpha, **options: mobilenet_v3(x, alpha, size, minimalistic),
        input_scale=1 / 127.5, input_offset=-1.0,
        num_blocks=10 if size == "small" else 14, block_pattern=r"expanded_conv_{n}_",
        imagenet=_pairs(alphas, (224,)), reference=_mobilenet_v3_reference(size, minimalistic),
        weights_url=_mobilenet_v3_file(size, minimalistic), first_conv="conv",
        description=(f"MobileNet V3 {size.title()}" + (" minimalistic (ReLU, 3x3, no SE)"
                                                       if minimalistic else " (hard-swish, SE)")))


IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # EfficientNet's normalisation of 0..1 pixels
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # ResNet50 ("caffe" mode: BGR, mean subtracted)

BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v1": BackboneSpec(
        name="mobilenet_v1", build=mobilenet_v1, input_scale=1 / 127.5, input_offset=-1.0,
        num_blocks=13, block_pattern=r"conv_(pad|dw)_{n}($|_)",
        imagenet=_pairs((0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224)),
        reference=_mobilenet_v1_reference, weights_url=_mobilenet_v1_file, first_conv="conv1",
        description="MobileNet V1 (depthwise separable convs, ReLU6)"),
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2", build=mobilenet_v2, input_scale=1 / 127.5, input_offset=-1.0,
        num_blocks=16, block_pattern=r"block_{n}_",
        imagenet=_pairs((0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224)),
        reference=_mobilenet_v2_reference, weights_url=_mobilenet_v2_file, first_conv="Conv1",
        description="MobileNet V2 (inverted residuals, linear bottlenecks)"),
    "mobilenet_v3_small": _v3("small", False),
    "mobilenet_v3_large": _v3("large", False),
    "mobilenet_v3_small_minimalistic": _v3("small", True),
    "mobilenet_v3_large_minimalistic": _v3("large", True),
    "resnet50": BackboneSpec(
        name="resnet50", build=_fixed_width(resnet50), input_scale=1.0,
        input_offset=tuple(-m for m in CAFFE_MEAN_RGB), num_blocks=16,
        block_pattern=r"{name}_",
        block_names=tuple(f"conv{stage}_block{b}" for stage, blocks in ((2, 3), (3, 4), (4, 6),
                                                                          (5, 3))
                          for b in range(1, blocks + 1)),
        imagenet=((1.0, 224),), reference=_resnet50_reference,
        weights_url=lambda alpha, size: (f"{KERAS_WEIGHTS_URL}resnet/resnet50_weights_tf_dim_"
                                         "ordering_tf_kernels_notop.h5"),
        first_conv="conv1_conv", channel_order="bgr",
        description="ResNet50 (bottleneck residual blocks)"),
    "efficientnet_b0": BackboneSpec(
        name="efficientnet_b0", build=_fixed_width(efficientnet_b0),
        input_scale=tuple(1 / (255 * s) for s in IMAGENET_STD_RGB),
        input_offset=tuple(-m / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB)),
        num_blocks=16, block_pattern=r"{name}_",
        block_names=tuple(f"block{stage}{chr(97 + b)}" for stage, blocks in
                          ((1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 1))
                          for b in range(blocks)),
        imagenet=((1.0, 224),), reference=_efficientnet_b0_reference,
        weights_url=lambda alpha, size: f"{EFFICIENTNET_WEIGHTS_URL}efficientnetb0_notop.h5",
        first_conv="stem_conv", description="EfficientNet-B0 (MBConv, swish, SE)"),
    "squeezenet_1_1": BackboneSpec(
        name="squeezenet_1_1", build=_fixed_width(squeezenet_1_1), input_scale=1 / 127.5,
        input_offset=-1.0, num_blocks=8, block_pattern=r"{name}_",
        block_names=tuple(f"fire{n}" for n in range(2, 10)),
        first_conv="conv1", description="SqueezeNet 1.1 (fire modules; no Keras weights)"),
    "plain_cnn": BackboneSpec(
        name="plain_cnn", build=lambda x, alpha, **options: plain_cnn(x, **options),
        input_scale=1 / 127.5, input_offset=-1.0, num_blocks=0, block_pattern=r"block_{n}_",
        first_conv="block_1_conv",
        description="plain CNN from model.plain_cnn (conv, BatchNorm, ReLU, pooling blocks)"),
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ModelError(f"Unknown backbone={name!r}.{did_you_mean(name, BACKBONES)} Available: "
                         f"{sorted(BACKBONES)}.") from None


def build_backbone(spec: BackboneSpec, x: keras.KerasTensor, alpha: float,
                   options: dict[str, Any] | None = None) -> keras.KerasTensor:
    """The backbone's feature map built on the normalised input `x`."""
    if not spec.width_multiplier and alpha != 1.0:
        raise ModelError(f"{spec.name} has a fixed width, so model.alpha must be 1.0; received "
                         f"alpha={alpha:g}. Remove model.alpha or use a mobilenet backbone.")
    return spec.build(x, alpha, **(options or {}))


def backbone_cost(name: str, alpha: float = 1.0, input_size: tuple[int, int] = (96, 96),
                  channels: int = 3, options: dict[str, Any] | None = None) -> ModelCost:
    """Parameters and MACs of the backbone alone (no head) at `input_size`, from its Keras graph."""
    spec = get_backbone(name)
    inputs = keras.Input((*input_size, channels))
    return model_cost(keras.Model(inputs, build_backbone(spec, inputs, alpha, options)))


# ---- pretrained weights ----------------------------------------------------------------------
def check_weights_available(spec: BackboneSpec, alpha: float, weights: str) -> None:
    """Refuse `weights` the backbone cannot have, before anything is built or downloaded."""
    if weights == "imagenet" and not spec.imagenet:
        raise ModelError(f"keras.applications has no ImageNet weights for {spec.name}. Set "
                         "model.weights=none to train it from scratch, or use a backbone with "
                         "weights (docs/models.md).")
    if weights == "imagenet" and alpha not in spec.imagenet_alphas:
        pairs = ", ".join(f"alpha={a:g}/{s}px" for a, s in spec.imagenet)
        raise ModelError(f"No ImageNet weights for {spec.name} with alpha={alpha:g}; "
                         f"keras.applications has them for {pairs} (other input sizes reuse "
                         "them). Pick one of those alphas, or set model.weights=none to train "
                         "from scratch.")
    if weights not in ("imagenet", "none") and spec.reference is None:
        raise ModelError(f"{spec.name} has no weights-file format (keras.applications has no "
                         f"such model), so model.weights={weights!r} cannot load into it. To "
                         "start from a network you trained, set model.weights to its .keras/.h5 "
                         "model file and model.cut_at to the layer whose output is the backbone.")
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise ModelError(f"model.weights={weights!r}: no such file. Give the path of a weights "
                         "file (.h5) for this backbone, 'imagenet', or 'none'.")


def load_pretrained(model: keras.Model, spec: BackboneSpec, alpha: float, weights: str) -> int:
    """Copy pretrained backbone weights into `model` by layer name; return how many layers got them.

    `weights` is "imagenet" (keras.applications download, cached in ~/.keras/models) or a path to a
    weights file for the same backbone and alpha, without the classifier top.
    """
    check_weights_available(spec, alpha, weights)
    height, width, _ = model.input_shape[1:]
    reference = fetch_reference(spec, (height, width, 3), alpha, weights)
    copied = copy_pretrained(reference, model, spec)
    if copied == 0:
        raise ModelError(f"No layer of the {spec.name} weights in {weights} matches the model; "
                         "they are not weights of this backbone.")
    return copied


def copy_pretrained(reference: keras.Model, model: keras.Model, spec: BackboneSpec) -> int:
    """Copy a keras.applications `reference`'s weights into `model` (first conv made RGB/gray)."""
    return copy_weights(leaf_layers(reference), model,
                        flip_layer=spec.first_conv if spec.channel_order == "bgr" else "")


def fetch_reference(spec: BackboneSpec, shape: tuple[int, int, int], alpha: float,
                    weights: str) -> keras.Model:
    """The keras.applications model of `spec` with `weights` loaded (downloaded for imagenet)."""
    if spec.reference is None:
        raise ModelError(f"{spec.name} has no pretrained weights in keras.applications.")
    try:
        return spec.reference(shape, alpha, weights)
    except Exception as exc:  # download failures and file-format errors arrive as many types
        raise ModelError(_weights_error(spec, alpha, shape[0], weights, exc)) from None


def _weights_error(spec: BackboneSpec, alpha: float, size: int, weights: str,
                   exc: Exception) -> str:
    if weights == "imagenet" and spec.weights_url is not None:
        url = spec.weights_url(alpha, size)
        return (f"Could not get ImageNet weights for {spec.name} alpha={alpha:g} ({exc}). "
                f"If this machine is offline, download {url} elsewhere and set model.weights to "
                "the file's path (or copy it to ~/.keras/models/), or set model.weights=none to "
                "train from scratch.")
    return (f"Could not load weights file {weights} into {spec.name} alpha={alpha:g}: {exc}. It "
            "must be a weights file of this backbone and alpha, without the classifier top.")


def leaf_layers(model: keras.Model) -> Iterable[keras.layers.Layer]:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def copy_weights(sources: Iterable[keras.layers.Layer], target: keras.Model,
                 flip_layer: str = "") -> int:
    """Set the weights of `target`'s layers from same-named `sources`; returns how many layers.

    A conv kernel made for RGB going into a grayscale layer is summed over the colour axis (a gray
    pixel g is RGB (g, g, g), so the response to gray images is unchanged); `flip_layer`'s kernel
    is reversed on the colour axis (BGR-trained weights on RGB input).
    """
    copied = 0
    for source in sources:
        values = source.get_weights()
        if not values:
            continue
        try:
            layer = target.get_layer(source.name)
        except ValueError:
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        if (isinstance(layer, keras.layers.Conv2D) and values[0].ndim == 4
                and values[0].shape[2] == 3 and shapes and shapes[0][2] in (1, 3)):
            kernel = values[0][:, :, ::-1] if source.name == flip_layer else values[0]
            if shapes[0][2] == 1:
                kernel = kernel.sum(axis=2, keepdims=True)
            values = [kernel] + values[1:]
        if [tuple(v.shape) for v in values] != shapes:
            raise ModelError(f"Layer {source.name!r}: the source weights have shapes "
                             f"{[tuple(v.shape) for v in values]} but the model needs {shapes}. "
                             "The weights belong to another architecture, width (alpha) or "
                             "input size.")
        layer.set_weights(values)
        copied += 1
    return copied
