"""Measuring a caption model: corpus BLEU-1..4 and masked next-word loss and accuracy.

BLEU is computed the standard way: every image of a split, its five references cleaned like
training captions (never cut to the vocabulary), special tokens stripped from the model's
captions, uniform n-gram weights, nltk's ``corpus_bleu``. A per-image CSV is written for
inspection, and the metrics are stored in the checkpoint's manifest only when they cover the
whole split, so a partial data root or a ``--limit`` never replaces full figures.
"""

from __future__ import annotations

import csv
import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from nltk.translate.bleu_score import (
    SmoothingFunction,
    corpus_bleu,
    modified_precision,
    sentence_bleu,
)

from captioner.atomic import atomic_path
from captioner.checkpoint import load_checkpoint, update_manifest_metrics
from captioner.config import Config
from captioner.decoding import StepDecoder, beam_search, greedy
from captioner.errors import CaptionbotError
from captioner.vocabulary import SPECIAL_TOKENS, Vocabulary
from training.batches import CaptionSet, batch_order, encode_captions, iterate_batches
from training.cleaning import clean_caption
from training.features import (
    default_cache_dir,
    ensure_cache_dir,
    ensure_folder,
    features_for,
)
from training.flickr8k import DatasetPaths, SplitData, load_splits
from training.masked import masked_sums

logger = logging.getLogger(__name__)

BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    "bleu1": (1.0, 0.0, 0.0, 0.0),
    "bleu2": (0.5, 0.5, 0.0, 0.0),
    "bleu3": (1 / 3, 1 / 3, 1 / 3, 0.0),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}

# Sentence-level BLEU (per-image file only) needs smoothing: most single captions share no
# 4-gram with their references. Chen and Cherry's method 1 adds epsilon=0.1 to zero counts.
SENTENCE_SMOOTHING = "nltk method1 (epsilon 0.1 added to zero n-gram counts)"
_SMOOTHING = SmoothingFunction().method1

DECODE_BATCH = 256


class EvaluationError(CaptionbotError):
    """An evaluation that cannot be run as asked; the message says what to change."""


def strip_special(words: Sequence[str]) -> list[str]:
    """Words of a generated caption without special tokens, stopping at ``<end>``."""
    kept = []
    for word in words:
        if word == SPECIAL_TOKENS[3]:
            break
        if word not in SPECIAL_TOKENS:
            kept.append(word)
    return kept


