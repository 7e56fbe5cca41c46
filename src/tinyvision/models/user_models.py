"""Backbones cut from a user's own Keras model file: `.keras`, or `.h5` saved by Keras 2 (tf.keras
in TensorFlow 2.x), which is what most users have.

Loading never runs Python code stored in the file: Keras safe mode stays on, and a file with
Lambda layers is refused, naming them, unless the config opts in (`model.allow_unsafe_model_code`).
Plain Keras 3 refuses some Keras 2 files over arguments Keras 2 wrote but that never had an effect
(`groups: 1` on DepthwiseConv2D, SeparableConv2D and transposed convs; `fused` on BatchNorm); those
layers load through thin Keras-2-tolerant subclasses here and are rebuilt as standard Keras layers.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import keras

from tinyvision.config import MODEL_FILE_SUFFIXES
from tinyvision.errors import ModelError, did_you_mean
from tinyvision.layout import FLOAT_MODEL_FILE
from tinyvision.models.backbones import like_input, rebuild_on

UNSAFE_FLAG = "model.allow_unsafe_model_code: true"
_ANY = object()  # any value of a dropped argument is fine: Keras 2 ignored it too


def _keras2_tolerant(base: type, dropped: dict[str, Any]) -> type:
    """A subclass of `base` accepting the Keras 2 arguments `dropped` ({name: neutral value}) and
    dropping them; a non-neutral value is an error (Keras 3 has nothing that does the same)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for key, neutral in dropped.items():
            if key in kwargs:
                value = kwargs.pop(key)
                if neutral is not _ANY and value != neutral:
                    raise ValueError(f"{base.__name__} argument {key}={value!r} from Keras 2 has "
                                     f"no Keras 3 equivalent (only {key}={neutral!r} loads)")
        axis = kwargs.get("axis")
        if isinstance(axis, list) and len(axis) == 1:  # Keras 2 BatchNorm wrote axis: [3]
            kwargs["axis"] = axis[0]
        base.__init__(self, *args, **kwargs)

    return type(base.__name__, (base,), {"__init__": __init__, "_keras3_class": base})


_layers = keras.layers
KERAS2_LAYERS: dict[str, type] = {
    cls.__name__: _keras2_tolerant(cls, dropped) for cls, dropped in [
        (_layers.DepthwiseConv2D, {"groups": 1, "kernel_initializer": _ANY,
                                   "kernel_regularizer": _ANY, "kernel_constraint": _ANY}),
        (_layers.DepthwiseConv1D, {"groups": 1}),
        (_layers.SeparableConv2D, {"groups": 1}),
        (_layers.SeparableConv1D, {"groups": 1}),
        (_layers.Conv2DTranspose, {"groups": 1}),
        (_layers.Conv1DTranspose, {"groups": 1}),
        (_layers.Conv3DTranspose, {"groups": 1}),
        (_layers.BatchNormalization, {"fused": _ANY, "virtual_batch_size": None,
                                      "adjustment": None}),
    ]
}


def read_model_config(path: Path) -> dict:
    """The architecture JSON of a model file, read without building anything."""
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            text = f.attrs.get("model_config")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"model.weights={str(path)!r} is not a readable Keras model file "
                         f"({exc}). Save the model with model.save('model.keras') (or .h5)."
                         ) from None
    if text is None:
        raise ModelError(f"model.weights={str(path)!r} holds weights only, no architecture, so it "
                         "cannot be cut at model.cut_at. Save the whole model (model.save(...)), "
                         "or drop model.cut_at to load it as weights of model.backbone.")
    return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)


