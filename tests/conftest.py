"""Shared fixtures: paths to the data beside the checkout, settings, tiny random checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FLICKR8K = SHARED / "data" / "flickr8k"
WEIGHTS_DIR = SHARED / "weights"

# Tests run offline: encoder weights are looked up in the shared folder, never downloaded.
if WEIGHTS_DIR.is_dir():
    os.environ.setdefault("CAPTIONBOT_WEIGHTS_DIR", str(WEIGHTS_DIR))

TINY_WORDS = "a dog runs on the grass man in red shirt child plays with ball water".split()


def needs_shared(path: Path = SHARED) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is not on this machine")


@pytest.fixture(scope="session")
def config():
    from captioner.config import load_config

    return load_config()


def make_tiny_checkpoint(
    path: Path,
    feature_dim: int = 512,
    encoder_name: str = "squeezenet",
    max_length: int = 12,
    seed: int = 0,
    units: int = 16,
    weights_id: str | None = None,
) -> Path:
    """A random-weight checkpoint small enough to build in a second.

    Its manifest names the encoder weights that the captioner will find here: the shared
    ImageNet SqueezeNet file, unless ``weights_id`` says otherwise.
    """
    import keras

    from captioner.checkpoint import build_manifest, save_checkpoint
    from captioner.decoder import build_decoder
    from captioner.squeezenet import SQUEEZENET_WEIGHTS_SHA256
    from captioner.vocabulary import Vocabulary

    if weights_id is None:
        weights_id = "imagenet-" + SQUEEZENET_WEIGHTS_SHA256[:16]

    keras.utils.set_random_seed(seed)
    vocabulary = Vocabulary.build([TINY_WORDS], max_words=100)
    model = build_decoder(vocabulary.size, feature_dim, embedding_dim=units, units=units)
    manifest = build_manifest(
        encoder={
            "name": encoder_name,
            "feature_dim": feature_dim,
            "input_size": [224, 224],
            "weights_id": weights_id,
        },
        vocabulary=vocabulary,
        max_length=max_length,
        decoder={"embedding_dim": units, "units": units, "dropout": 0.5},
        data={"dataset": "synthetic", "train_split": "none"},
    )
    return save_checkpoint(path, model, vocabulary, manifest)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random SqueezeNet-feature checkpoint (the encoder uses the real shared weights)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
