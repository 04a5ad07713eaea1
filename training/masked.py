"""Next-word loss and accuracy counted over real tokens only.

Padding never counts: every function returns sums and the number of real target tokens, and
callers divide once, so a mean over an epoch or a split is a mean over its real tokens and
not a mean of per-batch means.
"""

from __future__ import annotations

import tensorflow as tf

from captioner.vocabulary import PAD

# Probabilities are clipped here before the log, as Keras' cross-entropy does.
EPSILON = 1e-7


def masked_sums(probs: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Summed cross-entropy, correct predictions and real-token count of a batch.

    Args:
        probs: (B, T, V) next-word probabilities from the decoder.
        targets: (B, T) int32 target ids, PAD where there is no token.

    Returns:
        loss_sum, correct, count: float32 scalars over positions where ``targets != PAD``.
    """
    targets = tf.cast(targets, tf.int32)
    mask = tf.cast(tf.not_equal(targets, PAD), tf.float32)  # (B, T)
    target_probs = tf.gather(probs, targets, batch_dims=2)  # (B, T)
    losses = -tf.math.log(tf.clip_by_value(target_probs, EPSILON, 1.0))  # (B, T)
    predicted = tf.argmax(probs, axis=-1, output_type=tf.int32)  # (B, T)
    correct = tf.cast(tf.equal(predicted, targets), tf.float32) * mask
    return tf.reduce_sum(losses * mask), tf.reduce_sum(correct), tf.reduce_sum(mask)