def corpus_bleu_scores(
    references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Corpus BLEU-1..4 of tokenised captions, special tokens stripped.

    Args:
        references: per image, its reference captions as word lists.
        hypotheses: per image, the generated caption as a word list (may be empty).

    Returns:
        ``{"bleu1": .., "bleu2": .., "bleu3": .., "bleu4": ..}`` in 0..1. BLEU-N is exactly 0
        when some order up to N has no match at all (nltk would return a number near the
        smallest float there), and all are 0 for no images or when every caption is empty.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference sets for {len(hypotheses)} captions")
    hypotheses = [strip_special(h) for h in hypotheses]
    if not hypotheses or not any(hypotheses):
        return dict.fromkeys(BLEU_WEIGHTS, 0.0)
    references = [[list(r) for r in refs] for refs in references]
    pairs = list(zip(references, hypotheses, strict=True))
    matched = [
        any(modified_precision(refs, hyp, n).numerator for refs, hyp in pairs) for n in range(1, 5)
    ]
    scores = {}
    with warnings.catch_warnings():
        # nltk warns when an n-gram order never matches; such scores are set to 0 below.
        warnings.simplefilter("ignore", UserWarning)
        for order, (name, weights) in enumerate(BLEU_WEIGHTS.items(), start=1):
            if not all(matched[:order]):
                scores[name] = 0.0
            else:
                scores[name] = float(corpus_bleu(references, hypotheses, weights=weights))
    return scores


def sentence_bleu4(references: Sequence[Sequence[str]], hypothesis: Sequence[str]) -> float:
    """Smoothed sentence BLEU-4 (see ``SENTENCE_SMOOTHING``); 0.0 for an empty caption."""
    hypothesis = strip_special(hypothesis)
    if not hypothesis:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(
            sentence_bleu(
                [list(r) for r in references],
                hypothesis,
                weights=BLEU_WEIGHTS["bleu4"],
                smoothing_function=_SMOOTHING,
            )
        )


def generate_captions(
    model, features: np.ndarray, max_length: int, beam_size: int = 1
) -> list[list[int]]:
    """Word ids of the caption of each feature row, greedy (beam 1) or beam search.

    Args:
        model: the decoder (``captioner.decoder.build_decoder``).
        features: (N, D) image features.
        max_length: most words per caption.
        beam_size: 1 for greedy.
    """
    step_decoder = StepDecoder(model)
    captions: list[list[int]] = []
    for start in range(0, len(features), DECODE_BATCH):
        chunk = np.asarray(features[start : start + DECODE_BATCH], dtype=np.float32)  # (n, D)
        if beam_size <= 1:
            captions.extend(greedy(step_decoder, chunk, max_length))
        else:
            captions.extend(beam_search(step_decoder, chunk, max_length, beam_size))
    return captions


def bleu_for_split(
    model,
    vocabulary: Vocabulary,
    split: SplitData,
    images: Sequence[str],
    features: np.ndarray,
    max_length: int,
    beam_size: int = 1,
    captions_file: Path | None = None,
) -> dict[str, Any]:
    """Caption ``images`` of ``split`` and score them against all their references.

    Args:
        model: the decoder.
        vocabulary: the checkpoint's vocabulary (to turn ids into words).
        split: the split, for its raw reference captions.
        images: the images to score (those with features), in the row order of ``features``.
        features: (len(images), D) their features.
        max_length: most words per caption.
        beam_size: 1 for greedy.
        captions_file: where to write the per-image CSV; None to skip it.

    Returns:
        ``{"split", "images", "beam", "bleu1".."bleu4"}``.
    """
    started = time.perf_counter()
    ids = generate_captions(model, features, max_length, beam_size)
    hypotheses = [strip_special(vocabulary.decode(caption)) for caption in ids]
    references = [[clean_caption(c) for c in split.captions[image]] for image in images]
    scores = corpus_bleu_scores(references, hypotheses)
    if captions_file is not None:
        write_captions_file(captions_file, images, hypotheses, references)
    logger.info(
        "bleu split=%s images=%d beam=%d bleu1=%.4f bleu4=%.4f seconds=%.1f",
        split.name,
        len(images),
        beam_size,
        scores["bleu1"],
        scores["bleu4"],
        time.perf_counter() - started,
    )
    return {"split": split.name, "images": len(images), "beam": beam_size, **scores}


def write_captions_file(
    path: Path,
    images: Sequence[str],
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
) -> None:
    """Per-image CSV: image, caption, smoothed sentence BLEU-4, then each reference.

    The file is replaced atomically through a uniquely named temporary file, so two
    evaluations writing the same file never trip over each other's half-written copy.

    Raises:
        EvaluationError: the folder cannot be created or the file cannot be written.
    """
    path = Path(path)
    ensure_evaluation_dir(path.parent)
    most = max((len(refs) for refs in references), default=0)
    try:
        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            header = ["image", "caption", "sentence_bleu4_smoothing_method1"]
            writer.writerow(header + [f"reference{i + 1}" for i in range(most)])
            for image, hypothesis, refs in zip(images, hypotheses, references, strict=True):
                score = sentence_bleu4(refs, hypothesis)
                writer.writerow(
                    [image, " ".join(hypothesis), f"{score:.4f}"] + [" ".join(r) for r in refs]
                )
    except OSError as err:
        raise EvaluationError(
            f"cannot write the per-image file {path}: {err.strerror or err}"
        ) from None


def ensure_evaluation_dir(folder: Path) -> Path:
    """Create the folder of the per-image files, or an EvaluationError saying where.

    It is checked before any image is captioned, so a folder that cannot be made costs
    no decoding time.
    """
    return ensure_folder(folder, "evaluation folder", EvaluationError)


class NextWordScorer:
    """Masked next-word loss and accuracy of one model under teacher forcing.

    The evaluation step is traced once, on the first call, for every batch shape.
    """

    def __init__(self, model) -> None:
        self.model = model
        signature = [
            tf.TensorSpec((None, None), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None), tf.int32),
        ]
        self._step = tf.function(self._batch_sums, input_signature=signature)

    def _batch_sums(self, features, inputs, targets):
        probs = self.model([features, inputs], training=False)  # (B, T, V)
        return masked_sums(probs, targets)

    def __call__(self, captions: CaptionSet, batch_size: int = 256) -> dict[str, float]:
        """``{"loss": mean cross-entropy per real token, "accuracy": fraction of real tokens
        predicted, "tokens": real token count}``."""
        loss_sum = correct = count = 0.0
        order = batch_order(captions.lengths, batch_size, None)
        for features, inputs, targets in iterate_batches(captions, order):
            batch_loss, batch_correct, batch_count = self._step(features, inputs, targets)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            count += float(batch_count)
        if count == 0:
            return {"loss": float("nan"), "accuracy": float("nan"), "tokens": 0}
        return {"loss": loss_sum / count, "accuracy": correct / count, "tokens": int(count)}


