"""SqueezeNet v1.1 as a Keras functional model, and a loader for its ImageNet weights.

The architecture matches the published Keras 2 weights file layer for layer, so the weights load
by layer name; the classifier is left out and global average pooling gives a 512-d feature.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import keras
import numpy as np

logger = logging.getLogger(__name__)

SQUEEZENET_WEIGHTS_FILE = "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
SQUEEZENET_WEIGHTS_URL = (
    "https://github.com/DeepCognition/keras-squeezenet/releases/download/v0.4/"
    + SQUEEZENET_WEIGHTS_FILE
)
SQUEEZENET_WEIGHTS_SHA256 = "17154246284f555591549ac2c83e127abfbf4307dc4b0060fdaa2931d0fa38da"

# (name, squeeze filters, expand filters per branch); a max pool follows fire3 and fire5.
FIRE_MODULES = (
    ("fire2", 16, 64),
    ("fire3", 16, 64),
    ("fire4", 32, 128),
    ("fire5", 32, 128),
    ("fire6", 48, 192),
    ("fire7", 48, 192),
    ("fire8", 64, 256),
    ("fire9", 64, 256),
)
_POOL_AFTER = {"fire3": "pool3", "fire5": "pool5"}


def keras_layer_name(file_layer_name: str) -> str:
    """Map a layer name of the weights file ("fire2/squeeze1x1") to ours ("fire2_squeeze1x1").

    Keras 3 forbids "/" in layer names, so the file's group separator becomes "_".
    """
    return file_layer_name.replace("/", "_")


def _fire(x: keras.KerasTensor, name: str, squeeze: int, expand: int) -> keras.KerasTensor:
    """One fire module: 1x1 squeeze, then 1x1 and 3x3 expand branches concatenated (1x1 first)."""
    x = keras.layers.Conv2D(squeeze, 1, padding="valid", name=f"{name}_squeeze1x1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu_squeeze1x1")(x)

    left = keras.layers.Conv2D(expand, 1, padding="valid", name=f"{name}_expand1x1")(x)
    left = keras.layers.ReLU(name=f"{name}_relu_expand1x1")(left)
    right = keras.layers.Conv2D(expand, 3, padding="same", name=f"{name}_expand3x3")(x)
    right = keras.layers.ReLU(name=f"{name}_relu_expand3x3")(right)

    # (N, h, w, 2 * expand)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([left, right])


def build_squeezenet(input_shape: tuple[int, int, int] = (224, 224, 3)) -> keras.Model:
    """Build SqueezeNet v1.1 without its classifier, randomly initialised.

    Args:
        input_shape: (height, width, 3) of caffe-preprocessed BGR input.

    Returns:
        A functional model named "squeezenet" mapping (N, H, W, 3) float32 to (N, 512)
        non-negative features (global average of the last ReLU).
    """
    inputs = keras.Input(shape=input_shape, name="input")

    # (N, 224, 224, 3) -> (N, 111, 111, 64) -> pool1 (N, 55, 55, 64)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="valid", name="conv1")(inputs)
    x = keras.layers.ReLU(name="relu_conv1")(x)
    x = keras.layers.MaxPooling2D(pool_size=3, strides=2, name="pool1")(x)

    # fire2-3 at 55x55 -> pool3 27x27, fire4-5 -> pool5 13x13, fire6-9 -> (N, 13, 13, 512)
    for name, squeeze, expand in FIRE_MODULES:
        x = _fire(x, name, squeeze, expand)
        if name in _POOL_AFTER:
            x = keras.layers.MaxPooling2D(pool_size=3, strides=2, name=_POOL_AFTER[name])(x)

    # (N, 13, 13, 512) -> (N, 512)
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, features, name="squeezenet")


def _decode(value: bytes | str) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def load_squeezenet_weights(model: keras.Model, path: str | Path) -> None:
    """Load a Keras 2 HDF5 weights file into `model` by layer name, strictly.

    Every layer of `model` that has weights must find a group of the same name in the file
    (after `keras_layer_name`) with weights of the same shapes; file layers the model lacks
    (a classifier, say) are ignored. Keras' own `load_weights(by_name=True)` skips missing
    names silently, which would leave random weights in place without a word.

    Raises:
        ValueError: the file is not a Keras 2 weights file, or a layer is missing or its
            weights differ in count or shape; the message names the layer.
    """
    with h5py.File(path, "r") as f:
        if "layer_names" not in f.attrs and "model_weights" in f:
            f = f["model_weights"]
        if "layer_names" not in f.attrs:
            raise ValueError(f"{path} is not a Keras 2 HDF5 weights file (no layer_names)")

        file_weights: dict[str, list[np.ndarray]] = {}
        for raw_name in f.attrs["layer_names"]:
            layer_name = _decode(raw_name)
            group = f[layer_name]
            names = [_decode(n) for n in group.attrs.get("weight_names", [])]
            if names:
                file_weights[keras_layer_name(layer_name)] = [np.asarray(group[n]) for n in names]

    loaded = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in file_weights:
            raise ValueError(f"{path} has no weights for layer {layer.name}")

        values = file_weights.pop(layer.name)
        expected = [tuple(w.shape) for w in layer.weights]
        found = [v.shape for v in values]
        if expected != found:
            raise ValueError(
                f"{path}: layer {layer.name} expects weight shapes {expected}, file has {found}"
            )
        layer.set_weights(values)
        loaded.append(layer.name)

    logger.info(
        "squeezenet weights loaded path=%s layers=%d ignored=%s",
        path,
        len(loaded),
        ",".join(sorted(file_weights)) or "-",
    )
