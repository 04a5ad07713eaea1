"""Fitting the caption decoder on Flickr8k with teacher forcing, resumably.

One LSTM pass per caption (inputs ``[START] + words``, targets ``words + [END]``), loss and
accuracy over real tokens only, batches padded to their own longest caption. After every
epoch the model, optimizer and history are saved atomically in the run dir, so ``resume``
continues from the last completed epoch with the result an uninterrupted run would have had;
the best epoch by dev loss is kept as a checkpoint, which is evaluated on test at the end.
A run holds an exclusive lock on its run dir throughout, so a second run there is refused.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from captioner.atomic import atomic_path
from captioner.checkpoint import (
    MANIFEST_FILE,
    MODEL_FILE,
    VOCABULARY_FILE,
    build_manifest,
    save_checkpoint,
    update_manifest_metrics,
)
from captioner.config import Config, TrainingConfig
from captioner.decoder import build_decoder
from captioner.encoders import ENCODERS
from captioner.errors import CaptionbotError
from captioner.vocabulary import Vocabulary
from training.batches import (
    CaptionSet,
    batch_order,
    encode_captions,
    iterate_batches,
    max_caption_length,
)
from training.cleaning import clean_caption
from training.evaluate import (
    BLEU_WEIGHTS,
    NextWordScorer,
    bleu_for_split,
    bleu_metrics_key,
    evaluate_checkpoint,
    manifest_bleu,
)
from training.features import (
    FeatureStore,
    default_cache_dir,
    ensure_cache_dir,
    features_for,
)
from training.flickr8k import DatasetPaths, SplitData, load_splits
from training.history import write_history
from training.masked import masked_sums

logger = logging.getLogger(__name__)

STATE_FILE = "state.npz"
# Held with flock for the whole run; the file itself is removed when the run ends.
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoint"
EVAL_BATCH = 256


class TrainingError(CaptionbotError):
    """A run that cannot start or resume as asked; the message says what to change."""


def _new_state() -> dict[str, Any]:
    """The progress of a run before its first epoch; a saved state holds the same keys."""
    return {"epoch": 0, "history": [], "best_epoch": 0, "best_dev_loss": None, "bad_epochs": 0,
            "stopped_early": False, "test_bleu": {}, "test_bleu_epoch": 0}  # fmt: skip


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        checkpoint: the best checkpoint (lowest dev loss).
        run_dir: folder of the run (state, history, plots, evaluation files).
        best_epoch: the epoch the checkpoint comes from (1-based).
        epochs: epochs completed.
        stopped_early: early stopping ended the run before its last epoch.
        history: one record per epoch.
        test_bleu: "greedy" / "beam3" / ... -> ``{"split", "images", "beam", "bleu1".."bleu4"}``.
        epochs_trained: epochs trained by this call (0 when a resumed run had none left).
    """

    checkpoint: Path
    run_dir: Path
    best_epoch: int
    epochs: int
    stopped_early: bool
    history: list[dict[str, Any]]
    test_bleu: dict[str, dict[str, Any]] = field(default_factory=dict)
    epochs_trained: int = 0


@dataclass
class TrainingData:
    """Everything a run derives from the dataset, the same on every (re)start.

    Attributes:
        splits: train, dev and test splits as loaded.
        store: features of their images.
        vocabulary: the most frequent training words.
        max_length: longest training caption in words, capped by the config.
        train: training captions with their features.
        dev: dev captions with their features.
    """

    splits: dict[str, SplitData]
    store: FeatureStore
    vocabulary: Vocabulary
    max_length: int
    train: CaptionSet
    dev: CaptionSet


