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
import re
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


class MalformedTokenError(ConfigError):
    """The bot token's environment variable holds no token's shape; the message never quotes it."""


class BotStartError(CaptionbotError):
    """The bot cannot start talking to the Bot API; the one-line message never holds the token."""


# Lenient on purpose: Telegram's tokens are "<bot id>:<35 url-safe characters>", but a local
# Bot API server or a future token may differ in the length of either part.
TOKEN_SHAPE = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")

# PTB logs a full traceback here when a server answers with something other than JSON.
PTB_REQUEST_LOGGER = "telegram.request.BaseRequest"


def read_token(config: BotConfig) -> str:
    """The bot token from the environment variable that the config names."""
    token = os.environ.get(config.token_env, "").strip()
    if not token:
        raise MissingTokenError(
            f"no bot token: set the environment variable {config.token_env} to the token "
            "that @BotFather gave you"
        )
    check_token_shape(config, token)
    return token


def check_token_shape(config: BotConfig, token: str) -> None:
    """Raise MalformedTokenError unless ``token`` looks like a bot token (digits:characters).

    Checked before any request: a space or line break in the token would otherwise surface as
    an invalid URL, which reads as if the Bot API could not be reached.
    """
    if not TOKEN_SHAPE.fullmatch(token):
        raise MalformedTokenError(
            f"the environment variable {config.token_env} does not hold a bot token: a token "
            "from @BotFather is one line of digits, a colon and letters, digits, - or _"
        )


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
    application.add_handler(MessageHandler(filters.Document.ALL, handlers.document))
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
        # PTB's own message quotes the token, so none of it is kept. PTB raises this for any
        # 401 or 404, so a web server that is not a Bot API at all reads the same.
        raise BotStartError(
            f"the Bot API server at {config.base_url} rejected the token in {config.token_env} "
            f"(check it with @BotFather), or {config.base_url} is not a Bot API server"
        ) from None
    except (NetworkError, httpx.HTTPError) as exc:  # TimedOut is a NetworkError too
        reason = redact_token(str(exc) or type(exc).__name__, token)
        raise BotStartError(f"cannot reach the Bot API at {config.base_url}: {reason}") from None
    except TelegramError as exc:
        reason = redact_token(str(exc), token)
        message = f"the Bot API at {config.base_url} refused to start the bot: {reason}"
        raise BotStartError(message) from None


class _DropTracebacks(logging.Filter):
    """Drops log records that carry a traceback; the caller reports the failure in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


@contextlib.contextmanager
def _quiet_request_tracebacks() -> Iterator[None]:
    """Keep PTB's traceback for a non-JSON answer off the terminal for the duration."""
    request_logger = logging.getLogger(PTB_REQUEST_LOGGER)
    drop = _DropTracebacks()
    request_logger.addFilter(drop)
    try:
        yield
    finally:
        request_logger.removeFilter(drop)


async def check_bot_api(config: BotConfig, token: str) -> User:
    """The bot's own user, from getMe; raises BotStartError if the Bot API refuses or is away."""
    check_token_shape(config, token)
    with _start_errors(config, token), _quiet_request_tracebacks():
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
