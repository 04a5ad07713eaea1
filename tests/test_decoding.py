"""Greedy decoding with a carried LSTM state matches re-running the whole prefix."""

import itertools

import keras
import numpy as np
import pytest

from captioner.decoder import build_decoder
from captioner.decoding import (
    LENGTH_PENALTY,
    StepDecoder,
    beam_search,
    greedy,
    greedy_full_prefix,
)
from captioner.vocabulary import END, PAD, START, UNK

VOCAB, FEATURES = 40, 24


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return build_decoder(VOCAB, FEATURES, embedding_dim=16, units=16, dropout=0.5)


def _features(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)


def test_step_decoder_matches_keras_probabilities(model):
    features = _features(3)
    tokens = np.array([[START, 5, 9, 7], [START, 4, 4, 4], [START, 30, 1, 6]], dtype=np.int32)
    expected = np.asarray(model([features, tokens], training=False))  # (3, 4, V)

    step = StepDecoder(model)
    image, state = step.start(features)
    for t in range(tokens.shape[1]):
        logits, state = step.step(image, tokens[:, t], state)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(probs, expected[:, t], rtol=1e-4, atol=1e-6)


def test_greedy_equals_full_prefix_recompute(model):
    features = _features(8, seed=1)
    fast = greedy(StepDecoder(model), features, max_length=10)
    slow = greedy_full_prefix(model, features, max_length=10)
    assert fast == slow
    assert all(START not in c and END not in c for c in fast)


def test_untrained_model_that_never_ends_stops_at_max_length(model):
    # Make END impossible: a huge negative bias on its output unit.
    step = StepDecoder(model)
    step.out_bias = step.out_bias.copy()
    step.out_bias[END] = -1e9
    captions = greedy(step, _features(4, seed=2), max_length=7)
    assert [len(c) for c in captions] == [7, 7, 7, 7]
    beams = beam_search(step, _features(2, seed=2), max_length=7, beam_size=3)
    assert [len(c) for c in beams] == [7, 7]


def test_model_that_ends_at_once_gives_empty_greedy_and_one_word_beam(model):
    step = StepDecoder(model)
    step.out_bias = step.out_bias.copy()
    step.out_bias[END] = 1e9
    assert greedy(step, _features(2), max_length=7) == [[], []]
    beams = beam_search(step, _features(2), max_length=7, beam_size=3)
    assert [len(c) for c in beams] == [1, 1]  # a beam caption has at least one word


def test_special_tokens_are_never_emitted(model):
    step = StepDecoder(model)
    step.out_bias = step.out_bias.copy()
    step.out_bias[[PAD, UNK, START]] = 1e6  # the model "wants" them above all else
    features = _features(4, seed=6)
    for captions in (
        greedy(step, features, 6),
        beam_search(step, features, 6, beam_size=3),
    ):
        assert all(not {PAD, UNK, START} & set(c) for c in captions)


def _allowed(words, word):
    # The decoding rule, restated: no word twice in a row, no word pair twice.
    if words and word == words[-1]:
        return False
    return not any(words[i] == words[-1] and words[i + 1] == word for i in range(len(words) - 1))


def _sequence_log_prob(step, features, words, ended=True):
    image, state = step.start(features[None, :])
    tokens, total, history = np.array([START]), 0.0, []
    for word in [*words, END] if ended else words:
        logits, state = step.step(image, tokens, state)
        logits = logits[0].copy()
        logits[[PAD, UNK, START]] = -np.inf
        for banned in range(len(logits)):
            if banned != END and not _allowed(history, banned):
                logits[banned] = -np.inf
        if not history:
            logits[END] = -np.inf  # a beam caption has at least one word
        shifted = logits - logits.max()
        total += float(shifted[word] - np.log(np.exp(shifted).sum()))
        tokens = np.array([word])
        history.append(word)
    return total


def _has_repeats(words):
    return any(not _allowed(words[:i], w) for i, w in enumerate(words))


def test_full_width_beam_finds_the_best_normalised_caption():
    # A vocabulary of 3 words and captions of at most 3 words (a caption of 3 ends there,
    # without END): few enough to score every allowed one and check that a beam as wide as
    # the search space finds the best.
    keras.utils.set_random_seed(11)
    tiny = build_decoder(7, FEATURES, embedding_dim=8, units=8, dropout=0.0)
    step = StepDecoder(tiny)
    words = [4, 5, 6]
    candidates = [(list(c), True) for n in (1, 2) for c in itertools.product(words, repeat=n)]
    candidates += [(list(c), False) for c in itertools.product(words, repeat=3)]
    candidates = [c for c in candidates if not _has_repeats(c[0])]
    for row, features in enumerate(_features(3, seed=7)):
        best = max(
            candidates,
            key=lambda c: (
                _sequence_log_prob(step, features, c[0], c[1])
                / (len(c[0]) + int(c[1])) ** LENGTH_PENALTY
            ),
        )
        (found,) = beam_search(step, features[None, :], max_length=3, beam_size=27)
        assert found == best[0], f"row {row}"


def test_decoding_never_repeats_a_word_or_a_word_pair(model):
    step = StepDecoder(model)
    step.out_bias = step.out_bias.copy()
    step.out_bias[[7, 8]] = 50.0  # two words the model would otherwise say forever
    step.out_bias[END] = -1e9
    features = _features(3, seed=8)
    for captions in (greedy(step, features, 8), beam_search(step, features, 8, beam_size=3)):
        for caption in captions:
            assert len(caption) == 8 and not _has_repeats(caption), caption
            assert caption[:2] in ([7, 8], [8, 7])


def test_beam_size_one_is_greedy(model):
    step = StepDecoder(model)
    features = _features(5, seed=5)
    assert beam_search(step, features, 9, beam_size=1) == greedy(step, features, 9)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_diverged_model_gives_no_caption_rather_than_an_error(model, beam_size):
    # Training with a bad learning rate can leave NaN weights: every logit is NaN.
    step = StepDecoder(model)
    step.out_bias = np.full_like(step.out_bias, np.nan)

    captions = beam_search(step, _features(2, seed=4), max_length=6, beam_size=beam_size)

    assert captions == [[], []]
