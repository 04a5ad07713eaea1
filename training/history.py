"""A run's per-epoch history on disk: JSON, CSV, and PNG plots a person can read.

Loss and accuracy (train and dev, over real tokens) go in one figure per run, dev BLEU in
another, rewritten after every epoch so an interrupted run's files are always current.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from captioner.atomic import atomic_path, write_text_atomic
from training.evaluate import BLEU_WEIGHTS

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
HISTORY_PLOT = "history.png"
BLEU_PLOT = "bleu.png"

HISTORY_FIELDS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "dev_loss",
    "dev_accuracy",
    *(f"dev_{name}" for name in BLEU_WEIGHTS),
    "seconds",
    "best",
]


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write the per-epoch history as JSON and CSV, and its plots as PNG."""
    write_text_atomic(run_dir / HISTORY_JSON, json.dumps(history, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(run_dir / HISTORY_CSV, buffer.getvalue())
    plot_history(history, run_dir / HISTORY_PLOT, run_dir / BLEU_PLOT)


def plot_history(history: list[dict[str, Any]], curves_path: Path, bleu_path: Path) -> None:
    """Loss and accuracy per epoch (train and dev) in one PNG; dev BLEU per scored epoch in
    another (written only once an epoch has been scored)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for key, label in (("train", "train"), ("dev", "dev")):
        loss_axes.plot(epochs, [r[f"{key}_loss"] for r in history], marker="o", label=label)
        accuracy_axes.plot(
            epochs, [r[f"{key}_accuracy"] for r in history], marker="o", label=label
        )
    best = [r["epoch"] for r in history if r.get("best")]
    for axes in (loss_axes, accuracy_axes):
        if best:
            axes.axvline(best[-1], color="grey", linestyle=":", label=f"best (epoch {best[-1]})")
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend()
    loss_axes.set_ylabel("cross-entropy per real token")
    loss_axes.set_title("Loss")
    accuracy_axes.set_ylabel("next-word accuracy (real tokens)")
    accuracy_axes.set_title("Accuracy")
    figure.tight_layout()
    with atomic_path(curves_path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)

    scored = [r for r in history if r.get("dev_bleu4") is not None]
    if not scored:
        return
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    for name in BLEU_WEIGHTS:
        axes.plot(
            [r["epoch"] for r in scored],
            [r[f"dev_{name}"] for r in scored],
            marker="o",
            label=name.upper().replace("BLEU", "BLEU-"),
        )
    if best:
        axes.axvline(best[-1], color="grey", linestyle=":", label=f"best (epoch {best[-1]})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("corpus BLEU (dev, greedy)")
    axes.set_title("Dev BLEU per scored epoch")
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.tight_layout()
    with atomic_path(bleu_path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