def next_word_metrics(model, captions: CaptionSet, batch_size: int = 256) -> dict[str, float]:
    """Masked next-word loss and accuracy of ``captions`` (see ``NextWordScorer``)."""
    return NextWordScorer(model)(captions, batch_size)


def bleu_metrics_key(split: str, beam_size: int) -> str:
    """Manifest key of a BLEU result: "bleu" for greedy on test, else e.g. "bleu_beam3",
    "bleu_dev", "bleu_dev_beam3"."""
    key = "bleu"
    if split != "test":
        key += f"_{split}"
    if beam_size > 1:
        key += f"_beam{beam_size}"
    return key


def manifest_bleu(result: dict[str, Any]) -> dict[str, Any]:
    """A ``bleu_for_split`` result in the manifest's form (``beam_size``, not ``beam``)."""
    entry = {key: value for key, value in result.items() if key != "beam"}
    entry["beam_size"] = result["beam"]
    return entry


def captions_file_name(
    checkpoint_path: Path, split: str, beam_size: int, limit: int | None = None
) -> str:
    """File name of a checkpoint's per-image CSV, e.g. "squeezenet-checkpoint-test-beam3.csv",
    or "squeezenet-checkpoint-test-beam3-first5.csv" for the first 5 images only.

    The name of the checkpoint's parent folder comes first: every trained checkpoint is a
    folder named "checkpoint" inside its run dir, so its own name alone would collide. A
    limit is part of the name so that a quick check never replaces the whole split's file.
    """
    path = Path(checkpoint_path)
    stem = "-".join(part for part in (path.parent.name, path.name) if part)
    first = f"-first{limit}" if limit is not None else ""
    return f"{stem}-{split}-beam{beam_size}{first}.csv"


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    config: Config,
    split: str = "test",
    beam_size: int = 1,
    *,
    limit: int | None = None,
    cache_dir: Path | None = None,
    captions_dir: Path | None = None,
    update_manifest: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """BLEU-1..4 and masked next-word loss and accuracy of a checkpoint on a split.

    Features come from the cache of the checkpoint's encoder and weights (extracted when
    missing). The per-image CSV is written to ``captions_dir`` (default: ``evaluation/``
    beside the configured run dir). The metrics are merged into the checkpoint's manifest
    only when they describe the whole split: not with a limit, and not when an image of the
    split is missing on disk or unreadable (a warning then says why).

    Args:
        checkpoint_path: checkpoint directory.
        config: settings (dataset paths, encoder weights, run dir).
        split: split name of ``config.data.splits``.
        beam_size: 1 for greedy.
        limit: score only the first N images of the split (quick checks; the manifest is
            then left alone, since such figures are not comparable).
        cache_dir: feature cache folder (default: ``features/`` beside the run dir).
        captions_dir: folder for the per-image CSV.
        update_manifest: store the metrics in the manifest (when they cover the split).
        progress: progress bar while extracting features.

    Returns:
        ``{"split", "images", "beam", "bleu1".."bleu4", "loss", "accuracy",
        "images_missing", "manifest_updated", "captions_file", "checkpoint"}``;
        ``images_missing`` counts the split's images left out (absent or unreadable), and a
        figure that cannot be measured is None, never NaN (which is not JSON).

    Raises:
        EvaluationError: a limit or beam size below 1, a split without usable images, or an
            evaluation folder that cannot be created or written.
        FeatureError: the feature cache folder cannot be created or written.
        CheckpointError, DatasetError: the checkpoint or the dataset cannot be read.
    """
    if limit is not None and limit < 1:
        raise EvaluationError(f"--limit must be at least 1 image, not {limit}")
    if beam_size < 1:
        raise EvaluationError(f"--beam must be at least 1 (1 is greedy), not {beam_size}")
    checkpoint = load_checkpoint(checkpoint_path)
    manifest = checkpoint.manifest
    data = load_splits(DatasetPaths.from_config(config.data), [split], limit_images=limit)[split]

    # Both folders are made before the encoder runs, so one that cannot be made costs nothing.
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(config)
    if captions_dir is None:
        captions_dir = Path(config.training.run_dir).parent / "evaluation"
    ensure_cache_dir(cache_dir)
    ensure_evaluation_dir(captions_dir)

    store = features_for(
        {image: data.image_path(image) for image in data.images},
        config,
        manifest["encoder"]["name"],
        cache_dir,
        weights_id=manifest["encoder"].get("weights_id"),
        progress=progress,
    )
    images = store.usable(data.images)
    unreadable = len(data.images) - len(images)
    if unreadable:
        logger.warning("images skipped split=%s reason=unreadable count=%d", split, unreadable)
    if not images:
        # Scoring nothing would replace the per-image file of an earlier evaluation with an
        # empty one.
        raise EvaluationError(f"split '{split}' has no usable images (see the warnings above)")
    features = store.get(images)  # (N, D)

    captions_file = Path(captions_dir) / captions_file_name(
        checkpoint.path, split, beam_size, limit
    )
    result = bleu_for_split(
        checkpoint.model,
        checkpoint.vocabulary,
        data,
        images,
        features,
        checkpoint.max_length,
        beam_size,
        captions_file=captions_file,
    )
    captions = encode_captions(
        data.captions, images, features, checkpoint.vocabulary, checkpoint.max_length
    )
    next_word = {
        k: _finite_or_none(v) for k, v in next_word_metrics(checkpoint.model, captions).items()
    }
    result.update(loss=next_word["loss"], accuracy=next_word["accuracy"])

    # With a limit, images beyond it are left out on purpose; only those absent or unreadable
    # among the images asked for make the figures partial. Without one, every absent image of
    # the split counts.
    missing = unreadable if limit is not None else len(data.missing) + unreadable
    result["images_missing"] = missing
    stored = update_manifest and limit is None and missing == 0
    if stored:
        update_manifest_metrics(
            checkpoint.path,
            {
                bleu_metrics_key(split, beam_size): manifest_bleu(
                    {k: result[k] for k in ("split", "images", "beam", *BLEU_WEIGHTS)}
                ),
                f"{split}_loss": next_word["loss"],
                f"{split}_accuracy": next_word["accuracy"],
            },
        )
    elif update_manifest and limit is not None:
        logger.info("manifest not updated reason=limit limit=%d", limit)
    elif update_manifest:
        logger.warning(
            "manifest not updated reason=images_missing missing=%d split=%s checkpoint=%s",
            missing,
            split,
            checkpoint.path,
        )
    result.update(
        manifest_updated=stored, captions_file=str(captions_file), checkpoint=str(checkpoint.path)
    )
    return result
