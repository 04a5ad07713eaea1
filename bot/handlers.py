"""The bot's handlers: one small coroutine per kind of update, and the error handler.

Every photo or file that may be an image goes the same way: size check, per-user admission,
download, the micro-batcher, then a plain-text reply to the message that holds the image.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from telegram import Document, Message, PhotoSize, Update
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import ContextTypes

from bot import messages
from bot.batcher import Busy, MicroBatcher, UserLimit
from bot.stats import ServingStats, format_stats
from bot.telegram_api import Replier, download, redact_token, typing
from captioner.config import BotConfig
from captioner.errors import CaptionbotError
from captioner.images import ImageError
from captioner.pipeline import Caption

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE

UNTYPED_MIME_TYPES = frozenset({"", "application/octet-stream"})
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


class Handlers:
    """The handlers, sharing one batcher, one set of live figures and one flood-control gate."""

    def __init__(
        self,
        config: BotConfig,
        batcher: MicroBatcher[Caption | ImageError],
        manifest: dict[str, Any],
        checkpoint: Path,
    ) -> None:
        self.config = config
        self.batcher = batcher
        self.manifest = manifest
        self.checkpoint = checkpoint
        self.limit = UserLimit(config.per_user_inflight)
        self.serving_stats = ServingStats()
        self.replier = Replier()

    async def start(self, update: Update, context: Context) -> None:
        """Greet and say what the bot does."""
        await self._answer(update, context, messages.start_text(self.config))

    async def help(self, update: Update, context: Context) -> None:
        """Say what the bot does and its limits."""
        await self._answer(update, context, messages.help_text(self.config))

    async def stats(self, update: Update, context: Context) -> None:
        """Report the checkpoint's quality and live figures, to admins only."""
        user = update.effective_user
        if user is None or user.id not in self.config.admin_ids:
            await self._answer(update, context, messages.STATS_REFUSED)
            return
        report = format_stats(
            self.manifest,
            self.checkpoint,
            self.serving_stats,
            queue_depth=self.batcher.depth,
            queue_size=self.batcher.queue_size,
        )
        await self._answer(update, context, report)

    async def photo(self, update: Update, context: Context) -> None:
        """Caption a photo (its largest size); a "/caption" caption changes nothing."""
        message = update.effective_message
        assert message is not None and message.photo
        await self._caption(update, context, message, message.photo[-1])

    async def document(self, update: Update, context: Context) -> None:
        """Caption a file that may be an image; explain that only images are captioned if not."""
        message = update.effective_message
        assert message is not None and message.document is not None
        media = _image_of(message)
        if media is None:
            await self._answer(update, context, messages.NOT_AN_IMAGE)
            return
        await self._caption(update, context, message, media)

    async def hint(self, update: Update, context: Context) -> None:
        """Point a private chat's text, unknown command or sticker to photos and /help."""
        await self._answer(update, context, messages.HINT)

    async def caption_command(self, update: Update, context: Context) -> None:
        """Caption the photo or image file that /caption replies to, else explain usage."""
        message = update.effective_message
        assert message is not None
        target = message.reply_to_message
        media = _image_of(target) if target is not None else None
        if target is None or media is None:
            await self._answer(update, context, messages.CAPTION_USAGE)
            return
        await self._caption(update, context, target, media)

    async def on_error(self, update: object, context: Context) -> None:
        """Log one key=value line per failure, never the token, and answer the user.

        A Telegram failure gets no answer: sending one would most likely fail the same way.
        """
        error = context.error
        if isinstance(error, TelegramError):
            kind = "telegram"
        elif isinstance(error, CaptionbotError):
            kind = "refused"
        else:
            kind = "internal"
        self.serving_stats.record_error(kind)
        detail = redact_token(str(error), context.bot.token)
        update_id = update.update_id if isinstance(update, Update) else None
        logger.error(
            "update failed update=%s kind=%s error=%s detail=%r",
            update_id,
            kind,
            type(error).__name__,
            detail,
        )
        if kind != "telegram" and isinstance(update, Update) and update.effective_message:
            text = str(error) if kind == "refused" else messages.INTERNAL_ERROR
            try:
                await self._answer(update, context, text)
            except TelegramError:
                pass  # already logged the failure that matters

    async def _answer(self, update: Update, context: Context, text: str) -> None:
        message = update.effective_message
        assert message is not None
        await self.replier.reply(context.bot, message.chat_id, message.message_id, text)

    async def _caption(
        self, update: Update, context: Context, message: Message, media: PhotoSize | Document
    ) -> None:
        """Caption one image and reply to ``message``, the message that holds it."""
        started = time.monotonic()
        bot, chat_id = context.bot, message.chat_id
        user_id = update.effective_user.id if update.effective_user else chat_id

        async def reply(text: str) -> None:
            await self.replier.reply(bot, chat_id, message.message_id, text)

        limit = self.config.max_download_bytes
        if media.file_size is not None and media.file_size > limit:
            self.serving_stats.record_error("file_too_big")
            await reply(messages.too_big(media.file_size, limit))
            return

        try:
            with self.limit.admit(user_id):
                if self.batcher.full:  # no download for a photo that cannot be queued
                    raise Busy("queue")
                async with typing(bot, chat_id, self.replier):
                    data = await download(bot, media.file_id, self.config.read_timeout_s)
                    result = await self.batcher.submit(data)
        except Busy as busy:
            self.serving_stats.record_error(f"busy_{busy.reason}")
            logger.info("photo refused user=%s reason=busy_%s", user_id, busy.reason)
            await reply(messages.BUSY_USER if busy.reason == "user" else messages.BUSY_QUEUE)
            return
        except BadRequest as exc:
            # Telegram refuses getFile for files over its limit when the size was not given.
            too_big = "too big" in str(exc).lower()
            self.serving_stats.record_error("file_too_big" if too_big else "download")
            logger.warning("download refused user=%s detail=%r", user_id, str(exc)[:200])
            await reply(messages.too_big(None, limit) if too_big else messages.DOWNLOAD_FAILED)
            return
        except NetworkError as exc:
            self.serving_stats.record_error("download")
            logger.warning("download failed user=%s error=%s", user_id, type(exc).__name__)
            await reply(messages.DOWNLOAD_FAILED)
            return

        if isinstance(result, ImageError):
            self.serving_stats.record_error(result.kind)
            logger.info("image refused user=%s kind=%s", user_id, result.kind)
            await reply(str(result))
            return
        await reply(result.text)
        seconds = time.monotonic() - started
        self.serving_stats.record_caption(seconds)
        logger.info(
            "caption served user=%s ms=%d words=%d", user_id, seconds * 1000, len(result.words)
        )


def might_be_image(document: Document) -> bool:
    """Whether a file is worth downloading as an image: typed as one, untyped, or named like one.

    Clients send many images as untyped files (no MIME type, or application/octet-stream);
    the captioner tells an image from anything else better than a MIME type does.
    """
    mime_type = (document.mime_type or "").split(";")[0].strip().lower()
    if mime_type.startswith("image/") or mime_type in UNTYPED_MIME_TYPES:
        return True
    return (document.file_name or "").lower().endswith(IMAGE_SUFFIXES)


def _image_of(message: Message) -> PhotoSize | Document | None:
    """The largest photo size, or a file that may be an image, that a message holds."""
    if message.photo:
        return message.photo[-1]
    document = message.document
    if document is not None and might_be_image(document):
        return document
    return None
