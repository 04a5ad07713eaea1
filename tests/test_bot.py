"""End-to-end tests of the bot: the real PTB Application against a fake Bot API on loopback.

Each test starts the fake server and the bot (long polling, real captioner with a tiny
checkpoint), queues what users send, and asserts on the requests the server received.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_bot_api import DOWNLOAD, FakeBotApi, FakeGroup, FakeUser

from bot import messages
from bot.app import (
    PTB_REQUEST_LOGGER,
    BotStartError,
    MalformedTokenError,
    MissingTokenError,
    build_application,
    check_bot_api,
    running,
    serve,
)
from captioner.config import Config, ConfigError
from captioner.errors import CaptionbotError
from captioner.images import ImageError, load_image
from captioner.pipeline import Captioner

FLICKR8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
ALICE = FakeUser(1001, "Alice")
BOB = FakeUser(1002, "Bob")
ADMIN = FakeUser(4242, "Admin")
FRIENDS = FakeGroup(-100777, "Friends")

pytestmark = pytest.mark.skipif(not FLICKR8K.exists(), reason=f"{FLICKR8K} is not here")


@pytest.fixture(scope="session")
def photos() -> list[bytes]:
    """The first 12 test-split photos, as JPEG bytes."""
    names = (FLICKR8K / "text" / "Flickr_8k.testImages.txt").read_text().split()[:12]
    return [(FLICKR8K / "images" / name).read_bytes() for name in names]


@pytest.fixture(scope="session")
def captioner(tiny_checkpoint: Path, config: Config) -> Captioner:
    return Captioner.from_checkpoint(tiny_checkpoint, config=config)


@pytest.fixture
async def server() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi() as server:
        yield server


@pytest.fixture
def start_bot(server: FakeBotApi, config: Config, captioner: Captioner):
    """Returns a context manager running the bot against ``server``, with bot settings changed."""

    @contextlib.asynccontextmanager
    async def start(**bot_settings: object) -> AsyncIterator[None]:
        settings = {
            "base_url": server.base_url,
            "base_file_url": server.base_file_url,
            "admin_ids": [ADMIN.id],
            **bot_settings,
        }
        bot_config = dataclasses.replace(config.bot, **settings)
        application = build_application(
            dataclasses.replace(config, bot=bot_config), captioner, token=server.token
        )
        async with running(application):
            yield

    return start


def reply_text(server: FakeBotApi, message: dict) -> str:
    (reply,) = server.replies_to(message)
    assert "parse_mode" not in reply.params  # plain text: captions are not markup
    return reply.params["text"]


async def test_photo_gets_caption_of_largest_size_while_typing(
    server: FakeBotApi, start_bot, captioner: Captioner, photos: list[bytes]
) -> None:
    async with start_bot():
        message = server.send_photo(ALICE, photos[0])
        (reply,) = await server.wait_for_replies([message])

    assert reply.params["chat_id"] == ALICE.id
    assert reply_text(server, message) == captioner.caption(photos[0]).text
    largest = message["photo"][-1]["file_id"]
    assert [call.params["file_id"] for call in server.calls_to("getFile")] == [largest]
    typing = [c for c in server.calls_to("sendChatAction") if c.params["chat_id"] == ALICE.id]
    assert typing and typing[0].params["action"] == "typing"
    assert typing[0].seq < reply.seq


async def test_image_document_is_captioned(
    server: FakeBotApi, start_bot, captioner: Captioner, photos: list[bytes]
) -> None:
    async with start_bot():
        message = server.send_document(
            ALICE, photos[1], mime_type="image/jpeg", file_name="holiday.jpg"
        )
        await server.wait_for_replies([message])

    assert reply_text(server, message) == captioner.caption(photos[1]).text
    assert [c.params["file_id"] for c in server.calls_to("getFile")] == [
        message["document"]["file_id"]
    ]


async def test_document_over_limit_is_refused_before_any_download(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    async with start_bot(max_download_bytes=20 * 1024 * 1024):
        message = server.send_document(
            ALICE,
            photos[0],
            mime_type="image/png",
            file_name="scan.png",
            file_size=25 * 1024 * 1024,
        )
        await server.wait_for_replies([message])

    text = reply_text(server, message)
    assert "25 MB" in text and "20 MB" in text
    assert server.calls_to("getFile") == [] and server.calls_to(DOWNLOAD) == []


async def test_document_a_byte_over_limit_does_not_read_as_the_limit(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    limit = 20 * 1024 * 1024
    async with start_bot(max_download_bytes=limit):
        message = server.send_document(
            ALICE, photos[0], mime_type="image/jpeg", file_name="big.jpg", file_size=limit + 1
        )
        await server.wait_for_replies([message])

    assert reply_text(server, message) == (
        "That file is 20.1 MB; I can only download files up to 20 MB."
    )


async def test_non_image_document_is_explained(server: FakeBotApi, start_bot) -> None:
    async with start_bot():
        sent = [
            server.send_document(
                ALICE, b"%PDF-1.4 ...", mime_type="application/pdf", file_name="paper.pdf"
            ),
            server.send_document(BOB, b"shopping", mime_type="text/plain", file_name=None),
        ]
        await server.wait_for_replies(sent)

    assert [reply_text(server, m) for m in sent] == [messages.NOT_AN_IMAGE] * 2
    assert server.calls_to("getFile") == []


@pytest.mark.parametrize(
    ("mime_type", "file_name"),
    [
        (None, "IMG_1.JPG"),
        ("application/octet-stream", "IMG_1.JPG"),
        (None, None),
        ("application/octet-stream", "upload"),
        ("application/x-unknown", "scan.Tiff"),  # named like an image, typed as anything
    ],
)
async def test_untyped_or_image_named_document_is_captioned(
    server: FakeBotApi,
    start_bot,
    captioner: Captioner,
    photos: list[bytes],
    mime_type: str | None,
    file_name: str | None,
) -> None:
    async with start_bot():
        message = server.send_document(ALICE, photos[1], mime_type=mime_type, file_name=file_name)
        await server.wait_for_replies([message])

    assert reply_text(server, message) == captioner.caption(photos[1]).text
    assert [c.params["file_id"] for c in server.calls_to("getFile")] == [
        message["document"]["file_id"]
    ]


async def test_untyped_document_that_is_no_image_gets_the_captioners_message(
    server: FakeBotApi, start_bot
) -> None:
    data = b"PK\x03\x04 a zip archive, not an image"
    async with start_bot():
        message = server.send_document(
            ALICE, data, mime_type="application/octet-stream", file_name="IMG_2.JPG"
        )
        await server.wait_for_replies([message])

    with pytest.raises(ImageError) as refusal:
        load_image(data)
    assert reply_text(server, message) == str(refusal.value)
    assert len(server.calls_to(DOWNLOAD)) == 1  # tried, once


async def test_untyped_document_over_limit_is_refused_before_any_download(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    async with start_bot(max_download_bytes=20 * 1024 * 1024):
        message = server.send_document(
            ALICE, photos[0], mime_type=None, file_name=None, file_size=25 * 1024 * 1024
        )
        await server.wait_for_replies([message])

    text = reply_text(server, message)
    assert "25 MB" in text and "20 MB" in text
    assert server.calls_to("getFile") == [] and server.calls_to(DOWNLOAD) == []


async def test_caption_command_replying_to_files_tries_the_same_files_as_sending_them(
    server: FakeBotApi, start_bot, captioner: Captioner, photos: list[bytes]
) -> None:
    async with start_bot():
        untyped = server.send_document(
            ALICE, photos[4], mime_type="application/octet-stream", file_name="IMG_3.JPG"
        )
        pdf = server.send_document(
            ALICE, b"%PDF-1.4 ...", mime_type="application/pdf", file_name="paper.pdf"
        )
        await server.wait_for_replies([untyped, pdf])
        on_untyped = server.send_text(ALICE, "/caption", reply_to=untyped)
        on_pdf = server.send_text(ALICE, "/caption", reply_to=pdf)
        await server.wait_for(lambda: len(server.replies_to(untyped)) == 2)
        await server.wait_for_replies([on_pdf])

    expected = captioner.caption(photos[4]).text
    assert [r.params["text"] for r in server.replies_to(untyped)] == [expected, expected]
    assert server.replies_to(on_untyped) == []  # the answer goes under the file
    assert reply_text(server, on_pdf) == messages.CAPTION_USAGE
    file_id = untyped["document"]["file_id"]
    assert [c.params["file_id"] for c in server.calls_to("getFile")] == [file_id, file_id]


async def test_caption_command_as_a_photos_own_caption(
    server: FakeBotApi, start_bot, captioner: Captioner, photos: list[bytes]
) -> None:
    async with start_bot():
        message = server.send_photo(ALICE, photos[2], caption="/caption")
        await server.wait_for_replies([message])

    assert reply_text(server, message) == captioner.caption(photos[2]).text


async def test_caption_command_replying_to_a_photo_captions_that_photo(
    server: FakeBotApi, start_bot, captioner: Captioner, photos: list[bytes]
) -> None:
    async with start_bot():
        photo = server.send_photo(ALICE, photos[3])
        await server.wait_for_replies([photo])
        command = server.send_text(ALICE, "/caption", reply_to=photo)
        await server.wait_for(lambda: len(server.replies_to(photo)) == 2)

    expected = captioner.caption(photos[3]).text
    assert [r.params["text"] for r in server.replies_to(photo)] == [expected, expected]
    assert server.replies_to(command) == []  # the answer goes under the photo
    assert len(server.calls_to("getFile")) == 2


async def test_caption_command_without_an_image_explains_usage(
    server: FakeBotApi, start_bot
) -> None:
    async with start_bot():
        alone = server.send_text(ALICE, "/caption")
        text = server.send_text(BOB, "hello there")
        on_text = server.send_text(BOB, "/caption", reply_to=text)
        await server.wait_for_replies([alone, on_text])

    assert reply_text(server, alone) == messages.CAPTION_USAGE
    assert reply_text(server, on_text) == messages.CAPTION_USAGE
    assert server.calls_to("getFile") == []


async def test_full_album_gets_a_caption_per_photo_with_the_default_limits(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    album_photos = photos[: messages.ALBUM_MAX_PHOTOS]  # Telegram's largest album
    async with start_bot():  # the per-user limit and queue size of config.yaml
        album = [server.send_photo(BOB, p, media_group_id="album-1") for p in album_photos]
        await server.wait_for_replies(album)

    texts = [reply_text(server, m) for m in album]  # exactly one reply each
    assert all(t and t not in (messages.BUSY_USER, messages.BUSY_QUEUE) for t in texts)
    assert all(server.replies_to(m)[0].params["chat_id"] == BOB.id for m in album)
    assert len(server.calls_to("getFile")) == len(album_photos)


async def test_private_text_unknown_command_and_sticker_get_a_hint(
    server: FakeBotApi, start_bot
) -> None:
    async with start_bot():
        sent = [
            server.send_text(ALICE, "hello"),
            server.send_text(ALICE, "/unknown"),
            server.send_sticker(ALICE),
        ]
        help_ = server.send_text(ALICE, "/help")
        await server.wait_for_replies([*sent, help_])

    assert [reply_text(server, m) for m in sent] == [messages.HINT] * 3
    assert "/help" in messages.HINT and "photo" in messages.HINT
    assert reply_text(server, help_) != messages.HINT  # known commands keep their handler


async def test_group_text_unknown_command_and_sticker_get_no_reply(
    server: FakeBotApi, start_bot
) -> None:
    async with start_bot():
        server.send_text(ALICE, "hello everyone", group=FRIENDS)
        server.send_text(BOB, "/unknown", group=FRIENDS)
        server.send_sticker(BOB, group=FRIENDS)
        private = server.send_text(ALICE, "hello")
        await server.wait_for_replies([private])
    # The bot stopped only after every update had been handled, so none is still to come.

    assert [c for c in server.calls_to("sendMessage") if c.params["chat_id"] == FRIENDS.id] == []
    assert reply_text(server, private) == messages.HINT


async def test_stats_for_admin_shows_checkpoint_and_live_figures(
    server: FakeBotApi, start_bot, photos: list[bytes], tiny_checkpoint: Path
) -> None:
    async with start_bot():
        photo = server.send_photo(ALICE, photos[0])
        broken = server.send_photo(ALICE, b"this is not a jpeg")
        await server.wait_for_replies([photo, broken])
        command = server.send_text(ADMIN, "/stats")
        await server.wait_for_replies([command])

    report = reply_text(server, command)
    assert len(report) <= 4096
    assert f"Checkpoint: {tiny_checkpoint.name}" in report
    assert "Encoder: squeezenet" in report
    assert "Data: synthetic, trained on none" in report
    assert "BLEU: not measured" in report
    assert "Dev masked accuracy: not measured" in report
    assert "Photos captioned: 1" in report
    assert "Errors: not_image 1" in report
    assert "Caption latency: p50 " in report
    assert "Queue: 0 waiting (limit 64)" in report


async def test_stats_for_anyone_else_is_a_polite_refusal(server: FakeBotApi, start_bot) -> None:
    async with start_bot():
        command = server.send_text(BOB, "/stats")
        await server.wait_for_replies([command])

    assert reply_text(server, command) == messages.STATS_REFUSED


async def test_start_and_help_state_what_the_bot_does_and_its_limits(
    server: FakeBotApi, start_bot
) -> None:
    async with start_bot(max_download_bytes=10 * 1024 * 1024, per_user_inflight=3):
        start = server.send_text(ALICE, "/start")
        help_ = server.send_text(ALICE, "/help")
        await server.wait_for_replies([start, help_])

    for message in (start, help_):
        text = reply_text(server, message)
        assert "caption" in text and "10 MB" in text and "3 of your photos" in text
    assert [c.params["commands"][0]["command"] for c in server.calls_to("setMyCommands")] == [
        "start"
    ]


async def test_bad_image_gets_the_captioners_message(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    truncated = photos[0][: len(photos[0]) // 3]
    garbage = b"GIF89a but not really a GIF"
    async with start_bot():
        messages_ = [server.send_photo(ALICE, truncated), server.send_photo(BOB, garbage)]
        await server.wait_for_replies(messages_)

    for message, data in zip(messages_, (truncated, garbage), strict=True):
        with pytest.raises(ImageError) as refusal:
            load_image(data)
        assert reply_text(server, message) == str(refusal.value)
        assert "Traceback" not in reply_text(server, message)


async def test_flood_control_is_honoured_with_one_retry(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    async with start_bot():
        server.fail_next("sendMessage", retry_after=1)
        message = server.send_photo(ALICE, photos[0])
        await server.wait_for_replies([message])

    refused, sent = server.calls_to("sendMessage")
    assert (refused.status, sent.status) == (429, 200)
    assert sent.params == refused.params
    assert sent.at - refused.at >= 1.0  # waited the retry_after Telegram asked for


async def test_failed_send_is_logged_once_without_the_token(
    server: FakeBotApi, start_bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    echo = f"Bad Request: POST /bot{server.token}/sendMessage refused"
    async with start_bot():
        server.fail_next("sendMessage", error_code=400, retry_after=None, description=echo)
        command = server.send_text(ALICE, "/help")
        await server.wait_for(lambda: bool(server.calls_to("sendMessage")))

    assert server.replies_to(command) == []
    (failure,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    line = failure.getMessage()
    assert "kind=telegram error=BadRequest" in line and "<token>" in line
    assert all(server.token.lower() not in r.getMessage().lower() for r in caplog.records)


async def test_timed_out_download_is_retried_with_longer_timeout(
    server: FakeBotApi, start_bot, captioner: Captioner, photos: list[bytes]
) -> None:
    async with start_bot(read_timeout_s=0.5):
        message = server.send_photo(ALICE, photos[5])
        file_id = message["photo"][-1]["file_id"]
        server.delay_download(file_id, seconds=1.2)
        await server.wait_for_replies([message])

    downloads = server.calls_to(DOWNLOAD)
    assert len(downloads) == 2
    assert downloads[0].params == downloads[1].params
    assert reply_text(server, message) == captioner.caption(photos[5]).text


async def test_failed_download_twice_gets_an_apology(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    async with start_bot():
        message = server.send_photo(ALICE, photos[6])
        server.fail_download(message["photo"][-1]["file_id"], status=502, times=2)
        await server.wait_for_replies([message])

    assert len(server.calls_to(DOWNLOAD)) == 2
    assert reply_text(server, message) == messages.DOWNLOAD_FAILED


async def test_user_over_inflight_limit_is_asked_to_wait(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    async with start_bot(per_user_inflight=1):
        sent = [server.send_photo(ALICE, p) for p in photos[:3]]
        await server.wait_for_replies(sent)

    texts = [reply_text(server, m) for m in sent]
    assert texts.count(messages.BUSY_USER) == 2
    assert len(server.calls_to("getFile")) == 1  # refused photos are never downloaded


async def test_start_is_answered_while_another_users_ten_photos_are_processing(
    server: FakeBotApi, start_bot, photos: list[bytes]
) -> None:
    # One batch of ten: /start arrives once all ten are downloaded, as their batch is captioned.
    async with start_bot(max_batch=10, batch_wait_ms=5000, per_user_inflight=10):
        sent = [server.send_photo(BOB, p) for p in photos[:10]]
        await server.wait_for(
            lambda: sum(c.status == 200 for c in server.calls_to(DOWNLOAD)) == 10
        )
        start = server.send_text(ALICE, "/start")
        replies = await server.wait_for_replies(sent)
        await server.wait_for_replies([start])

    assert all(r.params["text"] != messages.BUSY_USER for r in replies)
    start_reply = server.replies_to(start)[0]
    assert start_reply.seq < max(r.seq for r in replies)


def test_serve_without_token_names_the_variable(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(config.bot.token_env, raising=False)

    with pytest.raises(
        MissingTokenError, match=f"set the environment variable {config.bot.token_env}"
    ):
        serve(config)  # fails before loading any model or touching the network
    assert issubclass(MissingTokenError, ConfigError)  # the CLI prints these without traceback


@contextlib.contextmanager
def server_in_thread(**bot_settings: object) -> Iterator[FakeBotApi]:
    """The fake Bot API on its own event loop, for code that runs its own (``serve``)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-bot-api", daemon=True)
    thread.start()
    server = FakeBotApi()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def config_for(config: Config, base_url: str, base_file_url: str) -> Config:
    bot_config = dataclasses.replace(config.bot, base_url=base_url, base_file_url=base_file_url)
    return dataclasses.replace(config, bot=bot_config)


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading the captioner fail loudly: a bad start must be found before it."""

    def refuse(*args: object, **kwargs: object) -> Captioner:
        raise AssertionError("serve loaded the model before checking the Bot API")

    monkeypatch.setattr(Captioner, "from_checkpoint", refuse)


@pytest.mark.parametrize("case", ["wrong", "revoked"])
def test_serve_with_a_rejected_token_says_so_in_one_line_without_it(
    case: str,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_model_load: None,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    with server_in_thread() as server:
        token = "1:wrong" if case == "wrong" else server.token
        if case == "revoked":
            server.revoke_token()
        monkeypatch.setenv(config.bot.token_env, token)

        with pytest.raises(BotStartError) as refusal:
            serve(config_for(config, server.base_url, server.base_file_url))

        assert [c.status for c in server.calls_to("getMe")] == [401]
    text = str(refusal.value)
    assert f"the Bot API server at {server.base_url} rejected the token in " in text
    assert config.bot.token_env in text and "\n" not in text
    assert token not in text and "wrong" not in text
    assert refusal.value.__cause__ is None and refusal.value.__suppress_context__
    assert isinstance(refusal.value, CaptionbotError)  # the CLI prints it as one line, exit 2
    assert all(token not in r.getMessage() for r in caplog.records)


def test_serve_with_the_bot_api_unreachable_names_the_address(
    config: Config, monkeypatch: pytest.MonkeyPatch, no_model_load: None
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/bot"
    monkeypatch.setenv(config.bot.token_env, "123:secret-token")

    with pytest.raises(BotStartError) as refusal:
        serve(config_for(config, base_url, f"http://127.0.0.1:{port}/file/bot"))

    text = str(refusal.value)
    assert text.startswith(f"cannot reach the Bot API at {base_url}: ")
    assert len(text) > len(f"cannot reach the Bot API at {base_url}: ")  # with a reason
    assert "secret-token" not in text and "\n" not in text


def test_serve_against_a_server_that_is_no_bot_api_says_both_causes_in_one_line(
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    # At the CLI's default level: PTB's own debug lines hold the Bot API URL, token included.
    caplog.set_level(logging.INFO, logger="telegram")
    with server_in_thread() as server:
        server.answer_as_a_web_server()
        monkeypatch.setenv(config.bot.token_env, server.token)

        with pytest.raises(BotStartError) as refusal:
            serve(config_for(config, server.base_url, server.base_file_url))

        assert [c.status for c in server.calls_to("getMe")] == [404]
    text = str(refusal.value)
    assert text == (
        f"the Bot API server at {server.base_url} rejected the token in {config.bot.token_env} "
        f"(check it with @BotFather), or {server.base_url} is not a Bot API server"
    )
    assert server.token not in text and "\n" not in text
    assert refusal.value.__cause__ is None and refusal.value.__suppress_context__
    assert "Traceback" not in caplog.text + capsys.readouterr().err
    assert all(r.exc_info is None for r in caplog.records)
    assert all(server.token not in r.getMessage() for r in caplog.records)
    assert logging.getLogger(PTB_REQUEST_LOGGER).filters == []  # quiet for the check only


@pytest.mark.parametrize(
    "token", ["123456:abc def", "123456:abc\ndef", "abc:123456", "123456", "123456:ab/c"]
)
def test_serve_with_a_malformed_token_says_so_before_any_request(
    token: str,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_model_load: None,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    with server_in_thread() as server:
        monkeypatch.setenv(config.bot.token_env, token)

        with pytest.raises(MalformedTokenError) as refusal:
            serve(config_for(config, server.base_url, server.base_file_url))

        assert server.calls == []
    text = str(refusal.value)
    assert f"the environment variable {config.bot.token_env} does not hold a bot token" in text
    assert "\n" not in text and "abc" not in text and "123456" not in text
    assert isinstance(refusal.value, ConfigError)  # the CLI prints it as one line, exit 2
    assert all(token not in r.getMessage() for r in caplog.records)


async def test_check_bot_api_refuses_a_malformed_token_itself(config: Config) -> None:
    with pytest.raises(MalformedTokenError, match=config.bot.token_env):
        await check_bot_api(config.bot, "123456:abc def")
