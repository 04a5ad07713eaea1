"""Image encoders: a registry of pretrained CNNs that turn image batches into feature vectors.

`build_encoder` finds the weights (a named file, a folder searched by canonical file name,
Keras' cache, or a download), builds the model once, and returns an `Encoder` whose `encode`
maps (N, H, W, 3) RGB 0..255 images to (N, D) float32 features, on the GPU when TF sees one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.errors import CaptionbotError
from captioner.squeezenet import (
    SQUEEZENET_WEIGHTS_FILE,
    SQUEEZENET_WEIGHTS_SHA256,
    SQUEEZENET_WEIGHTS_URL,
    build_squeezenet,
    load_squeezenet_weights,
)

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "CAPTIONBOT_WEIGHTS_DIR"

# The file keras.applications.ResNet50(include_top=False, weights="imagenet") downloads; the
# hash is the md5 Keras publishes for it.
RESNET50_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + RESNET50_WEIGHTS_FILE
)
RESNET50_WEIGHTS_MD5 = "4d473c1dd8becc155b73f8504c6f6626"

# Seed of weights="random": fixed, so that "random-seed0" names one set of weights.
RANDOM_SEED = 0


class EncoderWeightsError(CaptionbotError):
    """The encoder's weights cannot be found or do not fit the model; the message says why."""


class UnknownEncoderError(CaptionbotError, ValueError):
    """An encoder name that the registry does not have."""


@dataclass(frozen=True)
class WeightsFile:
    """A published weights file: canonical name, download address and hash (md5 or sha256)."""

    fname: str
    url: str
    file_hash: str


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry: how to build an encoder's model and feed it."""

    name: str
    input_size: tuple[int, int]
    feature_dim: int
    imagenet_weights: WeightsFile
    build_model: Callable[[], keras.Model]
    load_weights: Callable[[keras.Model, Path], None]
    preprocess: Callable[[np.ndarray], np.ndarray]


def _build_resnet50() -> keras.Model:
    return keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(224, 224, 3), pooling="avg"
    )


def _load_keras_weights(model: keras.Model, path: Path) -> None:
    # What keras.applications.ResNet50(weights=path) does: a Keras 2 ".h5" file loads in layer
    # order, a Keras 3 ".weights.h5" file by its own layout.
    model.load_weights(str(path))


ENCODERS: dict[str, EncoderSpec] = {
    "resnet50": EncoderSpec(
        name="resnet50",
        input_size=(224, 224),
        feature_dim=2048,
        imagenet_weights=WeightsFile(
            RESNET50_WEIGHTS_FILE, RESNET50_WEIGHTS_URL, RESNET50_WEIGHTS_MD5
        ),
        build_model=_build_resnet50,
        load_weights=_load_keras_weights,
        preprocess=keras.applications.resnet50.preprocess_input,
    ),
    "squeezenet": EncoderSpec(
        name="squeezenet",
        input_size=(224, 224),
        feature_dim=512,
        imagenet_weights=WeightsFile(
            SQUEEZENET_WEIGHTS_FILE, SQUEEZENET_WEIGHTS_URL, SQUEEZENET_WEIGHTS_SHA256
        ),
        build_model=build_squeezenet,
        load_weights=load_squeezenet_weights,
        preprocess=functools.partial(
            keras.applications.imagenet_utils.preprocess_input, mode="caffe"
        ),
    ),
}


