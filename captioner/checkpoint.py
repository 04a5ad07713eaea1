"""Checkpoints: a directory that holds a trained decoder and says everything about it.

A checkpoint is ``decoder.keras`` (Keras native format, loaded with safe_mode), the vocabulary
as JSON and ``manifest.json``: encoder, feature width, input size, max caption length,
vocabulary size and hash, decoder sizes, data, training settings and measured metrics. Writes
go to a temporary directory that is renamed into place, so a crash never leaves half a one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from captioner import decoder as decoder_layers
from captioner.atomic import make_temp_dir, write_text_atomic
from captioner.errors import CaptionbotError
from captioner.vocabulary import Vocabulary

logger = logging.getLogger(__name__)

FORMAT = "captionbot-checkpoint/1"
MODEL_FILE = "decoder.keras"
VOCABULARY_FILE = "vocabulary.json"
MANIFEST_FILE = "manifest.json"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "flickr8k-squeezenet"


class CheckpointError(CaptionbotError):
    """A checkpoint that cannot be used; the message says what is missing or mismatched."""


@dataclass
class Checkpoint:
    path: Path
    model: keras.Model
    vocabulary: Vocabulary
    manifest: dict[str, Any]

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])


def default_checkpoint_path() -> Path:
    """The checkpoint shipped inside the package."""
    return DEFAULT_CHECKPOINT


def build_manifest(
    *,
    encoder: dict[str, Any],
    vocabulary: Vocabulary,
    max_length: int,
    decoder: dict[str, Any],
    data: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a manifest; ``encoder`` holds name, feature_dim, input_size and weights_id."""
    return {
        "format": FORMAT,
        "encoder": dict(encoder),
        "max_length": int(max_length),
        "vocabulary": {"size": vocabulary.size, "sha256": vocabulary.sha256()},
        "decoder": dict(decoder),
        "data": dict(data or {}),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }


def _fsync_tree(root: Path) -> None:
    for path in root.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def save_checkpoint(
    path: str | Path, model: keras.Model, vocabulary: Vocabulary, manifest: dict[str, Any]
) -> Path:
    """Write a checkpoint directory atomically, replacing any checkpoint already there.

    The files are written and synced in a temporary sibling directory, which is then renamed
    to ``path``; an old checkpoint at ``path`` is moved aside first and removed after.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = decoder_layers.decoder_sizes(model)
    if sizes["vocab_size"] != vocabulary.size:
        raise CheckpointError(
            f"decoder embeds {sizes['vocab_size']} ids but the vocabulary has {vocabulary.size}"
        )
    if manifest.get("vocabulary", {}).get("sha256") != vocabulary.sha256():
        raise CheckpointError("manifest's vocabulary hash does not match the vocabulary")

    tmp = make_temp_dir(path.parent, prefix=f".{path.name}.tmp-")
    try:
        model.save(tmp / MODEL_FILE)
        vocabulary.save(tmp / VOCABULARY_FILE)
        (tmp / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _fsync_tree(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.rename(path, old / "checkpoint")
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("checkpoint saved path=%s vocab=%d", path, vocabulary.size)
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the checkpoint at ``path``, checked for its format."""
    manifest_path = Path(path) / MANIFEST_FILE
    if not Path(path).is_dir():
        raise CheckpointError(f"no checkpoint directory at {path}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no {MANIFEST_FILE}; is it a checkpoint?") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {manifest_path}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise CheckpointError(f"{manifest_path} has format {found!r}, expected {FORMAT!r}")
    for key in ("encoder", "max_length", "vocabulary", "decoder"):
        if key not in manifest:
            raise CheckpointError(f"{manifest_path} lacks the key '{key}'")
    for key in ("encoder", "vocabulary", "decoder", "data", "training", "metrics"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise CheckpointError(
                f"{manifest_path}: '{key}' must be a mapping, not {type(manifest[key]).__name__}"
            )
    return manifest


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint and check that its parts agree with each other.

    Raises:
        CheckpointError: naming what is missing or what does not match.
    """
    path = Path(path).resolve()
    manifest = read_manifest(path)

    try:
        vocabulary = Vocabulary.load(path / VOCABULARY_FILE)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the vocabulary of {path}: {err}") from None
    expected_size = manifest["vocabulary"].get("size")
    if vocabulary.size != expected_size:
        raise CheckpointError(
            f"vocabulary has {vocabulary.size} words but the manifest says {expected_size!r}"
        )
    if vocabulary.sha256() != manifest["vocabulary"].get("sha256"):
        raise CheckpointError("vocabulary file does not match the manifest's sha256")

    max_length = manifest["max_length"]
    if not isinstance(max_length, int) or max_length < 1:
        raise CheckpointError(
            f"manifest max_length must be a positive integer, not {max_length!r}"
        )

    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise CheckpointError(f"{path} has no {MODEL_FILE}")
    if not zipfile.is_zipfile(model_path):
        # Keras reports a damaged archive as "File not found", which misleads.
        raise CheckpointError(f"{model_path} is damaged: not a complete Keras archive")
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a damaged or foreign file.
        raise CheckpointError(f"cannot load {model_path}: {err}") from None

    try:
        sizes = decoder_layers.decoder_sizes(model)
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"{path / MODEL_FILE} is not a caption decoder: {err}") from None
    if sizes["vocab_size"] != vocabulary.size:
        raise CheckpointError(
            f"decoder embeds {sizes['vocab_size']} ids but the vocabulary has {vocabulary.size}"
        )
    output_size = int(model.get_layer(decoder_layers.OUTPUT).units)
    if output_size != vocabulary.size:
        raise CheckpointError(
            f"decoder predicts {output_size} words but the vocabulary has {vocabulary.size}"
        )
    feature_dim = manifest["encoder"].get("feature_dim")
    if sizes["feature_dim"] != feature_dim:
        raise CheckpointError(
            f"decoder takes {sizes['feature_dim']}-d features but the manifest's encoder "
            f"gives {feature_dim}-d"
        )
    for key in ("embedding_dim", "units"):
        if manifest["decoder"].get(key) != sizes[key]:
            raise CheckpointError(
                f"decoder {key} is {sizes[key]} but the manifest says "
                f"{manifest['decoder'].get(key)}"
            )
    return Checkpoint(path=path, model=model, vocabulary=vocabulary, manifest=manifest)


def update_manifest_metrics(path: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge ``metrics`` into the manifest's metrics block, rewriting the file atomically."""
    manifest = read_manifest(path)
    merged = dict(manifest.get("metrics") or {})
    for key, value in metrics.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    manifest["metrics"] = merged
    write_text_atomic(
        Path(path) / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    )
    return manifest
