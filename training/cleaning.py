"""Caption cleaning shared by training and evaluation.

Training captions and BLEU references go through the same function, so a word the model
learns is spelled the way the references spell it.
"""

from __future__ import annotations

import string

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_caption(text: str) -> list[str]:
    """Turn a raw caption into lowercase alphabetic words.

    Punctuation is deleted (so "tri-colored" becomes "tricolored"), then every token that is
    not purely alphabetic (numbers, leftovers such as "3rd") is dropped. One-letter words such
    as "a" stay: references contain them and dropping them costs BLEU.

    Args:
        text: a caption as written in the dataset, e.g. "A dog runs .".

    Returns:
        The words, e.g. ["a", "dog", "runs"]; empty when nothing alphabetic is left.
    """
    words = text.lower().translate(_DROP_PUNCTUATION).split()
    return [word for word in words if word.isalpha()]
