"""BLEU against hand-computed values, special tokens, empty captions, masked metrics, and the
per-image file's name and writing."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.evaluate import (
    bleu_metrics_key,
    captions_file_name,
    corpus_bleu_scores,
    sentence_bleu4,
    strip_special,
    write_captions_file,
)
from training.masked import masked_sums


def words(text: str) -> list[str]:
    return text.split()


# Image A: hypothesis of 5 words, references of 6 and 3 words.
HYP_A = words("a dog runs on grass")
REFS_A = [words("a dog runs on the grass"), words("dog on grass")]
# Image B: hypothesis of 2 words, references of 4 and 2 words.
HYP_B = words("a cat")
REFS_B = [words("a black cat sleeps"), words("the cat")]


def test_corpus_bleu_pools_counts_over_images_as_computed_by_hand():
    # Clipped n-gram matches / hypothesis n-grams, summed over both images. nltk counts a
    # caption too short for an n-gram order as one unmatched n-gram (denominator max(1, n)):
    #   1-grams: A 5/5, B 2/2 -> 7/7
    #   2-grams: A 4/4 ("on grass" is in the 2nd reference), B "a cat" 0/1 -> 4/5
    #   3-grams: A "a dog runs", "dog runs on" match, "runs on grass" not -> 2/3; B 0/1 -> 2/4
    #   4-grams: A "a dog runs on" matches, "dog runs on grass" not -> 1/2; B 0/1 -> 1/3
    # Lengths: c = 5 + 2 = 7; closest references r = 6 + 2 = 8 -> BP = exp(1 - 8/7).
    bp = math.exp(1 - 8 / 7)
    p = [7 / 7, 4 / 5, 2 / 4, 1 / 3]
    expected = {f"bleu{n}": bp * math.prod(p[:n]) ** (1 / n) for n in range(1, 5)}

    scores = corpus_bleu_scores([REFS_A, REFS_B], [HYP_A, HYP_B])
    assert scores == pytest.approx(expected, abs=1e-12)
    assert scores["bleu1"] == pytest.approx(0.866878, abs=1e-6)
    assert scores["bleu4"] == pytest.approx(0.523833, abs=1e-6)


def test_special_tokens_are_stripped_before_scoring():
    noisy = ["<start>", "a", "<unk>", "dog", "runs", "on", "grass", "<end>", "<pad>", "cat"]
    assert strip_special(noisy) == HYP_A
    assert corpus_bleu_scores([REFS_A, REFS_B], [noisy, ["<start>", *HYP_B, "<end>"]]) == (
        corpus_bleu_scores([REFS_A, REFS_B], [HYP_A, HYP_B])
    )


def test_empty_caption_scores_zero_and_counts_against_the_corpus():
    # An empty caption matches nothing and counts as one unmatched n-gram of each order (nltk's
    # max(1, n) denominator); it adds 0 to c and its shortest reference (2 words) to r:
    # c = 5, r = 6 + 2 -> BP = exp(1 - 8/5); precisions 5/6, 4/5, 2/4, 1/3.
    refs_c = [words("a dog"), words("the small dog")]
    scores = corpus_bleu_scores([REFS_A, refs_c], [HYP_A, []])
    bp = math.exp(1 - 8 / 5)
    assert scores["bleu1"] == pytest.approx(bp * 5 / 6, abs=1e-12)
    assert scores["bleu4"] == pytest.approx(bp * (5 / 6 * 4 / 5 * 2 / 4 * 1 / 3) ** 0.25)

    assert corpus_bleu_scores([refs_c], [[]]) == dict.fromkeys(scores, 0.0)
    assert corpus_bleu_scores([refs_c], [["<end>"]]) == dict.fromkeys(scores, 0.0)
    assert corpus_bleu_scores([], []) == dict.fromkeys(scores, 0.0)
    assert sentence_bleu4(refs_c, []) == 0.0
    assert sentence_bleu4(refs_c, ["<unk>", "<end>"]) == 0.0


def test_no_four_gram_match_gives_zero_bleu4_but_full_lower_orders():
    scores = corpus_bleu_scores(
        [[words("a dog runs fast"), words("the dog runs")]], [words("a dog runs")]
    )
    assert scores["bleu1"] == scores["bleu2"] == scores["bleu3"] == pytest.approx(1.0)
    assert scores["bleu4"] == 0.0  # exactly, not nltk's near-smallest float


def test_sentence_bleu_uses_method1_smoothing():
    # 1-, 2-, 3-gram precision 1; no 4-gram at all: method 1 puts epsilon 0.1 over 1.
    refs = [words("a dog runs fast"), words("the dog runs")]
    assert sentence_bleu4(refs, words("a dog runs")) == pytest.approx(0.1**0.25, abs=1e-9)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="1 reference sets for 2 captions"):
        corpus_bleu_scores([REFS_A], [HYP_A, HYP_B])


def test_per_image_file_names_its_smoothing_and_keeps_all_references(tmp_path):
    path = tmp_path / "out" / "test-beam1.csv"
    write_captions_file(path, ["x.jpg", "y.jpg"], [HYP_A, []], [REFS_A, REFS_B])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["image", "caption", "sentence_bleu4_smoothing_method1", "reference1",
                       "reference2"]  # fmt: skip
    assert rows[1][:2] == ["x.jpg", "a dog runs on grass"]
    assert rows[1][3:] == ["a dog runs on the grass", "dog on grass"]
    assert rows[2][:3] == ["y.jpg", "", "0.0000"]


def test_two_writers_of_one_per_image_file_do_not_collide(tmp_path):
    path = tmp_path / "test-beam1.csv"

    def images_writing_again():
        # A second evaluation writes the same file while this one is half way through.
        yield "x.jpg"
        write_captions_file(path, ["y.jpg"], [HYP_B], [REFS_B])
        yield "z.jpg"

    write_captions_file(path, images_writing_again(), [HYP_A, HYP_B], [REFS_A, REFS_B])
    rows = list(csv.reader(path.open()))
    assert [row[0] for row in rows[1:]] == ["x.jpg", "z.jpg"]  # the last to finish wins
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file is left


def test_a_limited_evaluation_has_a_per_image_file_of_its_own():
    checkpoint = Path("runs/squeezenet/checkpoint")
    assert captions_file_name(checkpoint, "test", 1) == "squeezenet-checkpoint-test-beam1.csv"
    assert (
        captions_file_name(checkpoint, "test", 1, limit=5)
        == "squeezenet-checkpoint-test-beam1-first5.csv"
    )


def test_manifest_keys_name_split_and_beam():
    assert bleu_metrics_key("test", 1) == "bleu"
    assert bleu_metrics_key("test", 3) == "bleu_beam3"
    assert bleu_metrics_key("dev", 1) == "bleu_dev"
    assert bleu_metrics_key("dev", 3) == "bleu_dev_beam3"


def test_masked_loss_and_accuracy_count_real_tokens_only():
    probs = np.array(
        [
            [
                [0.1, 0.2, 0.6, 0.1],  # target 2: p = 0.6, argmax right
                [0.5, 0.2, 0.2, 0.1],  # target 3: p = 0.1, argmax wrong
                [0.0, 0.0, 0.0, 1.0],  # padding: ignored whatever it holds
            ]
        ],
        dtype=np.float32,
    )
    targets = np.array([[2, 3, 0]], dtype=np.int32)
    loss_sum, correct, count = (float(x) for x in masked_sums(tf.constant(probs), targets))
    assert count == 2
    assert correct == 1
    assert loss_sum == pytest.approx(-math.log(0.6) - math.log(0.1), rel=1e-6)
