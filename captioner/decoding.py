"""Greedy and beam decoding of captions from image features.

Decoding runs the trained decoder's weights one word at a time in NumPy, carrying the LSTM
state from step to step, so each step costs one small matrix product instead of a re-run of
the whole prefix through Keras. ``greedy_full_prefix`` is the slow reference that re-runs the
Keras model on the whole prefix; the tests hold the two to the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from captioner import decoder as layers_
from captioner.vocabulary import END, PAD, START, UNK


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # stable for large |x|


@dataclass
class LSTMState:
    h: np.ndarray  # (rows, units)
    c: np.ndarray  # (rows, units)

    def take(self, rows: np.ndarray) -> LSTMState:
        return LSTMState(self.h[rows], self.c[rows])


class StepDecoder:
    """The decoder's inference path as NumPy arrays: one word a step, state carried."""

    def __init__(self, model: keras.Model) -> None:
        def weights(name: str) -> list[np.ndarray]:
            return [np.asarray(w, dtype=np.float32) for w in model.get_layer(name).get_weights()]

        self.image_kernel, self.image_bias = weights(layers_.IMAGE_DENSE)
        (self.embedding,) = weights(layers_.EMBEDDING)
        self.lstm_kernel, self.lstm_recurrent, self.lstm_bias = weights(layers_.LSTM)
        self.merge_kernel, self.merge_bias = weights(layers_.MERGE_DENSE)
        self.out_kernel, self.out_bias = weights(layers_.OUTPUT)
        self.units = self.lstm_recurrent.shape[0]
        self.vocab_size = self.embedding.shape[0]
        self.feature_dim = self.image_kernel.shape[0]

    def start(self, features: np.ndarray) -> tuple[np.ndarray, LSTMState]:
        """Project features (N, D) to (N, units) and return a zero LSTM state."""
        features = np.asarray(features, dtype=np.float32)
        image = np.maximum(features @ self.image_kernel + self.image_bias, 0.0)  # (N, units)
        zeros = np.zeros((features.shape[0], self.units), dtype=np.float32)
        return image, LSTMState(zeros, zeros.copy())

    def step(
        self, image: np.ndarray, tokens: np.ndarray, state: LSTMState
    ) -> tuple[np.ndarray, LSTMState]:
        """Feed one token per row; return next-word logits (rows, V) and the new state."""
        x = self.embedding[tokens]  # (rows, embedding_dim)
        z = x @ self.lstm_kernel + state.h @ self.lstm_recurrent + self.lstm_bias  # (rows, 4u)
        u = self.units
        i = _sigmoid(z[:, :u])
        f = _sigmoid(z[:, u : 2 * u])
        g = np.tanh(z[:, 2 * u : 3 * u])
        o = _sigmoid(z[:, 3 * u :])
        c = f * state.c + i * g
        h = o * np.tanh(c)  # (rows, units)
        merged = np.maximum((h + image) @ self.merge_kernel + self.merge_bias, 0.0)
        logits = merged @ self.out_kernel + self.out_bias  # (rows, V)
        return logits, LSTMState(h, c)


# Tokens a caption never contains: padding and start are never training targets, and an
# unknown-word token would show as a gap in the sentence.
NEVER_EMITTED = (PAD, UNK, START)

# Beam search ranks finished captions by log-probability / (tokens ** LENGTH_PENALTY): 0.0 ranks
# by raw log-probability, which favours short captions; 1.0 by mean log-probability per token.
# On the dev split with the shipped checkpoint and beam 3, 0.5 gave the best BLEU-2..4
# (BLEU-4 0.149 against 0.146 at 0.0 and 0.144 at 1.0).
LENGTH_PENALTY = 0.5


def _repeats(words: list[int]) -> set[int]:
    """Words that may not come next: the last word again, or one that would repeat a pair.

    Without this the decoder of a small model loops ("sooners sooners sooners ...") until
    max_length; Flickr8k's captions almost never repeat a word pair.
    """
    if not words:
        return set()
    last = words[-1]
    banned = {last}
    banned.update(words[i + 1] for i in range(len(words) - 1) if words[i] == last)
    return banned


def _mask(logits: np.ndarray, histories: list[list[int]]) -> np.ndarray:
    """Logits (rows, V) with special tokens, each row's repeats and NaNs made impossible."""
    logits = np.where(np.isnan(logits), -np.inf, logits)  # a copy; NaN: a diverged model
    logits[:, NEVER_EMITTED] = -np.inf
    for row, words in enumerate(histories):
        banned = list(_repeats(words))
        if banned:
            logits[row, banned] = -np.inf
    return logits


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    # A row with no possible word (all -inf) comes out NaN, which beam search skips.
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def greedy(step_decoder: StepDecoder, features: np.ndarray, max_length: int) -> list[list[int]]:
    """Most likely word at each step, for a batch of images.

    Args:
        step_decoder: the decoder's weights.
        features: (N, D) image features.
        max_length: most words per caption; decoding stops there without an END token.

    Returns:
        N lists of word ids, without START or END.
    """
    image, state = step_decoder.start(features)
    n = image.shape[0]
    tokens = np.full(n, START, dtype=np.int64)
    captions: list[list[int]] = [[] for _ in range(n)]
    alive = np.arange(n)

    for _ in range(max_length):
        logits, state = step_decoder.step(image, tokens, state)
        masked = _mask(logits, [captions[row] for row in alive])  # (rows, V)
        tokens = masked.argmax(axis=-1)  # (rows,)
        tokens[~np.isfinite(masked.max(axis=-1))] = END  # no possible word: the caption ends
        still = tokens != END
        for row, token in zip(alive[still], tokens[still], strict=True):
            captions[row].append(int(token))
        if not still.all():
            # Drop finished rows so later steps only pay for captions still being written.
            image, tokens, alive = image[still], tokens[still], alive[still]
            state = state.take(still)
        if alive.size == 0:
            break
    return captions


