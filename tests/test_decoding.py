"""Greedy decoding with a carried LSTM state matches re-running the whole prefix."""

import keras
import numpy as np
import pytest

from captioner.decoder import build_decoder
from captioner.decoding import StepDecoder, beam_search, greedy, greedy_full_prefix
from captioner.vocabulary import END, START

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


def test_model_that_ends_at_once_gives_empty_caption(model):
    step = StepDecoder(model)
    step.out_bias = step.out_bias.copy()
    step.out_bias[END] = 1e9
    assert greedy(step, _features(2), max_length=7) == [[], []]
    assert beam_search(step, _features(2), max_length=7, beam_size=3) == [[], []]


def _sequence_log_prob(step, features, words):
    image, state = step.start(features[None, :])
    tokens, total = np.array([START]), 0.0
    for word in [*words, END]:
        logits, state = step.step(image, tokens, state)
        shifted = logits[0] - logits[0].max()
        total += float(shifted[word] - np.log(np.exp(shifted).sum()))
        tokens = np.array([word])
    return total


def test_beam_search_never_scores_below_greedy(model):
    step = StepDecoder(model)
    features = _features(6, seed=4)
    greedy_ids = greedy(step, features, max_length=8)
    beam_ids = beam_search(step, features, max_length=8, beam_size=4)
    for row, (g, b) in enumerate(zip(greedy_ids, beam_ids, strict=True)):
        ended = len(g) < 8 and len(b) < 8
        if ended:
            assert _sequence_log_prob(step, features[row], b) >= (
                _sequence_log_prob(step, features[row], g) - 1e-6
            )


def test_beam_size_one_is_greedy(model):
    step = StepDecoder(model)
    features = _features(5, seed=5)
    assert beam_search(step, features, 9, beam_size=1) == greedy(step, features, 9)
