"""Training end to end on a slice of Flickr8k: checkpoint, metrics, plots, exact resume."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FLICKR8K, WEIGHTS_DIR, needs_shared

from captioner.checkpoint import load_checkpoint
from captioner.decoder import build_decoder
from captioner.pipeline import Captioner
from captioner.vocabulary import Vocabulary
from training.batches import CaptionSet, batch_order, encode_captions
from training.cleaning import clean_caption
from training.evaluate import evaluate_checkpoint, next_word_metrics
from training.flickr8k import DatasetPaths, load_splits
from training.train import LOCK_FILE, STATE_FILE, Fitter, TrainingError, train

pytestmark = needs_shared(FLICKR8K)

LIMIT = 16  # images per split
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_config(config, tmp_path_factory):
    """The repository config with a small decoder, SqueezeNet features and short runs."""
    root = tmp_path_factory.mktemp("runs")
    return dataclasses.replace(
        config,
        encoder=dataclasses.replace(
            config.encoder, name="squeezenet", weights="imagenet", weights_dir=WEIGHTS_DIR
        ),
        decoder=dataclasses.replace(config.decoder, embedding_dim=32, units=32),
        training=dataclasses.replace(
            config.training,
            run_dir=root / "default",
            epochs=2,
            batch_size=16,
            patience=3,
            eval_beam_sizes=[1, 2],
        ),
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


def test_two_epoch_run_writes_a_loadable_checkpoint_with_metrics(small_config, cache_dir, capsys):
    run_dir = small_config.training.run_dir.parent / "two-epochs"
    result = train(small_config, run_dir=run_dir, limit_images=LIMIT, cache_dir=cache_dir)

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    assert [line.split()[0] for line in lines] == ["epoch=1/2", "epoch=2/2"]
    assert result.epochs == 2 and len(result.history) == 2
    assert set(result.test_bleu) == {"greedy", "beam2"}

    checkpoint = load_checkpoint(result.checkpoint)
    manifest = checkpoint.manifest
    assert manifest["encoder"]["name"] == "squeezenet"
    assert manifest["encoder"]["feature_dim"] == 512
    assert manifest["training"]["epoch"] == result.best_epoch
    metrics = manifest["metrics"]
    assert metrics["epochs"] == result.best_epoch
    best = result.history[result.best_epoch - 1]
    assert metrics["dev_loss"] == pytest.approx(best["dev_loss"])
    assert 0 <= metrics["dev_accuracy"] <= 1
    for key, beam in (("bleu", 1), ("bleu_beam2", 2)):
        assert metrics[key]["split"] == "test" and metrics[key]["beam_size"] == beam
        assert metrics[key]["images"] == LIMIT
        assert all(0 <= metrics[key][f"bleu{n}"] <= 1 for n in range(1, 5))
        assert (
            metrics[key]["bleu1"] == result.test_bleu["greedy" if beam == 1 else "beam2"]["bleu1"]
        )
    assert "test_loss" in metrics and "test_accuracy" in metrics

    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert all("dev_bleu4" in r for r in history)
    assert (run_dir / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    for name in ("history.png", "bleu.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run scored the first LIMIT test images, and its per-image file says so.
    assert (run_dir / "evaluation" / f"two-epochs-checkpoint-test-beam1-first{LIMIT}.csv").exists()

    # The saved checkpoint reproduces the dev figures the run recorded for its best epoch.
    dev = evaluate_checkpoint(
        result.checkpoint,
        small_config,
        "dev",
        1,
        limit=LIMIT,
        cache_dir=cache_dir,
        captions_dir=run_dir,
    )
    assert dev["images"] == LIMIT
    assert dev["bleu4"] == pytest.approx(best["dev_bleu4"], abs=1e-9)
    assert dev["loss"] == pytest.approx(best["dev_loss"], rel=1e-5)
    assert metrics["bleu_dev"]["bleu4"] == pytest.approx(dev["bleu4"], abs=1e-9)
    # A limited evaluation is not comparable, so it leaves the manifest alone.
    assert load_checkpoint(result.checkpoint).manifest == manifest

    # The checkpoint captions a photo through the same path as the bot.
    test = load_splits(DatasetPaths.from_config(small_config.data), ["test"], limit_images=1)
    captioner = Captioner.from_checkpoint(result.checkpoint, small_config)
    caption = captioner.caption(test["test"].image_path(test["test"].images[0]))
    assert isinstance(caption.text, str) and caption.text

    with pytest.raises(TrainingError, match="already holds a training run"):
        train(small_config, run_dir=run_dir, limit_images=LIMIT, cache_dir=cache_dir)


# Run in a child process: train, and SIGKILL the process itself in the middle of epoch 2.
KILLED_RUN = """
import os, pickle, signal, sys
import training.train as train_module

