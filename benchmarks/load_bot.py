"""Load benchmark of the bot: many users' photos through the real bot and a fake Bot API.

The bot runs in its own process (real PTB application, real captioner) against the fake Bot
API server from the tests, which runs here with the load driver. Each user sends Flickr8k
test photos, keeping ``--window`` of them in flight; another user sends /start twice a second.
Run it once with micro-batching and once without to see what batching buys:

    python benchmarks/load_bot.py --photos 1000 --users 50
    python benchmarks/load_bot.py --photos 1000 --users 50 --no-batching
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is first imported

from fake_bot_api import ApiCall, FakeBotApi, FakeUser  # noqa: E402

from bot import messages  # noqa: E402
from captioner.config import Config, load_config  # noqa: E402

START_EVERY_S = 0.5
REPLY_TIMEOUT_S = 300.0  # a photo with no reply by then counts as lost


@dataclasses.dataclass
class Outcome:
    """What became of one message: seconds until its reply (None: lost) and the reply."""

    latency: float | None
    text: str | None


def run_bot(config: Config, checkpoint: str | None, token: str, stop: ProcessEvent) -> None:
    """The bot's process: load the captioner, poll the fake server until ``stop`` is set."""
    logging.basicConfig(level=logging.WARNING)
    from bot.app import build_application, running
    from captioner.pipeline import Captioner

    captioner = Captioner.from_checkpoint(checkpoint, config=config)
    application = build_application(config, captioner, token=token)

    async def poll_until_stopped() -> None:
        async with running(application):
            await asyncio.to_thread(stop.wait)

    asyncio.run(poll_until_stopped())


async def send_and_wait(
    server: FakeBotApi, message_of: Callable[[], dict], timeout: float = REPLY_TIMEOUT_S
) -> Outcome:
    """Queue a message (built by ``message_of()``) and wait for the bot's reply to it."""
    sent_at = time.monotonic()
    message = message_of()
    try:
        await server.wait_for(lambda: bool(server.replies_to(message)), timeout)
    except TimeoutError:
        return Outcome(None, None)
    reply = server.replies_to(message)[0]
    return Outcome(reply.at - sent_at, reply.params["text"])


async def user_sends(
    server: FakeBotApi, user: FakeUser, photos: list[bytes], window: int
) -> list[Outcome]:
    """One user's photos, at most ``window`` awaiting a reply at any time."""
    slots = asyncio.Semaphore(window)

    async def one(photo: bytes) -> Outcome:
        async with slots:
            return await send_and_wait(server, lambda: server.send_photo(user, photo))

    return await asyncio.gather(*(one(photo) for photo in photos))


async def probe_start(server: FakeBotApi, done: asyncio.Event) -> list[Outcome]:
    """/start from a user with no photos, every START_EVERY_S while the load runs."""
    prober = FakeUser(999_999, "Prober")
    outcomes = []
    while not done.is_set():
        outcomes.append(await send_and_wait(server, lambda: server.send_text(prober, "/start")))
        try:
            await asyncio.wait_for(done.wait(), START_EVERY_S)
        except TimeoutError:
            pass
    return outcomes


def load_test_photos(config: Config, count: int) -> list[bytes]:
    """``count`` Flickr8k test photos (cycling through the split if it asks for more)."""
    names = (config.data.root / config.data.splits["test"]).read_text().split()
    images = config.data.root / config.data.images_dir
    unique = [(images / name).read_bytes() for name in names[: min(count, len(names))]]
    return [unique[i % len(unique)] for i in range(count)]


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p95 = np.percentile(values, [50, 95])
    return f"p50 {p50:.3f} s, p95 {p95:.3f} s, max {max(values):.3f} s (n={len(values)})"


@contextlib.asynccontextmanager
async def bot_process(config: Config, checkpoint: str | None) -> AsyncIterator[FakeBotApi]:
    """A fake Bot API here and the bot polling it from its own process, until the block ends."""
    async with FakeBotApi() as server:
        urls = {"base_url": server.base_url, "base_file_url": server.base_file_url}
        config = dataclasses.replace(config, bot=dataclasses.replace(config.bot, **urls))
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        process = context.Process(
            target=run_bot, args=(config, checkpoint, server.token, stop), daemon=True
        )
        process.start()
        try:
            await server.wait_for(lambda: bool(server.calls_to("getUpdates")), timeout=600)
            yield server
        finally:
            stop.set()
            await asyncio.to_thread(process.join, 60)
            if process.is_alive():
                process.kill()


