"""Admission and micro-batching of photos on their way to the captioner.

Photos wait in a bounded queue; one worker takes up to ``max_batch`` of them that arrive within
``batch_wait_ms`` of each other and captions them together on a single worker thread, so the
event loop never waits for inference. A per-user limit keeps one sender from filling the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

R = TypeVar("R")


class Busy(Exception):
    """A photo refused for now; ``reason`` is "user" (too many in flight) or "queue" (full)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"busy: {reason}")
        self.reason = reason


@dataclass
class _Job(Generic[R]):
    image: bytes
    future: asyncio.Future[R]


class MicroBatcher(Generic[R]):
    """Runs ``caption_batch`` on batches of queued images, off the event loop.

    Args:
        caption_batch: captions a list of encoded images, one result per image, in order;
            called on one worker thread only.
        queue_size: images that may wait; beyond it ``submit`` raises ``Busy("queue")``.
        max_batch: most images captioned together; 1 disables micro-batching.
        batch_wait_ms: how long the first image of a batch waits for others to join it.
    """

    def __init__(
        self,
        caption_batch: Callable[[list[bytes]], Sequence[R]],
        *,
        queue_size: int,
        max_batch: int,
        batch_wait_ms: int,
    ) -> None:
        if queue_size < 1 or max_batch < 1 or batch_wait_ms < 0:
            raise ValueError("queue_size and max_batch must be >= 1, batch_wait_ms >= 0")
        self._caption_batch = caption_batch
        self._queue: asyncio.Queue[_Job[R]] = asyncio.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self.max_batch = max_batch
        self._wait_s = batch_wait_ms / 1000
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Images waiting for a batch (not counting the batch being captioned)."""
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        """True when one more image would be refused."""
        return self._queue.full()

    async def submit(self, image: bytes) -> R:
        """Caption one image with whatever else is queued; raises Busy when the queue is full."""
        self._start()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(image, future))
        except asyncio.QueueFull:
            raise Busy("queue") from None
        return await future

    async def close(self) -> None:
        """Stop the worker; images still queued are answered with CancelledError."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        if self._executor is not None:
            # A batch already running finishes on its thread; nothing waits for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _start(self) -> None:
        # Started on first use, so the worker lives on the loop that serves the updates.
        if self._worker is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captioner")
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            started = loop.time()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._caption_batch, [job.image for job in batch]
                )
                logger.debug(
                    "batch captioned images=%d ms=%d", len(batch), (loop.time() - started) * 1000
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} images")
            except Exception as exc:  # every waiting sender hears of the failure
                logger.error("batch failed images=%d error=%s", len(batch), type(exc).__name__)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job, result in zip(batch, results, strict=True):
                    if not job.future.done():  # its sender may have given up
                        job.future.set_result(result)
            finally:
                for job in batch:  # only when the worker itself was cancelled mid-batch
                    if not job.future.done():
                        job.future.cancel()

    async def _collect(self) -> list[_Job[R]]:
        """The next batch: the first queued image, then those that join it in time."""
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch


class UserLimit:
    """Counts each user's photos in flight and refuses one beyond ``per_user``."""

    # Limitation: counts live in this process; several bot processes would each allow the limit.

    def __init__(self, per_user: int) -> None:
        if per_user < 1:
            raise ValueError("per_user must be >= 1")
        self.per_user = per_user
        self._inflight: Counter[int] = Counter()

    def inflight(self, user_id: int) -> int:
        return self._inflight[user_id]

    @contextlib.contextmanager
    def admit(self, user_id: int) -> Iterator[None]:
        """Hold one of the user's slots for the block; raises Busy("user") when none is free."""
        if self._inflight[user_id] >= self.per_user:
            raise Busy("user")
        self._inflight[user_id] += 1
        try:
            yield
        finally:
            self._inflight[user_id] -= 1
            if not self._inflight[user_id]:
                del self._inflight[user_id]
