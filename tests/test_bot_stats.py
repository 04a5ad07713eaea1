"""Tests of the bot's live figures and of the /stats report text."""

from __future__ import annotations

from bot.stats import MESSAGE_LIMIT, ServingStats, format_stats

MANIFEST = {
    "encoder": {"name": "squeezenet", "feature_dim": 512},
    "data": {"dataset": "flickr8k", "train_split": "train"},
    "training": {"epochs": 20},
    "metrics": {
        "bleu": {
            "split": "test",
            "images": 1000,
            "beam_size": 3,
            "bleu1": 0.5512,
            "bleu2": 0.3301,
            "bleu3": 0.2004,
            "bleu4": 0.1203,
        },
        "dev_accuracy": 0.4123,
        "epochs": 12,
    },
}


def test_report_shows_the_checkpoints_measured_quality() -> None:
    report = format_stats(
        MANIFEST, "checkpoints/flickr8k-squeezenet", ServingStats(), queue_depth=3, queue_size=64
    )

    assert report.splitlines()[:6] == [
        "Checkpoint: flickr8k-squeezenet",
        "Encoder: squeezenet",
        "Epochs: 12",
        "Data: flickr8k, trained on train",
        "BLEU (test, 1000 images, beam 3): B1 0.551 B2 0.330 B3 0.200 B4 0.120",
        "Dev masked accuracy: 0.412",
    ]
    assert "Photos captioned: 0" in report
    assert "Errors: none" in report
    assert "Caption latency: -" in report
    assert "Queue: 3 waiting (limit 64)" in report


def test_report_lists_one_bleu_line_per_evaluation_test_split_first() -> None:
    # The layout training writes: one "bleu..." entry per split and beam size.
    beam3 = MANIFEST["metrics"]["bleu"]
    greedy = dict(beam3, beam_size=1)
    dev = dict(beam3, split="dev", beam_size=1)
    metrics = {"bleu_dev": dev, "bleu_beam3": beam3, "bleu": greedy, "bleu_note": "x"}
    manifest = {**MANIFEST, "metrics": metrics}

    report = format_stats(manifest, "ckpt", ServingStats(), queue_depth=0, queue_size=1)

    bleu_lines = [line for line in report.splitlines() if line.startswith("BLEU")]
    assert [line.split(":")[0] for line in bleu_lines] == [
        "BLEU (test, 1000 images, beam 1)",
        "BLEU (test, 1000 images, beam 3)",
        "BLEU (dev, 1000 images, beam 1)",
    ]
    assert "Dev masked accuracy: not measured" in report
    assert "Epochs: 20" in report  # from the training section when metrics lack it


def test_latency_percentiles_and_errors_by_kind() -> None:
    stats = ServingStats()
    for ms in range(1, 101):
        stats.record_caption(ms / 1000)
    stats.record_error("truncated")
    stats.record_error("busy_user")
    stats.record_error("truncated")

    assert stats.latency_percentile(50) == 0.050
    assert stats.latency_percentile(95) == 0.095
    report = format_stats({}, "ckpt", stats, queue_depth=0, queue_size=1)
    assert "Caption latency: p50 0.05 s, p95 0.10 s" in report
    assert "Errors: truncated 2, busy_user 1" in report
    assert "Photos captioned: 100" in report
    assert "BLEU: not measured" in report


def test_report_never_exceeds_one_telegram_message() -> None:
    stats = ServingStats()
    for n in range(1000):
        stats.record_error(f"kind_with_a_long_name_{n}")

    report = format_stats(MANIFEST, "ckpt", stats, queue_depth=0, queue_size=1)

    assert len(report) == MESSAGE_LIMIT
    assert report.endswith("…")
