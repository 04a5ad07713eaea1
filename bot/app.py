"""The Telegram application: handlers wired to one captioner, and long polling.

``build_application`` assembles a python-telegram-bot ``Application`` around a loaded
``Captioner``; ``serve`` reads the token from the environment and polls until stopped
(``captionbot serve [--config FILE]``) once ``check_bot_api`` has found that the Bot API
accepts the token. ``running`` does what ``run_polling`` does inside an event loop that is
already running, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator

import httpx
from telegram import Bot, BotCommand, User
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, ApplicationBuilder, CommandHandler, MessageHandler, filters

from bot.batcher import MicroBatcher
from bot.handlers import Handlers
from bot.telegram_api import redact_token
from captioner.config import BotConfig, Config, ConfigError
from captioner.errors import CaptionbotError
from captioner.pipeline import Captioner

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message"]  # edits and channel posts are not captioned
COMMANDS = [
    BotCommand("start", "what this bot does"),
    BotCommand("help", "how to use it, and its limits"),
    BotCommand("caption", "caption the photo this replies to"),
]


class MissingTokenError(ConfigError):
    """The bot token's environment variable is not set; the message names it."""


class BotStartError(CaptionbotError):
    """The bot cannot start talking to the Bot API; the one-line message never holds the token."""


def read_token(config: BotConfig) -> str:
    """The bot token from the environment variable that the config names."""
    token = os.environ.get(config.token_env, "").strip()
    if not token:
        raise MissingTokenError(
            f"no bot token: set the environment variable {config.token_env} to the token "
            "that @BotFather gave you"
        )
    return token


def build_application(
    config: Config, captioner: Captioner, *, token: str | None = None
) -> Application:
    """The bot around one loaded captioner; ``token`` defaults to the one in the environment."""
    bot_config = config.bot
    batcher = MicroBatcher(
        captioner.caption_batch,
        queue_size=bot_config.queue_size,
        max_batch=bot_config.max_batch,
        batch_wait_ms=bot_config.batch_wait_ms,
    )
    handlers = Handlers(bot_config, batcher, captioner.manifest, captioner.checkpoint.path)

    async def post_init(application: Application) -> None:
        await application.bot.set_my_commands(COMMANDS)

    async def post_shutdown(application: Application) -> None:
        await batcher.close()

    application = (
        ApplicationBuilder()
        .token(token or read_token(bot_config))
        .base_url(bot_config.base_url)
        .base_file_url(bot_config.base_file_url)
        .concurrent_updates(True)  # a slow photo never holds up another user's update
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    application.add_handler(CommandHandler("start", handlers.start))
    application.add_handler(CommandHandler("help", handlers.help))
    application.add_handler(CommandHandler("stats", handlers.stats))
    application.add_handler(CommandHandler("caption", handlers.caption_command))
    application.add_handler(MessageHandler(filters.PHOTO, handlers.photo))
    application.add_handler(MessageHandler(filters.Document.IMAGE, handlers.image_document))
    application.add_handler(MessageHandler(filters.Document.ALL, handlers.other_document))
    # Last: whatever no handler above took. Groups stay silent, where most talk is not for us.
    application.add_handler(
        MessageHandler(filters.ChatType.PRIVATE & ~filters.StatusUpdate.ALL, handlers.hint)
    )
    application.add_error_handler(handlers.on_error)
    return application


@contextlib.asynccontextmanager
async def running(application: Application, poll_timeout: float = 10) -> AsyncIterator[None]:
    """Poll for updates for the duration of the block, with run_polling's start and stop steps."""
    async with application:  # initialize ... shutdown
        if application.post_init:
            await application.post_init(application)
        assert application.updater is not None
        await application.updater.start_polling(
            timeout=int(poll_timeout), allowed_updates=ALLOWED_UPDATES
        )
        await application.start()
        try:
            yield
        finally:
            await application.updater.stop()
            await application.stop()
            if application.post_stop:
                await application.post_stop(application)
    if application.post_shutdown:
        await application.post_shutdown(application)


@contextlib.contextmanager
def _start_errors(config: BotConfig, token: str) -> Iterator[None]:
    """Turn the Bot API's refusals at startup into a one-line BotStartError without the token."""
    try:
        yield
    except InvalidToken:
        # PTB's own message quotes the token, so none of it is kept.
        raise BotStartError(
            f"the Bot API server at {config.base_url} rejected the token in {config.token_env}; "
            "check it with @BotFather"
        ) from None
    except (NetworkError, httpx.HTTPError) as exc:  # TimedOut is a NetworkError too
        reason = redact_token(str(exc) or type(exc).__name__, token)
        raise BotStartError(f"cannot reach the Bot API at {config.base_url}: {reason}") from None
    except TelegramError as exc:
        reason = redact_token(str(exc), token)
        message = f"the Bot API at {config.base_url} refused to start the bot: {reason}"
        raise BotStartError(message) from None


async def check_bot_api(config: BotConfig, token: str) -> User:
    """The bot's own user, from getMe; raises BotStartError if the Bot API refuses or is away."""
    with _start_errors(config, token):
        bot = Bot(token, base_url=config.base_url, base_file_url=config.base_file_url)
        async with bot:  # initialize calls getMe, shutdown closes the connections
            return bot.bot


def serve(config: Config) -> None:
    """Load the captioner and answer updates by long polling until interrupted."""
    token = read_token(config.bot)  # before the slow model load, so a missing token fails fast
    me = asyncio.run(check_bot_api(config.bot, token))  # a wrong token fails fast too
    logger.info("bot api ok username=%s base_url=%s", me.username, config.bot.base_url)
    captioner = Captioner.from_checkpoint(config=config)
    captioner.warm_up()  # the first photo should not pay for graph tracing
    application = build_application(config, captioner, token=token)
    logger.info(
        "bot polling checkpoint=%s base_url=%s max_batch=%d queue_size=%d",
        captioner.checkpoint.path.name,
        config.bot.base_url,
        config.bot.max_batch,
        config.bot.queue_size,
    )
    with _start_errors(config.bot, token):  # the Bot API may go away during the model load
        application.run_polling(allowed_updates=ALLOWED_UPDATES)