config, kwargs = pickle.loads(open(sys.argv[1], "rb").read())
real_batches = train_module.iterate_batches
epochs_started = []

def batches_then_kill(captions, batches, min_steps=0):
    epochs_started.append(1)
    for i, batch in enumerate(real_batches(captions, batches, min_steps)):
        if len(epochs_started) == 2 and i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        yield batch

train_module.iterate_batches = batches_then_kill
train_module.train(config, **kwargs)
"""


def test_resume_after_sigkill_mid_epoch_gives_the_same_weights(small_config, cache_dir, tmp_path):
    common = dict(
        epochs=3,
        limit_images=LIMIT,
        cache_dir=cache_dir,
        bleu_every=0,
        evaluate_test=False,
        progress=False,
    )
    root = small_config.training.run_dir.parent
    whole = train(small_config, run_dir=root / "whole", **common)

    job = tmp_path / "job.pickle"
    job.write_bytes(pickle.dumps((small_config, {"run_dir": root / "cut", **common})))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(job)], cwd=REPO, env=env, capture_output=True
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]

    # Epoch 1 survived the kill, and so did its checkpoint.
    with np.load(root / "cut" / STATE_FILE) as state:
        assert json.loads(state["meta"].tobytes())["epoch"] == 1
    assert load_checkpoint(root / "cut" / "checkpoint").manifest["training"]["epoch"] == 1
    # The killed run's lock file stays, but the kernel released its lock with the process.
    assert (root / "cut" / LOCK_FILE).exists()

    resumed = train(small_config, run_dir=root / "cut", resume=True, **common)
    assert not (root / "cut" / LOCK_FILE).exists()
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["dev_loss"] == b["dev_loss"]
    with np.load(root / "whole" / STATE_FILE) as one, np.load(root / "cut" / STATE_FILE) as two:
        arrays = [key for key in one.files if key != "meta"]
        assert any(key.startswith("optimizer_") for key in arrays)
        for key in arrays:
            np.testing.assert_array_equal(one[key], two[key], err_msg=key)

    changed = dataclasses.replace(
        small_config, training=dataclasses.replace(small_config.training, batch_size=8)
    )
    with pytest.raises(TrainingError, match="batch_size: 16 -> 8"):
        train(changed, run_dir=root / "cut", resume=True, **common)


def test_a_train_step_ignores_padding_and_runs_under_mirrored_strategy(small_config):
    paths = DatasetPaths.from_config(small_config.data)
    split = load_splits(paths, ["train"], limit_images=4)["train"]
    words = [clean_caption(c) for caps in split.captions.values() for c in caps]
    vocabulary = Vocabulary.build(words, 50)
    features = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    captions: CaptionSet = encode_captions(split.captions, split.images, features, vocabulary, 20)
    batches = batch_order(captions.lengths, len(captions), None)

    def one_step(strategy, min_steps=0):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            model = build_decoder(vocabulary.size, 8, embedding_dim=8, units=8, dropout=0.0)
            optimizer = keras.optimizers.SGD(0.5)
            optimizer.build(model.trainable_variables)
        metrics = Fitter(model, optimizer, strategy, 8).fit_epoch(
            captions, batches, min_steps=min_steps
        )
        return metrics, [v.numpy() for v in model.trainable_variables]

    plain, weights = one_step(tf.distribute.get_strategy())
    padded, padded_weights = one_step(tf.distribute.get_strategy(), min_steps=40)
    mirrored, mirrored_weights = one_step(tf.distribute.MirroredStrategy(["/cpu:0"]))

    assert plain["loss"] == pytest.approx(padded["loss"], rel=1e-6)
    assert plain["loss"] == pytest.approx(mirrored["loss"], rel=1e-6)
    for a, b, c in zip(weights, padded_weights, mirrored_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)

    dev_metrics = next_word_metrics(build_decoder(vocabulary.size, 8, 8, 8), captions)
    assert dev_metrics["tokens"] == captions.real_tokens


def test_early_stopping_keeps_the_best_epoch_and_stays_stopped_on_resume(
    small_config, cache_dir, caplog
):
    # With a learning rate of 0 the dev loss never improves after epoch 1.
    frozen = dataclasses.replace(
        small_config,
        training=dataclasses.replace(small_config.training, learning_rate=0.0, patience=1),
    )
    run_dir = small_config.training.run_dir.parent / "early"
    common = dict(
        limit_images=LIMIT, cache_dir=cache_dir, bleu_every=0, evaluate_test=False, progress=False
    )
    result = train(frozen, epochs=5, run_dir=run_dir, **common)
    assert (result.epochs, result.best_epoch, result.stopped_early) == (2, 1, True)
    assert [r["best"] for r in result.history] == [True, False]
    assert load_checkpoint(result.checkpoint).manifest["training"]["epoch"] == 1

    with caplog.at_level(logging.WARNING, logger="training.train"):
        again = train(frozen, epochs=10, run_dir=run_dir, resume=True, **common)
    assert again.epochs == 2 and again.history == result.history and again.epochs_trained == 0
    assert "nothing left to train" in caplog.text
    assert "reason=stopped_early epoch=2 best_epoch=1" in caplog.text
    assert "the run stopped early at epoch 2" in caplog.text

    # The state holds epoch 2's weights, not the best epoch's: a lost checkpoint is an error.
    shutil.rmtree(result.checkpoint)
    state = (run_dir / STATE_FILE).read_bytes()
    with pytest.raises(TrainingError, match=r"its checkpoint .*checkpoint is missing"):
        train(frozen, epochs=10, run_dir=run_dir, resume=True, **common)
    assert not result.checkpoint.exists() and (run_dir / STATE_FILE).read_bytes() == state


def test_a_lost_checkpoint_of_the_last_epoch_is_written_again_on_resume(
    small_config, cache_dir, caplog
):
    run_dir = small_config.training.run_dir.parent / "lost"
    common = dict(
        limit_images=LIMIT, cache_dir=cache_dir, bleu_every=0, evaluate_test=False, progress=False
    )
    locked = []

    def try_lock(record):
        # Another process's attempt, as a second open file description of the lock file.
        with open(run_dir / LOCK_FILE, "ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                locked.append(record["epoch"])

    result = train(small_config, epochs=1, run_dir=run_dir, on_epoch_end=try_lock, **common)
    assert locked == [1] and result.epochs_trained == 1
    assert not (run_dir / LOCK_FILE).exists()
    saved = load_checkpoint(result.checkpoint)
    shutil.rmtree(result.checkpoint)

    with caplog.at_level(logging.WARNING, logger="training.train"):
        again = train(small_config, epochs=1, run_dir=run_dir, resume=True, **common)
    assert again.epochs_trained == 0
    assert "nothing left to train" in caplog.text and "reason=epochs_done" in caplog.text
    assert "the run is already at epoch 1 of 1; pass a larger --epochs" in caplog.text
    rewritten = load_checkpoint(again.checkpoint)
    assert rewritten.manifest == saved.manifest
    for a, b in zip(saved.model.weights, rewritten.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