class Encoder:
    """A built encoder: a CNN with its weights and its own input preprocessing.

    Attributes:
        name: registry name, e.g. "resnet50".
        input_size: (height, width) the images must have.
        feature_dim: D, the width of one image's features.
        weights_id: stable id of the weights, a function of the weights alone: "imagenet-<sha16>"
            for the published file (however it was found), "file-<sha16>" for any other file,
            "random-seed<N>" for random weights; feature caches and checkpoints key on it.
        model: the Keras model, (N, H, W, 3) preprocessed input -> (N, D).
    """

    def __init__(self, spec: EncoderSpec, model: keras.Model, weights_id: str) -> None:
        self.name = spec.name
        self.input_size = spec.input_size
        self.feature_dim = spec.feature_dim
        self.weights_id = weights_id
        self.model = model
        self._preprocess = spec.preprocess

        # One graph for every batch size: a None batch dimension never retraces.
        height, width = spec.input_size
        self._traced = tf.function(
            lambda batch: model(batch, training=False),
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)],
        )
        self._frozen: Callable[[tf.Tensor], tf.Tensor] | None = None

    def __repr__(self) -> str:
        return f"Encoder(name={self.name!r}, weights_id={self.weights_id!r})"

    def _check_images(self, images: np.ndarray) -> None:
        shape = np.shape(images)
        if len(shape) != 4 or tuple(shape[1:]) != (*self.input_size, 3):
            raise ValueError(
                f"encoder {self.name} takes images of shape (N, {self.input_size[0]}, "
                f"{self.input_size[1]}, 3), got {shape}"
            )

    def _forward(self, batch: np.ndarray) -> tf.Tensor:
        """Run the model on a preprocessed (b, H, W, 3) batch; (b, D) features."""
        if self._frozen is None:
            self._frozen = _freeze(self._traced)
        return self._frozen(tf.convert_to_tensor(batch))

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Turn (N, H, W, 3) RGB 0..255 images into model input; `images` is left unchanged.

        Returns:
            (N, H, W, 3) float32 BGR with the ImageNet channel means subtracted (caffe style).
        """
        self._check_images(images)

        # Keras' preprocess_input edits float arrays in place, hence the copy.
        batch = np.array(images, dtype=np.float32, copy=True)
        return np.ascontiguousarray(self._preprocess(batch), dtype=np.float32)

    def encode(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Encode images in batches of at most `batch_size`.

        Args:
            images: (N, H, W, 3) RGB, values 0..255, H and W equal to `input_size`.
            batch_size: images per forward pass; features do not depend on it beyond float
                rounding.

        Returns:
            (N, D) float32 features.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._check_images(images)

        count = len(images)
        features = np.empty((count, self.feature_dim), dtype=np.float32)
        for start in range(0, count, batch_size):
            batch = self.preprocess(images[start : start + batch_size])  # (b, H, W, 3)
            features[start : start + len(batch)] = self._forward(batch).numpy()  # (b, D)
        return features


def _freeze(traced: tf.types.experimental.PolymorphicFunction) -> Callable:
    """The traced model with its weights as graph constants, for inference only.

    Constants let TensorFlow's graph optimizer fold each batch normalisation into the
    convolution before it, as ONNX Runtime does: on two CPU cores ResNet50's batch-1 encode
    takes about a fifth less time, and batches of 32 nearly twice as many images a second.
    """
    # Limitation: the variables are read once, here; weights set on the model afterwards are
    # not seen, and the frozen graph holds another copy of them (ResNet50: about 1 GB more).
    try:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )
    except ImportError:  # a TensorFlow without this (internal) module: run unfrozen
        logger.warning("cannot freeze the encoder graph; running it unfrozen")
        return traced

    frozen = convert_variables_to_constants_v2(traced.get_concrete_function())
    return lambda batch: frozen(batch)[0]


def _file_digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) hex digests of a file."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def find_weights_file(weights_file: WeightsFile, weights_dir: str | Path | None = None) -> Path:
    """Find a published weights file: in `weights_dir`, else in Keras' cache, else download it.

    Args:
        weights_file: the file's canonical name, address and hash.
        weights_dir: folder searched first; None reads the CAPTIONBOT_WEIGHTS_DIR variable.

    Returns:
        Path of the file on disk.

    Raises:
        EncoderWeightsError: not found locally and the download failed (offline, say); the
            message says where to put the file.
    """
    if weights_dir is None:
        weights_dir = os.environ.get(WEIGHTS_DIR_ENV) or None
    if weights_dir is not None:
        candidate = Path(weights_dir).expanduser() / weights_file.fname
        if candidate.is_file():
            return candidate
        logger.info("weights not in weights_dir file=%s dir=%s", weights_file.fname, weights_dir)

    # Keras' own download-and-cache (~/.keras/models): finds an earlier download offline.
    try:
        cached = keras.utils.get_file(
            weights_file.fname,
            weights_file.url,
            file_hash=weights_file.file_hash,
            cache_subdir="models",
        )
    except Exception as err:  # get_file raises a bare Exception on network failure
        searched = f"{weights_dir} and " if weights_dir is not None else ""
        raise EncoderWeightsError(
            f"weights file {weights_file.fname} not found in {searched}Keras' cache, and the "
            f"download from {weights_file.url} failed ({err}). Put the file in a folder and "
            f"set {WEIGHTS_DIR_ENV} (or encoder.weights_dir in the config) to that folder, "
            f"or pass the file's path as the weights."
        ) from err
    return Path(cached)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Keras' initializers for one build, then give Python and NumPy their state back."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        # Limitation: TensorFlow's global seed stays set to `seed` afterwards.
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def build_encoder(
    name: str, weights: str | Path = "imagenet", weights_dir: str | Path | None = None
) -> Encoder:
    """Build a registered encoder with its weights.

    Args:
        name: a key of ENCODERS ("resnet50" or "squeezenet").
        weights: "imagenet" (the published file, found by `find_weights_file`), "random"
            (initialised with RANDOM_SEED), or the path of a weights file.
        weights_dir: folder searched first for the ImageNet file under its canonical name;
            None reads the CAPTIONBOT_WEIGHTS_DIR variable.

    Raises:
        UnknownEncoderError: unknown encoder name (a ValueError).
        EncoderWeightsError: the weights cannot be found or do not fit the model.
    """
    if name not in ENCODERS:
        raise UnknownEncoderError(
            f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}"
        )
    spec = ENCODERS[name]

    if str(weights) == "random":
        with _seeded(RANDOM_SEED):
            model = spec.build_model()
        encoder = Encoder(spec, model, f"random-seed{RANDOM_SEED}")
        logger.info("encoder built name=%s weights_id=%s", name, encoder.weights_id)
        return encoder

    if str(weights) == "imagenet":
        path = find_weights_file(spec.imagenet_weights, weights_dir)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EncoderWeightsError(f"weights file {path} does not exist")

    # The id depends on the file's bytes only, not on how the file was found.
    sha256, md5 = _file_digests(path)
    published = spec.imagenet_weights.file_hash in (sha256, md5)
    prefix = "imagenet" if published else "file"
    if str(weights) == "imagenet" and not published:
        logger.warning(
            "weights file differs from the published one path=%s sha256=%s", path, sha256
        )

    model = spec.build_model()
    try:
        spec.load_weights(model, path)
    except (ValueError, OSError) as err:
        raise EncoderWeightsError(f"cannot load {name} weights from {path}: {err}") from err

    encoder = Encoder(spec, model, f"{prefix}-{sha256[:16]}")
    logger.info("encoder built name=%s weights_id=%s path=%s", name, encoder.weights_id, path)
    return encoder
