"""Tests of the bot's texts: sizes and limits stated from the config."""

from __future__ import annotations

import dataclasses

import pytest

from bot import messages
from captioner.config import Config


def test_too_big_states_both_sizes_in_the_limits_unit(config: Config) -> None:
    limit = config.bot.max_download_bytes
    assert messages.too_big(limit + 1, limit) == (
        "That file is 20.1 MB; I can only download files up to 20 MB."
    )
    assert messages.too_big(None, limit) == (
        "That file is too big; I can only download files up to 20 MB."
    )


@pytest.mark.parametrize(
    ("per_user", "album_note"),
    [(10, "a whole album of 10 fits"), (4, "only 4 photos of a bigger album are captioned")],
)
def test_help_says_what_becomes_of_an_album(config: Config, per_user: int, album_note: str):
    text = messages.help_text(dataclasses.replace(config.bot, per_user_inflight=per_user))
    assert f"Up to {per_user} of your photos" in text and album_note in text
    assert "each photo gets its own reply" in text
