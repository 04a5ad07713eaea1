"""Flickr8k loading, caption cleaning, vocabulary limits and teacher-forcing batches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import FLICKR8K, needs_shared

from captioner.vocabulary import END, PAD, START, UNK, Vocabulary
from training.batches import (
    POOL_BATCHES,
    batch_order,
    encode_captions,
    make_batch,
    max_caption_length,
)
from training.cleaning import clean_caption
from training.flickr8k import DatasetError, DatasetPaths, load_splits, read_captions


def test_cleaning_lowercases_drops_punctuation_and_non_alphabetic_tokens():
    assert clean_caption("A black dog, running on the grass .") == [
        "a", "black", "dog", "running", "on", "the", "grass",
    ]  # fmt: skip
    assert clean_caption("Two dogs play ; 3 balls in 1990s !") == [
        "two", "dogs", "play", "balls", "in",
    ]  # fmt: skip
    assert clean_caption("A tri-colored dog's toy") == ["a", "tricolored", "dogs", "toy"]
    assert clean_caption("I see a cat") == ["i", "see", "a", "cat"]  # one-letter words stay
    assert clean_caption(" . 42 !") == []


def _write_layout(root: Path, *, with_test_split: bool = True) -> DatasetPaths:
    """A tiny Flickr8k-shaped dataset with the real file's quirks."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "outside.jpg"):
        Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "images" / name)
    lines = [
        "a.jpg#0\tA dog runs .",
        "a.jpg#1\tA brown dog runs on grass .",
        "b.jpg#0\tTwo children play .",
        "b.jpg.1#0\tmalformed id line",
        "c.jpg#0\tA man rides a bike .",
        "d.jpg#0\tA girl jumps .",
        "gone.jpg#0\tThis image is not on disk .",
        "outside.jpg#0\tThis image is in no split .",
        "nobreak line without a tab",
    ]
    (root / "tokens.txt").write_text("\n".join(lines) + "\n")
    (root / "train.txt").write_text("a.jpg\nb.jpg\ngone.jpg\nuncaptioned.jpg\n")
    (root / "dev.txt").write_text("c.jpg\n")
    if with_test_split:
        (root / "test.txt").write_text("d.jpg\n")
    return DatasetPaths(
        token_file=root / "tokens.txt",
        images_dir=root / "images",
        splits={name: root / f"{name}.txt" for name in ("train", "dev", "test")},
    )


def test_loading_skips_malformed_ids_missing_images_and_ids_outside_splits(tmp_path, caplog):
    paths = _write_layout(tmp_path)
    with caplog.at_level(logging.WARNING, logger="training.flickr8k"):
        splits = load_splits(paths)

    train = splits["train"]
    assert train.images == ["a.jpg", "b.jpg"]
    assert train.captions["a.jpg"] == ["A dog runs .", "A brown dog runs on grass ."]
    assert train.captions["b.jpg"] == ["Two children play ."]  # the "b.jpg.1" line is not b's
    assert train.missing == ["gone.jpg"]
    assert train.uncaptioned == ["uncaptioned.jpg"]
    assert splits["dev"].images == ["c.jpg"] and splits["test"].images == ["d.jpg"]
    assert all("outside.jpg" not in split.captions for split in splits.values())

    warnings = caplog.text
    assert "image=gone.jpg" in warnings and "reason=missing_file" in warnings
    assert "malformed_id count=2" in warnings and "b.jpg.1#0" in warnings


def test_missing_split_file_is_a_clear_error(tmp_path):
    paths = _write_layout(tmp_path, with_test_split=False)
    with pytest.raises(DatasetError, match=r"split file not found \(split 'test'\).*test\.txt"):
        load_splits(paths)
    assert load_splits(paths, ["train", "dev"])["dev"].images == ["c.jpg"]
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_splits(paths, ["val"])


def test_missing_token_file_and_image_folder_are_clear_errors(tmp_path):
    paths = _write_layout(tmp_path)
    with pytest.raises(DatasetError, match="caption token file not found"):
        read_captions(tmp_path / "nope.txt")
    moved = DatasetPaths(paths.token_file, tmp_path / "no-images", paths.splits)
    with pytest.raises(DatasetError, match="image folder not found"):
        load_splits(moved)