def prepare_data(
    config: Config,
    encoder_name: str,
    cache_dir: Path,
    limit_images: int | None = None,
    progress: bool = True,
) -> TrainingData:
    """Load the splits, their features (cached or extracted) and the training vocabulary.

    Images without features (unreadable files) are left out of every split.
    """
    splits = load_splits(DatasetPaths.from_config(config.data), limit_images=limit_images)
    all_images = {
        image: split.image_path(image) for split in splits.values() for image in split.images
    }
    store = features_for(all_images, config, encoder_name, cache_dir, progress=progress)
    train_images = store.usable(splits["train"].images)
    dev_images = store.usable(splits["dev"].images)
    if not train_images or not dev_images:
        raise TrainingError("no usable train or dev images (see the warnings above)")

    # The vocabulary and the length cap come from the training captions only.
    train_words = [
        clean_caption(c) for image in train_images for c in splits["train"].captions[image]
    ]
    vocabulary = Vocabulary.build(train_words, config.vocabulary.max_words)
    max_length = max_caption_length(train_words, config.vocabulary.max_length_cap)
    train_set = encode_captions(
        splits["train"].captions, train_images, store.get(train_images), vocabulary, max_length
    )
    dev_set = encode_captions(
        splits["dev"].captions, dev_images, store.get(dev_images), vocabulary, max_length
    )
    logger.info(
        "training data train_images=%d train_captions=%d dev_images=%d vocab=%d max_length=%d",
        len(train_images),
        len(train_set),
        len(dev_images),
        vocabulary.size,
        max_length,
    )
    return TrainingData(splits, store, vocabulary, max_length, train_set, dev_set)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named by ``training.strategy``."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise TrainingError(f"unknown training.strategy '{name}' (use 'default' or 'mirrored')")


