"""The caption vocabulary: words to token ids and back.

Ids 0..3 are reserved for padding, unknown words, and the start and end of a caption, so every
id the vocabulary emits is below its size, which is the decoder's embedding size.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, UNK, START, END = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<start>", "<end>")


class Vocabulary:
    """An ordered list of words; a word's id is its position."""

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if words[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            words = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words: list[str] = words
        self._ids = {word: i for i, word in enumerate(words)}

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], max_words: int) -> Vocabulary:
        """Keep the ``max_words`` most frequent words of tokenised captions.

        Ties are broken alphabetically so that the same captions always give the same ids.
        """
        counts = Counter(word for caption in captions for word in caption)
        for token in SPECIAL_TOKENS:
            counts.pop(token, None)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls([word for word, _ in ranked[:max_words]])

    @property
    def size(self) -> int:
        """Number of ids, special tokens included: the embedding's input size."""
        return len(self.words)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def encode(self, words: Iterable[str]) -> list[int]:
        """Ids of ``words``; unknown words map to UNK. No start or end token is added."""
        return [self._ids.get(word, UNK) for word in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of ``ids`` up to the first END, without special tokens."""
        words = []
        for token in ids:
            token = int(token)
            if token == END:
                break
            if token < len(SPECIAL_TOKENS) or token >= self.size:
                continue
            words.append(self.words[token])
        return words

    def sha256(self) -> str:
        """Hash of the ordered word list; the checkpoint manifest records it."""
        return hashlib.sha256("\n".join(self.words).encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.words, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        words = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{path} is not a vocabulary file (a JSON list of words)")
        return cls(words)