def lambda_layers(config: Any) -> list[str]:
    """Names of the Lambda layers anywhere in a model config (nested models included)."""
    found: list[str] = []
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            found.append(str((config.get("config") or {}).get("name", "?")))
        for value in config.values():
            found.extend(lambda_layers(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(lambda_layers(value))
    return found


def load_model_file(path: str | Path, allow_unsafe_code: bool = False) -> keras.Model:
    """Load a `.keras` / `.h5` model file (Keras 3, or Keras 2 from TensorFlow 2.x) for cutting."""
    path = Path(path)
    if path.suffix.lower() not in MODEL_FILE_SUFFIXES or path.name.endswith(".weights.h5"):
        raise ModelError(f"model.weights={str(path)!r}: model.cut_at needs a whole Keras model "
                         f"file ({', '.join(MODEL_FILE_SUFFIXES)}), not a weights-only file.")
    if not path.is_file():
        raise ModelError(f"model.weights={str(path)!r}: no such file.")
    lambdas = lambda_layers(read_model_config(path))
    if lambdas and not allow_unsafe_code:
        raise ModelError(f"{path} has Lambda layer(s) {lambdas}; loading them would run Python "
                         "code stored in the file, which tinyvision never does by default. If you "
                         f"trust the file, set {UNSAFE_FLAG}; otherwise cut the model before those "
                         "layers (model.cut_at) after re-saving it without them.")
    try:
        model = keras.models.load_model(path, custom_objects=KERAS2_LAYERS, compile=False,
                                        safe_mode=not allow_unsafe_code)
    except Exception as exc:  # Keras raises TypeError/ValueError/KeyError... with the reason
        raise ModelError(_load_error(path, exc)) from None
    if not isinstance(model, keras.Model) or not model.inputs:
        raise ModelError(f"{path} holds a {type(model).__name__} without a known input shape; "
                         "save a Functional or built Sequential model.")
    return model


TRUST_FLAG = "--trust-model-code"  # the CLI flag; Python: trust_model_code=True


def load_trained_model(path: str | Path, trust_model_code: bool = False) -> keras.Model:
    """A model file that tinyvision saved (a run's model_float.keras). A model whose backbone was
    cut from a file with Lambda layers stores their code too, so it loads only when the caller
    trusts that code (`--trust-model-code`, `trust_model_code=True`): a run folder received from
    someone else never runs its code by itself, whatever its config.yaml says."""
    path = Path(path)
    if not trust_model_code:
        try:
            lambdas = lambda_layers(read_model_config(path))
        except ModelError:
            lambdas = []  # unreadable here: keras' own load below says why
        if lambdas:
            raise ModelError(f"{path} stores Python code in its Lambda layer(s) {lambdas}; loading "
                             "it would run that code, which tinyvision never does by default. If "
                             f"you trust the run (you made it), pass {TRUST_FLAG} (Python: "
                             "trust_model_code=True).")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not trust_model_code)
    except Exception as exc:  # Keras raises TypeError/ValueError/KeyError... with the reason
        raise ModelError(_load_error(Path(path), exc)) from None


def _load_error(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "safe_mode" in text or "unsafe" in text:
        hint = (f"pass {TRUST_FLAG}" if path.name == FLOAT_MODEL_FILE else f"set {UNSAFE_FLAG}")
        return (f"{path} stores Python code (a lambda or custom function), which tinyvision does "
                f"not run by default. If you trust the file, {hint}. ({text[:300]})")
    if "Could not locate" in text or "Unknown layer" in text:
        return (f"{path} uses a custom layer or function that is not part of Keras ({text[:300]}). "
                "A backbone cut from a file must be made of standard Keras layers.")
    return f"Cannot load the Keras model file {path}: {text[:600]}"


def cut_backbone(model: keras.Model, cut_at: str, x: keras.KerasTensor) -> keras.KerasTensor:
    """The output of layer `cut_at` of `model`, with the layers up to it re-created (new, standard
    Keras layers with the same names) on tensor `x`. Nested models are inlined, so every layer is
    a layer of the caller's model. Copy the weights afterwards with `copy_weights`."""
    flat = flatten_model(model)
    names = [layer.name for layer in flat.layers]
    if cut_at not in names:
        hint = did_you_mean(cut_at, names, n=3, cutoff=0.5)
        raise ModelError(f"model.cut_at={cut_at!r} is not a layer of {model.name}.{hint} Its "
                         f"layers end with: {names[-8:]}.")
    output = flat.get_layer(cut_at).output
    if len(output.shape) != 4:
        raise ModelError(f"model.cut_at={cut_at!r} outputs shape {tuple(output.shape)}; a backbone "
                         "must output a feature map (batch, height, width, channels). Cut at a "
                         "conv/activation layer before the pooling or flatten.")
    cut = keras.Model(flat.inputs, output)
    return rebuild_on(cut, x, cut_at, _fresh_layer)


def flatten_model(model: keras.Model) -> keras.Model:
    """`model` with nested models inlined (fresh layers, same names, at the file's input shape)."""
    if len(model.inputs) != 1:
        raise ModelError(f"{model.name} has {len(model.inputs)} inputs; a backbone takes one "
                         "image.")
    source = model.inputs[0]
    inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype)
    try:
        return keras.Model(inputs, _call_inlined(model, inputs))
    except ValueError as exc:  # e.g. two nested models both have a layer named "conv"
        raise ModelError(f"Cannot use {model.name} as a backbone: {exc}") from None


def _call_inlined(layer: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `layer` on symbolic tensors; a nested model is unrolled into its layers."""
    if isinstance(layer, keras.Sequential):
        x = args[0]
        for inner in layer.layers:
            x = _call_inlined(inner, x)
        return x
    if isinstance(layer, keras.Model):
        produced: list[Any] = []

        def call(op: Any, *a: Any, **k: Any) -> Any:
            result = _call_inlined(op, *a, **k)
            produced.append((op, result))
            return result

        # clone_function keeps the original layers; `call` swaps in fresh ones as it calls them.
        keras.models.clone_model(layer, input_tensors=like_input(layer, args[0]),
                                 clone_function=lambda op: op,
                                 call_function=call)
        outputs = [_produced_output(layer, t, produced) for t in layer.outputs]
        return outputs[0] if len(outputs) == 1 else outputs
    return _fresh_layer(layer)(*args, **kwargs)


def _produced_output(model: keras.Model, tensor: Any, produced: list) -> Any:
    """The re-created counterpart of `model`'s output `tensor`."""
    maker = tensor._keras_history.operation  # the layer that made the original output
    for op, result in reversed(produced):
        if op is maker:
            return result
    raise ModelError(f"Cannot inline the nested model {model.name}: the output of "
                     f"{maker.name} was not re-created.")


def _fresh_layer(layer: Any) -> Any:
    """A new, unbuilt copy of `layer` as a standard Keras layer (same name and config)."""
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
        return layer  # keras.ops operations (x + 3.0) hold no weights: reuse them
    if isinstance(layer, keras.layers.Lambda):
        return layer  # allowed by the config; no weights, and re-creating it would run code again
    cls = getattr(type(layer), "_keras3_class", type(layer))
    return cls.from_config(layer.get_config())
