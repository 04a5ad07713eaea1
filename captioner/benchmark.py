"""Speed and memory figures for ``captionbot bench``.

Measures encoder throughput at batch 1 and 32, greedy decoding per caption with the carried
LSTM state against re-running the whole prefix, and the process's peak resident memory. The
figures are printed, never asserted: speed targets live here, not in tests.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from captioner.checkpoint import CheckpointError, default_checkpoint_path, load_checkpoint
from captioner.config import Config
from captioner.decoder import build_decoder
from captioner.decoding import StepDecoder, greedy, greedy_full_prefix
from captioner.encoders import build_encoder


def _median_ms(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _decoder_for_bench(config: Config, feature_dim: int) -> tuple[Any, int, str]:
    """The packaged checkpoint's decoder when it fits the encoder, else a random full-size one."""
    try:
        checkpoint = load_checkpoint(config.caption.checkpoint or default_checkpoint_path())
        if checkpoint.manifest["encoder"]["feature_dim"] == feature_dim:
            return checkpoint.model, checkpoint.max_length, str(checkpoint.path.name)
    except CheckpointError:
        pass
    model = build_decoder(
        config.vocabulary.max_words + 4,
        feature_dim,
        config.decoder.embedding_dim,
        config.decoder.units,
        config.decoder.dropout,
    )
    return model, 34, "random-full-size"


def run_benchmark(
    config: Config, encoder_name: str | None = None, weights: str | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one record per measurement, as plain dicts ready for JSON."""
    name = encoder_name or config.encoder.name
    encoder = build_encoder(
        name, weights=weights or config.encoder.weights, weights_dir=config.encoder.weights_dir
    )
    height, width = encoder.input_size
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        images = rng.uniform(0, 255, size=(batch, height, width, 3)).astype(np.float32)
        repeats = 20 if batch == 1 else 3
        ms = _median_ms(lambda images=images: encoder.encode(images), repeats=repeats)
        yield {
            "bench": "encode",
            "encoder": name,
            "weights": encoder.weights_id,
            "batch": batch,
            "ms_per_batch": round(ms, 1),
            "images_per_s": round(batch * 1000 / ms, 1),
        }

    model, max_length, decoder_name = _decoder_for_bench(config, encoder.feature_dim)
    step = StepDecoder(model)
    features = encoder.encode(rng.uniform(0, 255, size=(8, height, width, 3)).astype(np.float32))
    for method, decode in (
        ("cached_state", lambda f: greedy(step, f, max_length)),
        ("full_prefix", lambda f: greedy_full_prefix(model, f, max_length)),
    ):
        times, words = [], []
        rounds = 5 if method == "cached_state" else 1
        decode(features[:1])  # warm-up
        for _ in range(rounds):
            for row in features:
                started = time.perf_counter()
                (caption,) = decode(row[None, :])
                times.append((time.perf_counter() - started) * 1000)
                words.append(len(caption))
        yield {
            "bench": "greedy_decode",
            "method": method,
            "decoder": decoder_name,
            "captions": len(times),
            "median_ms_per_caption": round(statistics.median(times), 2),
            "mean_words": round(float(np.mean(words)), 1),
        }

    yield {"bench": "memory", "peak_rss_mb": round(_peak_rss_mb(), 1)}
