"""Tests of the bot's micro-batcher and per-user limit, with the real captioner behind them.

A thin recorder around ``Captioner.caption_batch`` notes the size of every batch it is given.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.batcher import Busy, MicroBatcher, UserLimit
from captioner.config import Config
from captioner.images import ImageError
from captioner.pipeline import Caption, Captioner

FLICKR_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "images"


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint: Path, config: Config) -> Captioner:
    return Captioner.from_checkpoint(tiny_checkpoint, config=config)


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    if not FLICKR_IMAGES.is_dir():
        pytest.skip(f"{FLICKR_IMAGES} is not here")
    return [path.read_bytes() for path in sorted(FLICKR_IMAGES.iterdir())[:6]]


class BatchRecorder:
    """Calls the captioner, remembering the size of each batch."""

    def __init__(self, captioner: Captioner) -> None:
        self.captioner = captioner
        self.sizes: list[int] = []

    def __call__(self, images: list[bytes]) -> list[Caption | ImageError]:
        self.sizes.append(len(images))
        return self.captioner.caption_batch(images)


async def submit_all(batcher: MicroBatcher, images: list[bytes]) -> list[object]:
    """Submit images at the same moment; a refusal comes back in the image's place."""
    return await asyncio.gather(
        *(batcher.submit(image) for image in images), return_exceptions=True
    )


async def test_images_queued_together_are_captioned_in_batches_up_to_max_batch(
    captioner: Captioner, images: list[bytes]
) -> None:
    images = images[:2] + [b"not an image"] + images[2:5]
    recorder = BatchRecorder(captioner)
    batcher = MicroBatcher(recorder, queue_size=16, max_batch=4, batch_wait_ms=1000)
    try:
        results = await submit_all(batcher, images)
    finally:
        await batcher.close()

    assert recorder.sizes == [4, 2]
    expected = captioner.caption_batch(images[:4]) + captioner.caption_batch(images[4:])
    assert isinstance(results[2], ImageError) and results[2].kind == "not_image"
    for result, reference in zip(results, expected, strict=True):
        if isinstance(reference, Caption):
            assert result == reference


async def test_max_batch_one_captions_one_image_at_a_time(
    captioner: Captioner, images: list[bytes]
) -> None:
    recorder = BatchRecorder(captioner)
    batcher = MicroBatcher(recorder, queue_size=16, max_batch=1, batch_wait_ms=1000)
    try:
        results = await submit_all(batcher, images[:3])
    finally:
        await batcher.close()

    assert recorder.sizes == [1, 1, 1]
    assert all(isinstance(result, Caption) for result in results)


async def test_full_queue_refuses_with_busy(captioner: Captioner, images: list[bytes]) -> None:
    batcher = MicroBatcher(captioner.caption_batch, queue_size=2, max_batch=4, batch_wait_ms=0)
    try:
        results = await submit_all(batcher, images[:4])
    finally:
        await batcher.close()

    assert [type(result) for result in results] == [Caption, Caption, Busy, Busy]
    assert {result.reason for result in results[2:]} == {"queue"}


async def test_a_failing_batch_fails_every_image_in_it(
    captioner: Captioner, images: list[bytes]
) -> None:
    batcher = MicroBatcher(captioner.caption_batch, queue_size=4, max_batch=4, batch_wait_ms=500)
    not_bytes = 42  # a caller's bug: the captioner raises TypeError for the whole batch
    try:
        results = await submit_all(batcher, [images[0], not_bytes, images[1]])
        after = await batcher.submit(images[2])
    finally:
        await batcher.close()

    assert [type(result) for result in results] == [TypeError] * 3
    assert isinstance(after, Caption)  # the worker carries on


def test_user_limit_admits_up_to_per_user_and_frees_slots() -> None:
    limit = UserLimit(per_user=2)
    with limit.admit(1), limit.admit(1):
        with pytest.raises(Busy) as refused, limit.admit(1):
            pass
        assert refused.value.reason == "user"
        with limit.admit(2):  # another user is not held back
            assert limit.inflight(2) == 1
    assert limit.inflight(1) == 0
    with pytest.raises(RuntimeError), limit.admit(1):
        raise RuntimeError("handler failed")
    assert limit.inflight(1) == 0  # a failure frees the slot too