def beam_search(
    step_decoder: StepDecoder,
    features: np.ndarray,
    max_length: int,
    beam_size: int,
    length_penalty: float = LENGTH_PENALTY,
) -> list[list[int]]:
    """The best caption among ``beam_size`` beams per image, by length-normalised score.

    A caption's score is its summed log-probability (END included) divided by its token count
    raised to ``length_penalty``. A caption has at least one word; one that reaches
    ``max_length`` words ends there. ``beam_size`` 1 is greedy decoding.
    """
    if beam_size <= 1:
        return greedy(step_decoder, features, max_length)
    return [
        _beam_one(step_decoder, row[None, :], max_length, beam_size, length_penalty)
        for row in features
    ]


def _beam_one(
    step_decoder: StepDecoder,
    features: np.ndarray,
    max_length: int,
    beam_size: int,
    length_penalty: float,
) -> list[int]:
    image, state = step_decoder.start(features)  # (1, units)
    beams: list[list[int]] = [[]]
    scores = np.zeros(1, dtype=np.float64)  # summed log-probabilities, (beams,)
    tokens = np.array([START])
    finished: list[tuple[float, list[int]]] = []

    def normalised(score: float, words: list[int], ended: bool) -> float:
        return score / (len(words) + int(ended)) ** length_penalty

    for step in range(max_length):
        logits, state = step_decoder.step(np.repeat(image, len(beams), axis=0), tokens, state)
        log_probs = _log_softmax(_mask(logits, beams).astype(np.float64))  # (beams, V)
        if step == 0:
            log_probs[:, END] = -np.inf  # a caption has at least one word
        total = scores[:, None] + log_probs  # (beams, V)

        # Step 1: rank the best 2 * beam_size extensions; enough to refill every beam even if
        # half of them end here.
        top = min(2 * beam_size, total.size)
        flat = np.argpartition(total.ravel(), -top)[-top:]
        flat = flat[np.argsort(-total.ravel()[flat])]
        parents, words = np.divmod(flat, total.shape[1])

        # Step 2: an extension that ends goes to the finished captions; the others are beams.
        keep_parents, keep_words = [], []
        for parent, word in zip(parents, words, strict=True):
            if not np.isfinite(total[parent, word]):
                continue
            if word == END:
                finished.append(
                    (normalised(total[parent, word], beams[parent], True), beams[parent])
                )
            elif len(keep_parents) < beam_size:
                keep_parents.append(parent)
                keep_words.append(word)
        if not keep_parents:
            break
        parents, words = np.array(keep_parents), np.array(keep_words)
        beams = [beams[p] + [int(w)] for p, w in zip(parents, words, strict=True)]
        scores = total[parents, words]
        state, tokens = state.take(parents), words

        # Step 3: stop once beam_size captions have ended.
        if len(finished) >= beam_size:
            break
    else:
        # Captions that reached max_length words end there.
        finished += [
            (normalised(score, beam, False), beam)
            for score, beam in zip(scores, beams, strict=True)
        ]
    if not finished:
        return []  # no finite score at all (a diverged model): the caller's no-caption result
    return max(finished, key=lambda item: item[0])[1]


def greedy_full_prefix(
    model: keras.Model, features: np.ndarray, max_length: int
) -> list[list[int]]:
    """Reference greedy decoding that re-runs the Keras model on the whole prefix each step.

    Slow (quadratic in length); kept to prove ``greedy`` right and to measure what it saves.
    """
    features = np.asarray(features, dtype=np.float32)
    n = features.shape[0]
    prefix = np.full((n, 1), START, dtype=np.int32)
    done = np.zeros(n, dtype=bool)
    captions: list[list[int]] = [[] for _ in range(n)]
    for _ in range(max_length):
        probs = model([features, prefix], training=False)  # (N, T, V)
        tokens = _mask(np.asarray(probs[:, -1, :]), captions).argmax(axis=-1)
        for row in np.flatnonzero(~done):
            if tokens[row] == END:
                done[row] = True
            else:
                captions[row].append(int(tokens[row]))
        if done.all():
            break
        prefix = np.concatenate([prefix, tokens[:, None].astype(np.int32)], axis=1)
    return captions