async def benchmark(args: argparse.Namespace, config: Config, photos: list[bytes]) -> int:
    """Send the photos, print what came back; exit status 2 when a reply was lost."""
    async with bot_process(config, args.checkpoint) as server:
        warmup = await send_and_wait(server, lambda: server.send_photo(FakeUser(1), photos[0]))
        if warmup.latency is None:
            print("the bot did not answer the warm-up photo", file=sys.stderr)
            return 1

        users = [FakeUser(10_000 + i, f"User{i}") for i in range(args.users)]
        shares = [photos[i :: args.users] for i in range(args.users)]
        done = asyncio.Event()
        prober = asyncio.create_task(probe_start(server, done))
        started = time.monotonic()
        per_user = await asyncio.gather(
            *(user_sends(server, u, s, args.window) for u, s in zip(users, shares, strict=True))
        )
        wall = time.monotonic() - started
        done.set()
        starts = await prober

    outcomes = [outcome for user in per_user for outcome in user]
    answered = [o for o in outcomes if o.latency is not None]
    busy = sum(o.text in (messages.BUSY_USER, messages.BUSY_QUEUE) for o in answered)
    lost = len(outcomes) - len(answered)
    batching = (
        "off (max_batch 1)"
        if config.bot.max_batch == 1
        else f"on (max_batch {config.bot.max_batch}, wait {config.bot.batch_wait_ms} ms)"
    )
    print(f"photos:              {len(outcomes)} from {args.users} users, window {args.window}")
    print(f"micro-batching:      {batching}")
    print(f"checkpoint:          {args.checkpoint or 'packaged default'}")
    print(f"cpu cores:           {os.cpu_count()}")
    print(f"photos answered:     {len(answered)} ({len(answered) - busy} captions, {busy} busy)")
    print(f"lost replies:        {lost}")
    print(f"wall time:           {wall:.1f} s")
    print(f"throughput:          {len(answered) / wall:.1f} photos/s")
    print(f"photo latency:       {percentiles([o.latency for o in answered])}")
    start_latencies = [o.latency for o in starts if o.latency is not None]
    print(f"/start while loaded: {percentiles(start_latencies)}")
    return 0 if lost == 0 else 2


async def transcript(args: argparse.Namespace, config: Config, photo: bytes) -> int:
    """Print the Bot API requests of one short exchange: /start, then a photo."""
    user = FakeUser(7, "Ada")
    async with bot_process(config, args.checkpoint) as server:
        steps = [
            ("/start", lambda: server.send_text(user, "/start")),
            ("a photo", lambda: server.send_photo(user, photo)),
        ]
        print("bot starts")
        print_calls(server.calls)
        for label, send in steps:
            first = len(server.calls)
            print(f"{user.first_name} sends {label}")
            await send_and_wait(server, send)
            print_calls(server.calls[first:])
    return 0


def print_calls(calls: list[ApiCall]) -> None:
    """One line per request; repeated long polls are left out after the first."""
    polled = False
    for call in calls:
        if call.method == "getUpdates" and polled:
            continue
        polled = polled or call.method == "getUpdates"
        answer = f"HTTP {call.status}" if call.status else "(waiting)"
        print(f"  bot -> {call.method} {describe(call.params)} -> {answer}")


def describe(params: dict) -> str:
    """A request's parameters on one line; long texts are cut."""
    shown = []
    for key, value in params.items():
        if key == "reply_parameters":
            key, value = "reply_to", value["message_id"]
        text = repr(value.replace("\n", " ")) if isinstance(value, str) else str(value)
        shown.append(f"{key}={text if len(text) <= 64 else text[:60] + '...'}")
    return " ".join(shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint directory (default: packaged one)")
    parser.add_argument("--config", help="config file merged over config.yaml")
    parser.add_argument("--photos", type=int, default=1000, help="photos to send in all")
    parser.add_argument("--users", type=int, default=50, help="users sending them")
    parser.add_argument("--window", type=int, default=1, help="photos a user keeps in flight")
    parser.add_argument("--no-batching", action="store_true", help="run with max_batch 1")
    parser.add_argument(
        "--transcript", action="store_true", help="print one short exchange instead of the load"
    )
    args = parser.parse_args(argv)

    config = load_config(args.config)
    if args.no_batching:
        config = dataclasses.replace(config, bot=dataclasses.replace(config.bot, max_batch=1))
    if args.window > config.bot.per_user_inflight:
        parser.error(f"--window is over bot.per_user_inflight ({config.bot.per_user_inflight})")
    photos = load_test_photos(config, args.photos)
    if args.transcript:
        return asyncio.run(transcript(args, config, photos[0]))
    return asyncio.run(benchmark(args, config, photos))


if __name__ == "__main__":
    sys.exit(main())
