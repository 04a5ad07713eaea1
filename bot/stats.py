"""Live serving figures and the text of the /stats report.

``ServingStats`` counts what the bot has done since start-up (photos captioned, refusals and
errors by kind, caption latencies); ``format_stats`` joins them with the checkpoint's manifest
into one Telegram message.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MESSAGE_LIMIT = 4096  # Telegram's longest text message
NOT_MEASURED = "not measured"


class ServingStats:
    """Counters since start-up; latencies are those of the most recent captions."""

    # Limitation: p50/p95 are over the last `window` captions, not the whole uptime.
    def __init__(self, window: int = 2000) -> None:
        self.started = time.monotonic()
        self.photos_captioned = 0
        self.errors: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=window)

    def record_caption(self, seconds: float) -> None:
        """A photo answered with a caption, ``seconds`` after its update arrived."""
        self.photos_captioned += 1
        self._latencies.append(seconds)

    def record_error(self, kind: str) -> None:
        """A photo answered with a refusal or an error of this kind."""
        self.errors[kind] += 1

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def latency_percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100, nearest rank) of recent caption latencies, in seconds."""
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]


def format_stats(
    manifest: Mapping[str, Any],
    checkpoint: Path | str,
    stats: ServingStats,
    *,
    queue_depth: int,
    queue_size: int,
) -> str:
    """The /stats report: the checkpoint and its measured quality, then live figures."""
    encoder = manifest.get("encoder") or {}
    data = manifest.get("data") or {}
    metrics = manifest.get("metrics") or {}
    training = manifest.get("training") or {}
    epochs = metrics.get("epochs", training.get("epochs"))

    lines = [
        f"Checkpoint: {Path(checkpoint).name}",
        f"Encoder: {encoder.get('name', 'unknown')}",
        f"Epochs: {_value(epochs)}",
        f"Data: {data.get('dataset', 'unknown')}, trained on {data.get('train_split', 'unknown')}",
    ]
    lines += _bleu_lines(metrics)
    lines.append(f"Dev masked accuracy: {_value(metrics.get('dev_accuracy'))}")

    p50, p95 = stats.latency_percentile(50), stats.latency_percentile(95)
    latency = f"p50 {p50:.2f} s, p95 {p95:.2f} s" if p50 is not None and p95 is not None else "-"
    errors = ", ".join(f"{kind} {n}" for kind, n in stats.errors.most_common()) or "none"
    lines += [
        "",
        f"Uptime: {_duration(stats.uptime_s)}",
        f"Photos captioned: {stats.photos_captioned}",
        f"Errors: {errors}",
        f"Caption latency: {latency}",
        f"Queue: {queue_depth} waiting (limit {queue_size})",
    ]
    text = "\n".join(lines)
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 1] + "…"
    return text


def _bleu_lines(metrics: Mapping[str, Any]) -> list[str]:
    # Each evaluation is its own "bleu..." entry (bleu, bleu_beam3, bleu_dev, ...); the test
    # split's come first, then by beam size.
    runs = [
        run
        for key, run in metrics.items()
        if key.startswith("bleu") and isinstance(run, Mapping) and "bleu1" in run
    ]
    runs.sort(
        key=lambda run: (
            run.get("split") != "test",
            str(run.get("split")),
            run.get("beam_size", 1),
        )
    )
    lines = []
    for run in runs:
        scores = " ".join(f"B{n} {_value(run.get(f'bleu{n}'))}" for n in range(1, 5))
        where = ", ".join(
            part
            for part in (
                str(run["split"]) if "split" in run else "",
                f"{run['images']} images" if "images" in run else "",
                f"beam {run['beam_size']}" if "beam_size" in run else "",
            )
            if part
        )
        lines.append(f"BLEU ({where}): {scores}" if where else f"BLEU: {scores}")
    return lines or [f"BLEU: {NOT_MEASURED}"]


def _value(value: Any) -> str:
    if value is None:
        return NOT_MEASURED
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"
