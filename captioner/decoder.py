"""The LSTM caption decoder: the merge model of image features and a caption prefix.

Image features and the words so far run in separate branches that are added, then a small
dense head predicts the next word. The model takes whole captions (teacher forcing): output
step t is the distribution of the word after token t.
"""

from __future__ import annotations

import keras
from keras import layers

# Stable layer names: weights are loaded by name, and the fast step decoder reads them.
IMAGE_DROPOUT = "image_dropout"
IMAGE_DENSE = "image_dense"
EMBEDDING = "word_embedding"
WORD_DROPOUT = "word_dropout"
LSTM = "caption_lstm"
MERGE = "merge"
MERGE_DENSE = "merge_dense"
OUTPUT = "next_word"


@keras.saving.register_keras_serializable(package="captionbot")
class AddImageToSteps(layers.Layer):
    """Adds one image vector to every step of a sequence, keeping the sequence's mask."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        sequence, image = inputs
        # (batch, steps, units) + (batch, 1, units) -> (batch, steps, units)
        return sequence + keras.ops.expand_dims(image, axis=1)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return mask[0]

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def build_decoder(
    vocab_size: int,
    feature_dim: int,
    embedding_dim: int = 256,
    units: int = 256,
    dropout: float = 0.5,
) -> keras.Model:
    """Build the merge decoder.

    Args:
        vocab_size: ids in the vocabulary, special tokens included.
        feature_dim: width of the encoder's image features (2048 ResNet50, 512 SqueezeNet).
        embedding_dim: word embedding width.
        units: LSTM and dense widths.
        dropout: rate on image features and on word embeddings.

    Returns:
        A functional model taking ``[features (N, D) float32, tokens (N, T) int32]`` and
        returning next-word probabilities ``(N, T, vocab_size)``. Tokens are right-padded
        with 0, which the embedding masks.
    """
    features = keras.Input(shape=(feature_dim,), dtype="float32", name="features")
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")

    image = layers.Dropout(dropout, name=IMAGE_DROPOUT)(features)
    image = layers.Dense(units, activation="relu", name=IMAGE_DENSE)(image)  # (N, units)

    words = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name=EMBEDDING)(tokens)
    words = layers.Dropout(dropout, name=WORD_DROPOUT)(words)  # (N, T, embedding_dim)
    words = layers.LSTM(units, return_sequences=True, name=LSTM)(words)  # (N, T, units)

    merged = AddImageToSteps(name=MERGE)([words, image])  # (N, T, units)
    merged = layers.Dense(units, activation="relu", name=MERGE_DENSE)(merged)
    probs = layers.Dense(vocab_size, activation="softmax", name=OUTPUT)(merged)  # (N, T, V)
    return keras.Model([features, tokens], probs, name="caption_decoder")


def decoder_sizes(model: keras.Model) -> dict[str, int]:
    """Vocabulary size, feature width, embedding width and units read off a built decoder."""
    return {
        "vocab_size": int(model.get_layer(EMBEDDING).input_dim),
        "feature_dim": int(model.get_layer(IMAGE_DENSE).kernel.shape[0]),
        "embedding_dim": int(model.get_layer(EMBEDDING).output_dim),
        "units": int(model.get_layer(LSTM).units),
    }