def test_a_split_or_token_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    paths = _write_layout(tmp_path)
    paths.splits["test"].write_bytes(b"\xff\xfed\x00.\x00j\x00p\x00g\x00\n\x00")  # UTF-16
    with pytest.raises(DatasetError) as raised:
        load_splits(paths)
    assert str(raised.value) == (
        f"split file (split 'test') {paths.splits['test']} is not UTF-8 text (byte 0 cannot "
        f"be decoded); save it as UTF-8"
    )

    paths = _write_layout(tmp_path / "latin1")
    paths.token_file.write_bytes("a.jpg#0\tA caf\u00e9 by the sea .\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=f"caption token file {paths.token_file} is not UTF-8"):
        load_splits(paths)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_split_file_is_named_as_listing_no_images(tmp_path, content):
    paths = _write_layout(tmp_path)
    paths.splits["dev"].write_text(content)
    with pytest.raises(DatasetError) as raised:
        load_splits(paths, ["dev"])
    assert str(raised.value) == (
        f"split file (split 'dev') {paths.splits['dev']} lists no images; put one image name "
        f"a line"
    )


@pytest.mark.parametrize("limit", [0, -1])
def test_an_image_limit_below_one_is_refused(tmp_path, limit):
    paths = _write_layout(tmp_path)
    with pytest.raises(DatasetError, match=f"image limit must be at least 1, not {limit}"):
        load_splits(paths, limit_images=limit)
    assert load_splits(paths, limit_images=1)["train"].images == ["a.jpg"]


@needs_shared(FLICKR8K)
def test_real_token_file_has_one_malformed_id_and_full_splits(config):
    paths = DatasetPaths.from_config(config.data)
    captions = read_captions(paths.token_file)
    assert len(captions) == 8092
    assert "2258277193_586949ec62.jpg.1" not in captions
    assert len(captions["2258277193_586949ec62.jpg"]) == 4
    splits = load_splits(paths, limit_images=5)
    assert [len(s.images) for s in splits.values()] == [5, 5, 5]
    assert all(len(c) == 5 for s in splits.values() for c in s.captions.values())


def test_vocabulary_limit_turns_rare_words_to_unk_and_length_cap_cuts():
    captions = {
        "x.jpg": ["A dog runs .", "A dog jumps high ."],
        "y.jpg": ["A cat sleeps on a very long sofa today ."],
    }
    words = [clean_caption(c) for caps in captions.values() for c in caps]
    vocabulary = Vocabulary.build(words, max_words=2)
    assert vocabulary.words[4:] == ["a", "dog"]  # 4 x "a", 2 x "dog"; ties alphabetical
    assert max_caption_length(words, cap=40) == 9
    assert max_caption_length(words, cap=5) == 5

    features = np.zeros((2, 3), dtype=np.float32)
    encoded = encode_captions(captions, ["x.jpg", "y.jpg"], features, vocabulary, max_length=5)
    a, dog = vocabulary.encode(["a", "dog"])
    assert encoded.tokens[0].tolist() == [a, dog, UNK]
    assert encoded.tokens[2].tolist() == [a, UNK, UNK, UNK, a]  # cut at 5 words
    assert encoded.image_rows.tolist() == [0, 0, 1]
    assert encoded.lengths.tolist() == [4, 5, 6]


def test_batches_shift_tokens_and_pad_only_to_their_longest_caption():
    vocabulary = Vocabulary.build([["a", "dog", "runs", "fast"]], max_words=10)
    captions = {"x.jpg": ["A dog runs fast .", "A dog ."], "y.jpg": ["Dog runs ."]}
    features = np.arange(6, dtype=np.float32).reshape(2, 3)
    encoded = encode_captions(captions, ["x.jpg", "y.jpg"], features, vocabulary, 10)

    batch_features, inputs, targets = make_batch(encoded, np.array([1, 2]))
    a, dog, runs = vocabulary.encode(["a", "dog", "runs"])
    assert inputs.tolist() == [[START, a, dog], [START, dog, runs]]
    assert targets.tolist() == [[a, dog, END], [dog, runs, END]]
    assert batch_features.tolist() == [[0, 1, 2], [3, 4, 5]]

    _, inputs, targets = make_batch(encoded, np.array([0, 1]))
    assert inputs.shape == (2, 5)  # "a dog runs fast" + END
    assert targets[1].tolist() == [a, dog, END, PAD, PAD]
    assert inputs[1].tolist() == [START, a, dog, PAD, PAD]


def test_batch_order_covers_every_caption_once_is_seeded_and_groups_lengths():
    rng = np.random.default_rng(7)
    lengths = rng.integers(2, 30, size=5000)
    batches = batch_order(lengths, 16, np.random.default_rng([1, 1]))
    again = batch_order(lengths, 16, np.random.default_rng([1, 1]))
    other_epoch = batch_order(lengths, 16, np.random.default_rng([1, 2]))

    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(batches, other_epoch, strict=True))

    padded = sum(lengths[b].max() * len(b) for b in batches)
    assert POOL_BATCHES * 16 < 5000
    assert padded < 1.1 * lengths.sum()  # random batches of 16 would pad about 1.7x
