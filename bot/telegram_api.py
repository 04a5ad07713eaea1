"""The Telegram calls the bot makes with care: replies, "typing", and file downloads.

Replies honour flood control: a ``RetryAfter`` pauses every send until Telegram's wait is over,
then the refused reply is sent once more. A download that times out or fails on the network is
tried once more with a longer read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
import re
import warnings
from collections.abc import AsyncIterator

from telegram import Bot, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

logger = logging.getLogger(__name__)

TYPING_EVERY_S = 4.5  # Telegram shows "typing" for 5 s after each chat action
RETRY_READ_TIMEOUT_FACTOR = 4  # the second download attempt waits this much longer


def redact_token(text: str, token: str) -> str:
    """``text`` on one line, at most 300 characters, with the bot token replaced."""
    # PTB changes the case of some error texts, so the token is matched in any case.
    text = re.sub(re.escape(token), "<token>", text, flags=re.IGNORECASE)
    return " ".join(text.split())[:300]


class Replier:
    """Sends replies for the whole bot; one flood-control wait holds back every send."""

    # Limitation: the wait is bot-wide although Telegram also limits per chat; one chat's
    # flood control briefly delays replies in every chat, which errs on the side of no storm.

    def __init__(self) -> None:
        self._resume_at = 0.0  # loop time before which nothing is sent

    async def reply(self, bot: Bot, chat_id: int, message_id: int, text: str) -> None:
        """Send plain ``text`` as a reply to a message; on RetryAfter wait and try once more."""
        for attempt in (1, 2):
            await self._wait_for_flood_control()
            try:
                await bot.send_message(
                    chat_id,
                    text,
                    reply_parameters=ReplyParameters(message_id, allow_sending_without_reply=True),
                )
                return
            except RetryAfter as exc:
                seconds = retry_after_seconds(exc)
                loop = asyncio.get_running_loop()
                self._resume_at = max(self._resume_at, loop.time() + seconds)
                logger.warning(
                    "flood control chat=%s retry_after_s=%.1f attempt=%d",
                    chat_id,
                    seconds,
                    attempt,
                )
                if attempt == 2:
                    raise

    @property
    def paused(self) -> bool:
        """True while a flood-control wait is in force."""
        return asyncio.get_running_loop().time() < self._resume_at

    async def _wait_for_flood_control(self) -> None:
        loop = asyncio.get_running_loop()
        while (delay := self._resume_at - loop.time()) > 0:
            await asyncio.sleep(delay)


def retry_after_seconds(exc: RetryAfter) -> float:
    """Seconds Telegram asked to wait, whichever type (int or timedelta) PTB hands out."""
    with warnings.catch_warnings():
        # PTB warns that the int form will become a timedelta; both are handled here.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    if isinstance(value, dtm.timedelta):
        return value.total_seconds()
    return float(value)


@contextlib.asynccontextmanager
async def typing(bot: Bot, chat_id: int, replier: Replier) -> AsyncIterator[None]:
    """Show "typing" in the chat for as long as the block runs (best effort)."""

    async def send() -> None:
        if replier.paused:  # a chat action is not worth adding to flood control
            return
        try:
            await bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            logger.debug("chat action failed chat=%s error=%s", chat_id, type(exc).__name__)

    async def repeat() -> None:
        while True:
            await asyncio.sleep(TYPING_EVERY_S)
            await send()

    await send()
    task = asyncio.create_task(repeat(), name=f"typing-{chat_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def download(bot: Bot, file_id: str, read_timeout: float) -> bytes:
    """Fetch a file's bytes; a timeout or network failure is retried once, waiting longer."""
    file = await bot.get_file(file_id)
    try:
        return bytes(await file.download_as_bytearray(read_timeout=read_timeout))
    except BadRequest:
        raise
    except NetworkError as exc:  # TimedOut is a NetworkError too
        longer = read_timeout * RETRY_READ_TIMEOUT_FACTOR
        logger.warning("download retry error=%s read_timeout_s=%.1f", type(exc).__name__, longer)
        return bytes(await file.download_as_bytearray(read_timeout=longer))
