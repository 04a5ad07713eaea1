"""Captions as token arrays, grouped into length-bucketed teacher-forcing batches.

Each caption becomes decoder inputs ``[START] + words`` and targets ``words + [END]``; a
batch is padded only to its own longest caption, and captions of similar length are batched
together so little of each batch is padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from captioner.vocabulary import END, PAD, START, Vocabulary
from training.cleaning import clean_caption

# Batches are formed inside pools of this many batches: sorted by length within a pool,
# shuffled between pools, which keeps most of the randomness and little of the padding.
POOL_BATCHES = 64


@dataclass
class CaptionSet:
    """The captions of one split, tokenised, with the features of their images.

    Attributes:
        images: image names; ``image_rows`` index into this list and into ``features``.
        features: (len(images), D) float32 image features.
        image_rows: (M,) int, the image of each caption.
        tokens: M arrays of word ids (no START/END), each at most ``max_length`` long.
    """

    images: list[str]
    features: np.ndarray
    image_rows: np.ndarray
    tokens: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def lengths(self) -> np.ndarray:
        """(M,) number of decoder steps of each caption: words plus END."""
        return np.fromiter((len(t) + 1 for t in self.tokens), dtype=np.int64, count=len(self))

    @property
    def real_tokens(self) -> int:
        """Targets that count in loss and accuracy (words and END, no padding)."""
        return int(self.lengths.sum())


def max_caption_length(captions: Sequence[Sequence[str]], cap: int) -> int:
    """Longest caption in words, but no more than ``cap``."""
    longest = max((len(words) for words in captions), default=0)
    return max(1, min(longest, cap))


def encode_captions(
    captions: dict[str, list[str]],
    images: Sequence[str],
    features: np.ndarray,
    vocabulary: Vocabulary,
    max_length: int,
) -> CaptionSet:
    """Clean and encode the raw captions of ``images``.

    Captions longer than ``max_length`` words are cut there (END still follows); captions
    that clean to no word at all are dropped.

    Args:
        captions: image name -> raw captions.
        images: the images to use, in the row order of ``features``.
        features: (len(images), D) features of ``images``.
        vocabulary: word ids; unknown words become UNK.
        max_length: most words per caption.
    """
    # Limitation: a caption cut at max_length still ends with END, teaching the model to stop
    # mid-sentence there; with max_length taken from the training captions only the cap cuts.
    rows, tokens = [], []
    for row, image in enumerate(images):
        for raw in captions[image]:
            words = clean_caption(raw)
            if not words:
                continue
            rows.append(row)
            tokens.append(np.asarray(vocabulary.encode(words[:max_length]), dtype=np.int32))
    return CaptionSet(
        images=list(images),
        features=np.asarray(features, dtype=np.float32),
        image_rows=np.asarray(rows, dtype=np.int64),
        tokens=tokens,
    )


def batch_order(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None
) -> list[np.ndarray]:
    """Caption indices grouped into batches of similar length.

    With ``rng``: captions are shuffled, cut into pools of ``POOL_BATCHES`` batches, sorted
    by length inside each pool (stable, so ties stay shuffled), cut into batches, and the
    batches shuffled. Without ``rng`` (evaluation): sorted by length, no shuffling.
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    order = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        members = order[start : start + pool]
        members = members[np.argsort(lengths[members], kind="stable")]
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def make_batch(
    captions: CaptionSet, indices: np.ndarray, min_steps: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, decoder inputs and targets of some captions, padded to the longest one.

    ``min_steps`` pads to at least that many steps (only to compare with fixed padding).

    Returns:
        features (B, D) float32, inputs (B, T) int32 ``[START] + words``, targets (B, T)
        int32 ``words + [END]``, where T is the longest caption's words plus one and the
        rest is PAD.
    """
    steps = max(max(len(captions.tokens[i]) for i in indices) + 1, min_steps)
    inputs = np.full((len(indices), steps), PAD, dtype=np.int32)  # (B, T)
    targets = np.full((len(indices), steps), PAD, dtype=np.int32)  # (B, T)
    for row, i in enumerate(indices):
        words = captions.tokens[i]
        inputs[row, 0] = START
        inputs[row, 1 : len(words) + 1] = words
        targets[row, : len(words)] = words
        targets[row, len(words)] = END
    features = captions.features[captions.image_rows[indices]]  # (B, D)
    return features, inputs, targets


def iterate_batches(
    captions: CaptionSet, batches: list[np.ndarray], min_steps: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``make_batch`` over a list of index batches."""
    for indices in batches:
        yield make_batch(captions, indices, min_steps)