def train(
    config: Config,
    encoder_name: str | None = None,
    epochs: int | None = None,
    resume: bool = False,
    run_dir: Path | None = None,
    limit_images: int | None = None,
    *,
    cache_dir: Path | None = None,
    bleu_every: int = 1,
    evaluate_test: bool = True,
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a decoder on the configured dataset and write its best checkpoint.

    Args:
        config: settings; ``config.training`` gives batch size, learning rate, patience
            (epochs without a lower dev loss before stopping; 0 never stops early), seed,
            strategy and the beam sizes evaluated at the end.
        encoder_name: encoder whose features to train on (default: ``config.encoder.name``).
        epochs: most epochs (default: ``config.training.epochs``); on resume, may extend a
            run.
        resume: continue the run in ``run_dir`` from its last completed epoch.
        run_dir: folder of the run (default: ``config.training.run_dir``).
        limit_images: use only the first N images of each split (quick runs).
        cache_dir: feature cache folder (default: ``features/`` beside the run dir).
        bleu_every: score dev BLEU (greedy) every N epochs; 0 never.
        evaluate_test: evaluate the best checkpoint on test at the end.
        progress: progress bars and one printed line per epoch.
        on_epoch_end: called with each epoch's record after the epoch is saved.

    Returns:
        The run's result, with the checkpoint path and its test BLEU.

    Raises:
        TrainingError: epochs, limit_images or the encoder name cannot make a run; the run
            dir is a file or cannot be created; it holds another run (without ``resume``),
            or one whose state is unreadable, whose settings differ or whose checkpoint is
            lost (with ``resume``); another run holds the run dir's lock. A run dir created
            here is removed again while empty.
        DatasetError: the dataset's files cannot be read.
        FeatureError: the feature cache folder cannot be created or written.
    """
    started = time.perf_counter()
    settings = config.training
    encoder_name = encoder_name or config.encoder.name
    epochs = epochs if epochs is not None else settings.epochs
    _check_arguments(encoder_name, epochs, limit_images, bleu_every)
    run_dir = Path(run_dir if run_dir is not None else settings.run_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(config)
    _check_run_dir(run_dir)
    state_path = run_dir / STATE_FILE

    # The lock comes before the state is looked at: another run may be about to write it.
    with _run_dir_removed_if_unused(run_dir), _run_dir_locked(run_dir):
        if state_path.exists() and not resume:
            raise TrainingError(
                f"{run_dir} already holds a training run; pass --resume to continue it, or "
                f"choose another --run-dir"
            )
        saved = None
        if resume and state_path.exists():
            # Read before the data: a damaged state is reported before minutes of extraction.
            saved = _read_state(state_path)
        elif resume:
            logger.info("nothing to resume run_dir=%s; starting a new run", run_dir)

        ensure_cache_dir(cache_dir)
        data = prepare_data(config, encoder_name, cache_dir, limit_images, progress)
        fingerprint = _fingerprint(data, config, encoder_name)
        strategy = make_strategy(settings.strategy)
        keras.utils.set_random_seed(settings.seed)
        with strategy.scope():
            model = build_decoder(
                data.vocabulary.size,
                data.store.feature_dim,
                embedding_dim=config.decoder.embedding_dim,
                units=config.decoder.units,
                dropout=config.decoder.dropout,
            )
            optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
            optimizer.build(model.trainable_variables)

        state = _new_state()
        checkpoint_path = run_dir / CHECKPOINT_DIR
        if saved is not None:
            state = _apply_state(state_path, saved, model, optimizer, fingerprint)
            logger.info("run resumed run_dir=%s completed_epochs=%d", run_dir, state["epoch"])
            if _restore_checkpoint(checkpoint_path, state, model, data, config, encoder_name,
                                   limit_images):  # fmt: skip
                _save_state(state_path, model, optimizer, fingerprint, state)
            _report_nothing_left(run_dir, state, epochs, settings.patience)

        fitter = Fitter(model, optimizer, strategy, data.store.feature_dim)
        scorer = NextWordScorer(model)
        first_epoch = state["epoch"]
        while not state["stopped_early"] and state["epoch"] < epochs:
            epoch = state["epoch"] + 1
            record = _run_epoch(
                fitter, scorer, data, settings, epoch, epochs, bleu_every, progress
            )

            # Keep the epoch with the lowest dev loss; stop after `patience` epochs without one.
            record["best"] = (
                state["best_dev_loss"] is None or record["dev_loss"] < state["best_dev_loss"]
            )
            if record["best"]:
                state.update(best_epoch=epoch, best_dev_loss=record["dev_loss"], bad_epochs=0)
                _save_best(
                    checkpoint_path, model, data, config, encoder_name, limit_images, record
                )
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            state["history"].append(record)
            state["stopped_early"] = 0 < settings.patience <= state["bad_epochs"]

            # The checkpoint is written before the state: a crash in between repeats the epoch.
            _save_state(state_path, model, optimizer, fingerprint, state)
            write_history(run_dir, state["history"])
            if progress:
                print(_epoch_line(record, epochs), flush=True)
            else:
                logger.info("epoch done %s", _epoch_line(record, epochs))
            if on_epoch_end is not None:
                on_epoch_end(record)

        if state["best_epoch"] == 0:
            raise TrainingError("no epoch was trained (epochs must be at least 1)")
        if state["stopped_early"] and state["epoch"] > first_epoch:
            logger.info(
                "early stop epoch=%d best_epoch=%d patience=%d",
                state["epoch"],
                state["best_epoch"],
                settings.patience,
            )

        # Evaluate once per best checkpoint: a resumed, already evaluated run is not scored
        # again.
        if evaluate_test and state["test_bleu_epoch"] != state["best_epoch"]:
            state["test_bleu"] = _evaluate_test(
                checkpoint_path, config, settings.eval_beam_sizes, cache_dir, limit_images, run_dir
            )
            state["test_bleu_epoch"] = state["best_epoch"]
            _save_state(state_path, model, optimizer, fingerprint, state)

    logger.info(
        "training done checkpoint=%s best_epoch=%d epochs=%d seconds=%.1f",
        checkpoint_path,
        state["best_epoch"],
        state["epoch"],
        time.perf_counter() - started,
    )
    return TrainResult(
        checkpoint=checkpoint_path,
        run_dir=run_dir,
        best_epoch=state["best_epoch"],
        epochs=state["epoch"],
        stopped_early=state["stopped_early"],
        history=state["history"],
        test_bleu=state["test_bleu"],
        epochs_trained=state["epoch"] - first_epoch,
    )


def _report_nothing_left(run_dir: Path, state: dict[str, Any], epochs: int, patience: int) -> None:
    """Say so when a resumed run has no epoch left to train, and why."""
    if state["stopped_early"]:
        logger.warning(
            "nothing left to train run_dir=%s reason=stopped_early epoch=%d best_epoch=%d "
            "patience=%d: the run stopped early at epoch %d, and an early stop is final",
            run_dir,
            state["epoch"],
            state["best_epoch"],
            patience,
            state["epoch"],
        )
    elif state["epoch"] >= epochs:
        logger.warning(
            "nothing left to train run_dir=%s reason=epochs_done epoch=%d epochs=%d: the run "
            "is already at epoch %d of %d; pass a larger --epochs to train on",
            run_dir,
            state["epoch"],
            epochs,
            state["epoch"],
            epochs,
        )


def _check_arguments(
    encoder_name: str, epochs: int, limit_images: int | None, bleu_every: int
) -> None:
    """Refuse settings that cannot make a run, before anything is loaded or created."""
    if encoder_name not in ENCODERS:
        known = ", ".join(sorted(ENCODERS))
        raise TrainingError(f"unknown encoder '{encoder_name}' (known: {known})")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TrainingError(f"epochs must be a whole number of at least 1, not {epochs!r}")
    if limit_images is not None and limit_images < 1:
        raise TrainingError(f"--limit-images must be at least 1, not {limit_images}")
    if bleu_every < 0:
        raise TrainingError(f"bleu_every must be 0 (never) or more, not {bleu_every}")


def _missing_folders(run_dir: Path) -> list[Path]:
    """``run_dir`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    folder = run_dir
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _check_run_dir(run_dir: Path) -> None:
    """Refuse a run dir that is a file, or that lies below one."""
    missing = _missing_folders(run_dir)
    folder = missing[-1].parent if missing else run_dir  # the nearest one that exists
    if folder.is_dir():
        return
    if folder == run_dir:
        raise TrainingError(f"the run dir {run_dir} is a file; choose another --run-dir")
    raise TrainingError(
        f"cannot create the run dir {run_dir}: {folder} is a file; choose another --run-dir"
    )


@contextmanager
def _run_dir_removed_if_unused(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir``; if the block fails, remove the folders created here still empty.

    A run refused or interrupted before its first write then leaves nothing behind.
    """
    created = _missing_folders(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"cannot create the run dir {run_dir}: {err.strerror}") from None
    try:
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty: something was written there, which must stay
                break
        raise


@contextmanager
def _run_dir_locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the block, or refuse at once.

    The lock is ``flock`` on ``LOCK_FILE``, released by the kernel whatever ends the process;
    the file is removed while still locked, so the run dir is left as the run left it.
    """
    lock_path = run_dir / LOCK_FILE
    try:
        handle = open(lock_path, "ab")
    except OSError as err:
        raise TrainingError(
            f"cannot write in the run dir {run_dir}: {err.strerror or err}; choose another "
            f"--run-dir"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A run that was just ending may have removed the file between open and flock: the
        # lock is then on a file nobody else will look at, so it guards nothing.
        if os.fstat(handle.fileno()).st_ino != os.stat(lock_path).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        handle.close()
        raise TrainingError(
            f"another `captionbot train` is using {run_dir}; wait for it or choose another "
            f"--run-dir"
        ) from None
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()


def _run_epoch(
    fitter: Fitter,
    scorer: NextWordScorer,
    data: TrainingData,
    settings: TrainingConfig,
    epoch: int,
    epochs: int,
    bleu_every: int,
    progress: bool,
) -> dict[str, Any]:
    """Train one epoch, then measure dev loss, accuracy and (every bleu_every) BLEU."""
    started = time.perf_counter()
    # The shuffle depends only on (seed, epoch), so a resumed run sees the same batches.
    rng = np.random.default_rng([settings.seed, epoch])
    batches = batch_order(data.train.lengths, settings.batch_size, rng)
    train_metrics = fitter.fit_epoch(
        data.train, batches, desc=f"epoch {epoch}/{epochs}", progress=progress
    )
    dev_metrics = scorer(data.dev, EVAL_BATCH)
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": train_metrics["loss"],
        "train_accuracy": train_metrics["accuracy"],
        "dev_loss": dev_metrics["loss"],
        "dev_accuracy": dev_metrics["accuracy"],
    }
    if bleu_every and epoch % bleu_every == 0:
        bleu = bleu_for_split(
            fitter.model,
            data.vocabulary,
            data.splits["dev"],
            data.dev.images,
            data.dev.features,
            data.max_length,
        )
        record.update({f"dev_{name}": bleu[name] for name in BLEU_WEIGHTS})
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def _fingerprint(data: TrainingData, config: Config, encoder_name: str) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues."""
    settings = config.training
    return {
        "encoder": encoder_name,
        "weights_id": data.store.weights_id,
        "vocabulary_sha256": data.vocabulary.sha256(),
        "max_length": data.max_length,
        "train_captions": len(data.train),
        "dev_captions": len(data.dev),
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
        "patience": settings.patience,
        "decoder": dataclasses.asdict(config.decoder),
    }


class Fitter:
    """The compiled teacher-forcing train step, run under a strategy, one epoch at a time.

    The model and optimizer must have been built inside ``strategy.scope()``.
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        feature_dim: int,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.spec = (
            tf.TensorSpec((None, feature_dim), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None), tf.int32),
        )
        self._step = None

    def _replica_step(self, features, inputs, targets):
        # Each replica divides by the real tokens of the whole batch: the gradients, summed
        # across replicas by the optimizer, are those of the mean over real tokens.
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            probs = self.model([features, inputs], training=True)  # (B, T, V)
            loss_sum, correct, count = masked_sums(probs, targets)
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
            loss = loss_sum / tf.maximum(total, 1.0)
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss_sum, correct, count

    def _build_step(self, element_spec) -> Callable:
        # One trace for every batch length: the signature leaves batch and time unknown.
        @tf.function(input_signature=[element_spec])
        def step(batch):
            per_replica = self.strategy.run(self._replica_step, args=batch)
            return [self.strategy.reduce("SUM", value, axis=None) for value in per_replica]

        return step

    def fit_epoch(
        self,
        captions: CaptionSet,
        batches: list[np.ndarray],
        desc: str = "epoch",
        progress: bool = False,
        min_steps: int = 0,
    ) -> dict[str, float]:
        """One pass over ``batches``; returns mean loss and accuracy over real tokens.

        ``min_steps`` pads every batch to at least that many steps (for comparisons only).
        """
        dataset = tf.data.Dataset.from_generator(
            lambda: iterate_batches(captions, batches, min_steps), output_signature=self.spec
        ).prefetch(2)
        distributed = self.strategy.experimental_distribute_dataset(dataset)
        if self._step is None:
            self._step = self._build_step(distributed.element_spec)
        loss_sum = correct = count = 0.0
        # A bar only on a terminal: in a log file it would be thousands of redrawn lines.
        disable = None if progress else True
        with tqdm(total=len(batches), desc=desc, leave=False, disable=disable) as bar:
            for batch in distributed:
                batch_loss, batch_correct, batch_count = self._step(batch)
                loss_sum += float(batch_loss)
                correct += float(batch_correct)
                count += float(batch_count)
                bar.update(1)
        return {"loss": loss_sum / max(count, 1.0), "accuracy": correct / max(count, 1.0)}


def _save_best(
    path: Path,
    model: keras.Model,
    data: TrainingData,
    config: Config,
    encoder_name: str,
    limit_images: int | None,
    record: dict[str, Any],
) -> None:
    """Write the checkpoint of the epoch in ``record``, with its dev figures as metrics."""
    settings = config.training
    metrics: dict[str, Any] = {
        "dev_loss": record["dev_loss"],
        "dev_accuracy": record["dev_accuracy"],
        "epochs": record["epoch"],
    }
    if "dev_bleu4" in record:
        metrics["bleu_dev"] = {
            "split": "dev",
            "images": len(data.dev.images),
            "beam_size": 1,
            **{name: record[f"dev_{name}"] for name in BLEU_WEIGHTS},
        }
    manifest = build_manifest(
        encoder={
            "name": encoder_name,
            "feature_dim": data.store.feature_dim,
            "input_size": list(data.store.input_size),
            "weights_id": data.store.weights_id,
        },
        vocabulary=data.vocabulary,
        max_length=data.max_length,
        decoder=dataclasses.asdict(config.decoder),
        data={
            "dataset": "flickr8k",
            "train_split": "train",
            "train_images": len(data.train.images),
            "train_captions": len(data.train),
            "dev_images": len(data.dev.images),
            "limit_images": limit_images,
        },
        training={
            "epoch": record["epoch"],
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "patience": settings.patience,
            "seed": settings.seed,
            "strategy": settings.strategy,
            "loss": "cross-entropy over real tokens (teacher forcing)",
        },
        metrics=metrics,
    )
    save_checkpoint(path, model, data.vocabulary, manifest)


def _evaluate_test(
    checkpoint_path: Path,
    config: Config,
    beam_sizes: list[int],
    cache_dir: Path,
    limit_images: int | None,
    run_dir: Path,
) -> dict[str, dict[str, Any]]:
    results = {}
    for beam_size in beam_sizes or [1]:
        result = evaluate_checkpoint(
            checkpoint_path,
            config,
            "test",
            beam_size,
            limit=limit_images,
            cache_dir=cache_dir,
            captions_dir=run_dir / "evaluation",
            update_manifest=False,
        )
        name = "greedy" if beam_size <= 1 else f"beam{beam_size}"
        results[name] = {k: result[k] for k in ("split", "images", "beam", *BLEU_WEIGHTS)}
        # Figures of part of the test split would pass for the whole split's in the manifest.
        if result["images_missing"]:
            logger.warning(
                "manifest not updated reason=images_missing missing=%d checkpoint=%s",
                result["images_missing"],
                checkpoint_path,
            )
        else:
            update_manifest_metrics(
                checkpoint_path,
                {
                    bleu_metrics_key("test", beam_size): manifest_bleu(results[name]),
                    "test_loss": result["loss"],
                    "test_accuracy": result["accuracy"],
                },
            )
        logger.info(
            "test bleu checkpoint=%s beam=%d %s",
            checkpoint_path,
            beam_size,
            " ".join(f"{k}={result[k]:.4f}" for k in BLEU_WEIGHTS),
        )
    return results


def _save_state(
    path: Path,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    fingerprint: dict[str, Any],
    progress_state: dict[str, Any],
) -> None:
    """Model, optimizer and progress in one file, replaced atomically."""
    arrays = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    arrays.update(
        {f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    )
    meta = {"fingerprint": fingerprint, **progress_state}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    # A uniquely named temporary file: a crash leaves no file that a later write trips on.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _read_state(path: Path) -> dict[str, Any]:
    """Progress and arrays of a saved state, read whole, or a TrainingError if it is damaged.

    Returns:
        ``{"meta": progress with its "fingerprint", "arrays": name -> array}``.
    """

    def unreadable(why: str) -> TrainingError:
        return TrainingError(
            f"cannot resume: {path} is unreadable ({why}); remove {path.parent} to start the "
            f"run over, or train into another --run-dir"
        )

    try:
        with np.load(path) as saved:
            arrays = {key: saved[key] for key in saved.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    # np.load raises these for a truncated archive, a foreign file (it refuses pickles) and
    # a damaged member; a plain .npy file is no archive and has no context manager. Their
    # texts are left out: numpy's advice to load pickles unsafely is not for this file.
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile,
            zlib.error) as err:  # fmt: skip
        raise unreadable(f"damaged or not a training state: {type(err).__name__}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("fingerprint"), dict):
        raise unreadable("it holds no run settings")
    if not isinstance(meta.get("epoch"), int) or not isinstance(meta.get("history"), list):
        raise unreadable("it holds no progress")
    return {"meta": meta, "arrays": arrays}


def _apply_state(
    path: Path,
    saved: dict[str, Any],
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    fingerprint: dict[str, Any],
) -> dict[str, Any]:
    """Check a read state against this run, load its weights; return its progress."""
    meta = dict(saved["meta"])
    arrays = saved["arrays"]
    stored = meta.pop("fingerprint")
    changed = [key for key in fingerprint if stored.get(key) != fingerprint[key]]
    if changed:
        details = ", ".join(f"{k}: {stored.get(k)!r} -> {fingerprint[k]!r}" for k in changed)
        raise TrainingError(
            f"cannot resume the run in {path.parent}: its settings differ ({details}); "
            f"start a new run in another --run-dir"
        )
    model_count = sum(1 for key in arrays if key.startswith("model_"))
    optimizer_count = sum(1 for key in arrays if key.startswith("optimizer_"))
    if model_count != len(model.variables) or optimizer_count != len(optimizer.variables):
        raise TrainingError(f"{path} does not fit this model; start a new run")
    pairs = [(v, arrays[f"model_{i}"]) for i, v in enumerate(model.variables)]
    pairs += [(v, arrays[f"optimizer_{i}"]) for i, v in enumerate(optimizer.variables)]
    for variable, value in pairs:
        if tuple(variable.shape) != value.shape:
            raise TrainingError(f"{path} does not fit this model; start a new run")
    for variable, value in pairs:
        variable.assign(value)
    return {**_new_state(), **meta}


def _restore_checkpoint(
    path: Path,
    state: dict[str, Any],
    model: keras.Model,
    data: TrainingData,
    config: Config,
    encoder_name: str,
    limit_images: int | None,
) -> bool:
    """Make sure a resumed run still has its best checkpoint, rewriting it when possible.

    The state holds the weights of the last epoch only, so a lost checkpoint can be written
    again only when the last epoch was the best one. Returns whether it was rewritten (the
    state then changed: its test figures no longer describe a checkpoint).
    """
    files = (MODEL_FILE, VOCABULARY_FILE, MANIFEST_FILE)
    if state["best_epoch"] == 0 or all((path / name).is_file() for name in files):
        return False
    best = state["best_epoch"]
    record = next((r for r in state["history"] if r.get("epoch") == best), None)
    if best != state["epoch"] or record is None:
        raise TrainingError(
            f"cannot resume the run in {path.parent}: its checkpoint {path} is missing or "
            f"incomplete, and {STATE_FILE} holds epoch {state['epoch']}, not the best epoch "
            f"{best}; remove {path.parent} to start the run over, or train into another "
            f"--run-dir"
        )
    logger.warning("checkpoint missing path=%s rewritten_from_epoch=%d", path, best)
    _save_best(path, model, data, config, encoder_name, limit_images, record)
    # The rewritten manifest has no test figures yet.
    state["test_bleu_epoch"] = 0
    return True


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    parts = [
        f"epoch={record['epoch']}/{epochs}",
        f"train_loss={record['train_loss']:.4f}",
        f"train_acc={record['train_accuracy']:.4f}",
        f"dev_loss={record['dev_loss']:.4f}",
        f"dev_acc={record['dev_accuracy']:.4f}",
    ]
    if "dev_bleu4" in record:
        parts += [f"dev_bleu1={record['dev_bleu1']:.4f}", f"dev_bleu4={record['dev_bleu4']:.4f}"]
    parts.append(f"seconds={record['seconds']:.1f}")
    if record.get("best"):
        parts.append("best")
    return " ".join(parts)
