"""Everything the bot says to people, in one place.

Texts are plain (sent with no parse mode), short, and state limits with the figures from the
bot's configuration.
"""

from __future__ import annotations

from captioner.config import BotConfig
from captioner.images import megabytes

ALBUM_MAX_PHOTOS = 10  # Telegram puts at most this many photos in one album


def help_text(config: BotConfig) -> str:
    return (
        "Send me a photo and I reply with a one-sentence caption in English.\n"
        "\n"
        "- Photos, albums and image files (JPEG, PNG, ...) up to "
        f"{megabytes(config.max_download_bytes)} work; each photo gets its own reply.\n"
        "- Reply /caption to a photo or image file to caption it again.\n"
        f"- Up to {config.per_user_inflight} of your photos are worked on at a time"
        f"{_album_note(config.per_user_inflight)}; for any more I ask you to send them again.\n"
        "\n"
        "Captions come from a small model trained on Flickr8k photos of people, animals and "
        "places, so they can be wrong."
    )


def _album_note(per_user_inflight: int) -> str:
    if per_user_inflight >= ALBUM_MAX_PHOTOS:
        return f", so a whole album of {ALBUM_MAX_PHOTOS} fits"
    return f", so only {per_user_inflight} photos of a bigger album are captioned"


def start_text(config: BotConfig) -> str:
    return "Hello! I describe photos.\n\n" + help_text(config)


CAPTION_USAGE = (
    "To use /caption, reply with it to a message that has a photo or an image file, "
    "or write it as the caption of a photo you send."
)
NOT_AN_IMAGE = "I can only caption images. Send a photo, or an image file such as JPEG or PNG."
BUSY_USER = (
    "Busy, one moment: I am still working on your earlier photos. "
    "Send this one again once they are answered."
)
BUSY_QUEUE = "Busy: too many photos are waiting right now. Please try again in a minute."
DOWNLOAD_FAILED = "I could not download that file from Telegram. Please send it again."
INTERNAL_ERROR = "Sorry, something went wrong on my side. Please try again later."
STATS_REFUSED = "Sorry, /stats is only available to the people who run this bot."
HINT = (
    "Send me a photo and I reply with a caption that describes it. /help says what else I can do."
)


def too_big(size: int | None, limit: int) -> str:
    """Refusal of a file over the download limit, with both sizes when the size is known."""
    what = f"That file is {megabytes(size, round_up=True)}" if size else "That file is too big"
    return f"{what}; I can only download files up to {megabytes(limit)}."
