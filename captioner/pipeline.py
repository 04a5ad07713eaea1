"""The captioner: image files in, captions out, from one checkpoint.

It loads the checkpoint, builds the encoder its manifest names, and runs images through the
same loading function as training, the encoder in one batch, then greedy or beam decoding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioner.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from captioner.config import Config, load_config
from captioner.decoding import StepDecoder, beam_search
from captioner.encoders import WEIGHTS_DIR_ENV, Encoder, build_encoder
from captioner.images import ImageError, load_image

logger = logging.getLogger(__name__)

NO_CAPTION = "(no caption: the model found nothing to say about this image)"

ImageSource = bytes | str | Path


@dataclass(frozen=True)
class Caption:
    """A caption for one image; ``ok`` is False for the no-caption fallback."""

    text: str
    words: tuple[str, ...]
    ok: bool

    @classmethod
    def from_words(cls, words: Sequence[str]) -> Caption:
        if not words:
            return cls(text=NO_CAPTION, words=(), ok=False)
        return cls(text=" ".join(words), words=tuple(words), ok=True)


class Captioner:
    """Captions images with one checkpoint's decoder and the encoder it was trained with."""

    def __init__(self, checkpoint: Checkpoint, encoder: Encoder, config: Config) -> None:
        manifest_encoder = checkpoint.manifest["encoder"]
        if encoder.name != manifest_encoder.get("name"):
            raise CheckpointError(
                f"checkpoint was trained on {manifest_encoder.get('name')!r} features, "
                f"not {encoder.name!r}"
            )
        if encoder.feature_dim != manifest_encoder.get("feature_dim"):
            raise CheckpointError(
                f"encoder {encoder.name} gives {encoder.feature_dim}-d features but the "
                f"checkpoint expects {manifest_encoder.get('feature_dim')}-d"
            )
        # Features of other weights (random, another file) are noise to this decoder: it
        # would caption every photo, confidently and wrongly.
        trained_on = manifest_encoder.get("weights_id")
        if trained_on and encoder.weights_id != trained_on:
            raise CheckpointError(
                f"checkpoint was trained on {encoder.name} features from weights {trained_on}, "
                f"but the {encoder.name} weights found here are {encoder.weights_id}; point "
                f"encoder.weights (or {WEIGHTS_DIR_ENV}) at the weights it was trained with"
            )
        self.checkpoint = checkpoint
        self.encoder = encoder
        self.config = config
        self.step_decoder = StepDecoder(checkpoint.model)
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, config: Config | None = None
    ) -> Captioner:
        """Load a checkpoint (default: the config's, else the packaged one) and its encoder.

        The encoder's weights come from ``config.encoder``'s weights settings, except that an
        encoder other than the config's is built with ImageNet weights: a checkpoint always
        names the encoder it was trained on.
        """
        config = config or load_config()
        if path is None:
            from captioner.checkpoint import default_checkpoint_path

            path = config.caption.checkpoint or default_checkpoint_path()
        checkpoint = load_checkpoint(path)
        name = checkpoint.manifest["encoder"].get("name")
        weights = config.encoder.weights if name == config.encoder.name else "imagenet"
        encoder = build_encoder(name, weights=weights, weights_dir=config.encoder.weights_dir)
        logger.info(
            "captioner loaded checkpoint=%s encoder=%s vocab=%d",
            checkpoint.path,
            encoder.name,
            checkpoint.vocabulary.size,
        )
        return cls(checkpoint, encoder, config)

    def warm_up(self) -> None:
        """Run one blank image through encoder and decoder, so the first photo is not slow."""
        height, width = self.encoder.input_size
        blank = np.full((1, height, width, 3), 127.0, dtype=np.float32)
        with self._lock:
            self.decode(self.encoder.encode(blank))

    @property
    def manifest(self) -> dict:
        return self.checkpoint.manifest

    def load(self, source: ImageSource) -> np.ndarray:
        """The encoder input for one image; raises ImageError for what cannot be used."""
        return load_image(
            source,
            size=self.encoder.input_size,
            max_pixels=self.config.images.max_pixels,
            max_bytes=self.config.images.max_file_bytes,
        )

    def decode(self, features: np.ndarray, beam_size: int | None = None) -> list[Caption]:
        """Captions for image features (N, D)."""
        beam_size = beam_size or self.config.caption.beam_size
        ids = beam_search(self.step_decoder, features, self.checkpoint.max_length, beam_size)
        return [Caption.from_words(self.checkpoint.vocabulary.decode(row)) for row in ids]

    def caption(self, source: ImageSource, beam_size: int | None = None) -> Caption:
        """Caption one image; raises ImageError when it cannot be read."""
        (result,) = self.caption_batch([source], beam_size=beam_size)
        if isinstance(result, ImageError):
            raise result
        return result

    def caption_batch(
        self, sources: Sequence[ImageSource], beam_size: int | None = None
    ) -> list[Caption | ImageError]:
        """Caption several images with one encoder batch; bad images come back as errors."""
        results: list[Caption | ImageError | None] = [None] * len(sources)
        images, rows = [], []
        for i, source in enumerate(sources):
            try:
                images.append(self.load(source))
                rows.append(i)
            except ImageError as err:
                results[i] = err
        if images:
            with self._lock:
                features = self.encoder.encode(np.stack(images))  # (n, D)
                captions = self.decode(features, beam_size)
            for i, caption in zip(rows, captions, strict=True):
                results[i] = caption
        return results  # type: ignore[return-value]
