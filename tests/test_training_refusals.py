"""Bad training and evaluation input: a one-line error, nothing written, nothing overwritten.

Also what must not be overwritten: full-split figures by partial ones, and one run's files by a
second process working in the same place.
"""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import logging
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_checkpoint

from captioner.atomic import atomic_path, make_temp_dir, write_text_atomic
from captioner.checkpoint import load_checkpoint, read_manifest, update_manifest_metrics
from captioner.config import DataConfig
from captioner.errors import CaptionbotError
from training import evaluate as evaluate_module
from training import train as train_module
from training.evaluate import EvaluationError, captions_file_name, evaluate_checkpoint
from training.features import CACHE_FORMAT, FeatureError, cache_prefix
from training.flickr8k import DatasetError
from training.train import LOCK_FILE, STATE_FILE, TrainingError, train


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if a run gets as far as loading the dataset."""

    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the arguments were checked")

    monkeypatch.setattr(train_module, "prepare_data", refuse)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be .* at least 1, not 0"),
        ({"epochs": -2}, "epochs must be .* at least 1, not -2"),
        ({"limit_images": 0}, "--limit-images must be at least 1, not 0"),
        ({"limit_images": -3}, "--limit-images must be at least 1, not -3"),
        ({"encoder_name": "vgg99"}, r"unknown encoder 'vgg99' \(known: resnet50, squeezenet\)"),
    ],
)
def test_bad_arguments_are_refused_before_loading_and_create_no_run_dir(
    config, tmp_path, no_data, kwargs, message
):
    run_dir = tmp_path / "runs" / "new"
    with pytest.raises(TrainingError, match=message):
        train(config, run_dir=run_dir, cache_dir=tmp_path / "features", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_run_failing_before_its_first_write_removes_the_folders_it_created(
    config, tmp_path, monkeypatch
):
    def no_dataset(*args, **kwargs):
        raise DatasetError("caption token file not found: tokens.txt")

    monkeypatch.setattr(train_module, "prepare_data", no_dataset)
    kept = tmp_path / "existing"
    kept.mkdir()
    with pytest.raises(DatasetError):
        train(config, epochs=1, run_dir=kept / "a" / "b", cache_dir=tmp_path / "features")
    assert kept.is_dir() and list(kept.iterdir()) == []

    # A folder that was there before the run stays, empty or not.
    with pytest.raises(DatasetError):
        train(config, epochs=1, run_dir=kept, cache_dir=tmp_path / "features")
    assert kept.is_dir()


def test_a_run_dir_that_is_a_file_or_lies_below_one_is_refused(config, tmp_path, no_data):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(TrainingError, match=f"the run dir {afile} is a file"):
        train(config, epochs=1, run_dir=afile, cache_dir=tmp_path / "features")
    with pytest.raises(TrainingError, match=f"cannot create the run dir {afile}/sub/run: {afile}"):
        train(config, epochs=1, run_dir=afile / "sub" / "run", cache_dir=tmp_path / "features")
    assert afile.read_text() == "not a folder"


def _truncated_state(path: Path) -> None:
    meta = np.frombuffer(b'{"fingerprint": {}, "epoch": 1, "history": []}', dtype=np.uint8)
    np.savez(path, model_0=np.zeros((64, 64), np.float32), meta=meta)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage",
    [
        _truncated_state,
        lambda path: path.write_text("garbage, not an archive\n" * 10),
        lambda path: path.write_bytes(b""),
        lambda path: np.savez(path, model_0=np.zeros(3)),  # no progress in it
        lambda path: path.write_bytes(_npy_bytes()),  # a plain .npy, no archive
    ],
)
def test_a_damaged_resume_state_is_a_clear_error_that_leaves_the_run_alone(
    config, tmp_path, no_data, damage
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    damage(run_dir / STATE_FILE)
    before = (run_dir / STATE_FILE).read_bytes()
    with pytest.raises(TrainingError) as raised:
        train(config, epochs=1, resume=True, run_dir=run_dir, cache_dir=tmp_path / "features")
    message = str(raised.value)
    assert f"{run_dir / STATE_FILE} is unreadable" in message
    assert f"remove {run_dir} to start the run over, or train into another --run-dir" in message
    assert "\n" not in message
    assert (run_dir / STATE_FILE).read_bytes() == before


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"limit": 0}, "--limit must be at least 1 image, not 0"),
    ({"limit": -2}, "--limit must be at least 1 image, not -2"),
    ({"beam_size": 0}, "--beam must be at least 1"),
])  # fmt: skip
def test_evaluation_refuses_a_limit_or_beam_below_one(config, tmp_path, kwargs, message):
    # The checkpoint does not exist: the arguments must be refused before it is looked at.
    with pytest.raises(EvaluationError, match=message):
        evaluate_checkpoint(tmp_path / "nowhere", config, "test", **kwargs)
    assert issubclass(EvaluationError, CaptionbotError)


def test_evaluating_no_usable_images_keeps_the_earlier_per_image_file(
    config, tmp_path, monkeypatch
):
    from PIL import Image

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(root / "images" / "a.jpg")
    (root / "tokens.txt").write_text("a.jpg#0\tA dog runs .\n")
    (root / "test.txt").write_text("a.jpg\n")
    data = DataConfig(root=root, token_file="tokens.txt", images_dir="images",
                      splits={"test": "test.txt"})  # fmt: skip
    checkpoint = make_tiny_checkpoint(tmp_path / "run" / "checkpoint")

    class NoFeatures:
        def usable(self, images):
            return []

    monkeypatch.setattr(evaluate_module, "features_for", lambda *args, **kwargs: NoFeatures())
    captions_dir = tmp_path / "evaluation"
    captions_dir.mkdir()
    earlier = captions_dir / captions_file_name(checkpoint, "test", 1)
    earlier.write_text("image,caption\na.jpg,a dog\n")
    with pytest.raises(EvaluationError, match="split 'test' has no usable images"):
        evaluate_checkpoint(
            checkpoint, dataclasses.replace(config, data=data), "test", captions_dir=captions_dir
        )
    assert earlier.read_text() == "image,caption\na.jpg,a dog\n"


def test_per_image_files_of_checkpoints_in_different_runs_do_not_collide():
    one = captions_file_name(Path("runs/squeezenet/checkpoint"), "test", 3)
    two = captions_file_name(Path("runs/resnet50/checkpoint"), "test", 3)
    assert one == "squeezenet-checkpoint-test-beam3.csv"
    assert two == "resnet50-checkpoint-test-beam3.csv"
    assert captions_file_name(Path("/checkpoint"), "dev", 1) == "checkpoint-dev-beam1.csv"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set a umask for one test, and put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [
    (0o022, 0o644, 0o755),
    (0o027, 0o640, 0o750),
])  # fmt: skip
def test_atomic_files_and_checkpoints_get_the_modes_of_the_umask(
    tmp_path, umask, mask, file_mode, dir_mode
):
    umask(mask)
    write_text_atomic(tmp_path / "history.json", "[]\n")
    assert _mode(tmp_path / "history.json") == file_mode
    with atomic_path(tmp_path / "curves.png") as tmp:
        assert _mode(tmp) == file_mode
        tmp.write_bytes(b"png")
    assert _mode(tmp_path / "curves.png") == file_mode
    assert _mode(make_temp_dir(tmp_path, ".tmp-")) == dir_mode

    checkpoint = make_tiny_checkpoint(tmp_path / "checkpoint")
    assert _mode(checkpoint) == dir_mode
    assert {name.name: _mode(name) for name in checkpoint.iterdir()} == {
        "decoder.keras": file_mode,
        "vocabulary.json": file_mode,
        "manifest.json": file_mode,
    }
    # Only the folder made by make_temp_dir starts with a dot: no temporary file is left.
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(hidden) == 1 and hidden[0].startswith(".tmp-")


def _evaluation_layout(tmp_path: Path, *, listed: int, on_disk: int, unreadable: int = 0):
    """A data root whose test split lists ``listed`` images, of which the first ``on_disk``
    exist, a checkpoint, and a feature cache of its encoder in which the last ``unreadable``
    of those failed (as an extraction records a damaged image)."""
    from PIL import Image

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    names = [f"img{i}.jpg" for i in range(listed)]
    for name in names[:on_disk]:
        Image.new("RGB", (32, 32)).save(root / "images" / name)
    (root / "tokens.txt").write_text("".join(f"{n}#0\tA dog runs on the grass .\n" for n in names))
    (root / "test.txt").write_text("".join(f"{n}\n" for n in names))
    data = DataConfig(root=root, token_file="tokens.txt", images_dir="images",
                      splits={"test": "test.txt"})  # fmt: skip
    checkpoint = make_tiny_checkpoint(tmp_path / "run" / "checkpoint")

    # Features of the checkpoint's encoder and weights: evaluation reuses them as they are.
    encoder = load_checkpoint(checkpoint).manifest["encoder"]
    cache_dir = tmp_path / "features"
    cache_dir.mkdir()
    present = names[:on_disk]
    stem = cache_dir / f"{cache_prefix(encoder['name'], encoder['weights_id'])}-fixture"
    rng = np.random.default_rng(0)
    np.save(stem.with_suffix(".npy"), rng.random((len(present), 512), dtype=np.float32))
    stem.with_suffix(".json").write_text(json.dumps({
        "format": CACHE_FORMAT, "encoder": encoder["name"], "weights_id": encoder["weights_id"],
        "feature_dim": 512, "input_size": [224, 224], "images": present, "complete": True,
        "failed": present[len(present) - unreadable :],
    }))  # fmt: skip
    return data, checkpoint, cache_dir


FULL_TEST_FIGURES = {
    "bleu": {"split": "test", "images": 1000, "beam_size": 1, "bleu1": 0.6, "bleu4": 0.2},
    "test_loss": 3.1,
    "test_accuracy": 0.4,
}


@pytest.mark.parametrize(("on_disk", "unreadable"), [(2, 0), (3, 1)])
def test_an_incomplete_split_is_scored_but_leaves_the_manifest_alone(
    config, tmp_path, caplog, on_disk, unreadable
):
    data, checkpoint, cache_dir = _evaluation_layout(
        tmp_path, listed=3, on_disk=on_disk, unreadable=unreadable
    )
    update_manifest_metrics(checkpoint, FULL_TEST_FIGURES)
    before = read_manifest(checkpoint)
    settings = dataclasses.replace(config, data=data)
    captions_dir = tmp_path / "evaluation"
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        result = evaluate_checkpoint(
            checkpoint, settings, "test", cache_dir=cache_dir, captions_dir=captions_dir
        )
    assert result["images"] == 2 and result["images_missing"] == 1
    assert result["manifest_updated"] is False
    assert read_manifest(checkpoint) == before
    assert "manifest not updated reason=images_missing missing=1" in caplog.text
    rows = Path(result["captions_file"]).read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["img0.jpg", "img1.jpg"]

    # A limit leaves the manifest alone too, and keeps the whole split's file as it was.
    whole = Path(result["captions_file"]).read_bytes()
    limited = evaluate_checkpoint(
        checkpoint, settings, "test", limit=1, cache_dir=cache_dir, captions_dir=captions_dir
    )
    assert limited["manifest_updated"] is False and read_manifest(checkpoint) == before
    assert Path(limited["captions_file"]).name == "run-checkpoint-test-beam1-first1.csv"
    assert Path(result["captions_file"]).read_bytes() == whole


def test_a_complete_split_updates_the_manifest(config, tmp_path):
    data, checkpoint, cache_dir = _evaluation_layout(tmp_path, listed=3, on_disk=3)
    update_manifest_metrics(checkpoint, FULL_TEST_FIGURES)
    result = evaluate_checkpoint(
        checkpoint,
        dataclasses.replace(config, data=data),
        "test",
        cache_dir=cache_dir,
        captions_dir=tmp_path / "evaluation",
    )
    assert result["manifest_updated"] is True and result["images_missing"] == 0
    metrics = read_manifest(checkpoint)["metrics"]
    assert metrics["bleu"]["images"] == 3 and metrics["bleu"]["bleu1"] == result["bleu1"]
    assert metrics["test_loss"] == result["loss"]


def test_feature_and_evaluation_folders_that_cannot_be_made_are_clear_errors(config, tmp_path):
    data, checkpoint, cache_dir = _evaluation_layout(tmp_path, listed=1, on_disk=1)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for run_dir, reason in ((afile / "run", "Not a directory"),
                            (Path("/proc/nope/run"), "No such file or directory")):  # fmt: skip
        settings = dataclasses.replace(
            config, data=data, training=dataclasses.replace(config.training, run_dir=run_dir)
        )
        with pytest.raises(FeatureError) as raised:
            evaluate_checkpoint(checkpoint, settings, "test")
        assert str(raised.value) == (
            f"cannot create the feature cache folder {run_dir.parent / 'features'}: {reason}; "
            f"by default it lies beside training.run_dir, so set training.run_dir in a config "
            f"file to a writable place"
        )
        with pytest.raises(EvaluationError) as raised:
            evaluate_checkpoint(checkpoint, settings, "test", cache_dir=cache_dir)
        assert str(raised.value).startswith(
            f"cannot create the evaluation folder {run_dir.parent / 'evaluation'}: {reason}; "
        )
        assert "set training.run_dir in a config file to a writable place" in str(raised.value)
    assert issubclass(FeatureError, CaptionbotError)

    # Training checks the cache folder before it reads any image.
    with pytest.raises(FeatureError, match=f"cannot create the feature cache folder {afile}"):
        train(config, epochs=1, run_dir=tmp_path / "new-run", cache_dir=afile / "features")
    assert not (tmp_path / "new-run").exists()


def _hold_lock(run_dir: Path):
    """Lock ``run_dir`` as a running ``train`` does, through a file description of our own."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_FILE, "ab")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_second_run_on_a_locked_run_dir_is_refused_at_once(config, tmp_path, monkeypatch):
    def no_dataset(*args, **kwargs):
        raise DatasetError("caption token file not found: tokens.txt")

    monkeypatch.setattr(train_module, "prepare_data", no_dataset)
    run_dir = tmp_path / "runs" / "busy"
    holder = _hold_lock(run_dir)
    for resume in (False, True):
        with pytest.raises(TrainingError) as raised:
            train(config, epochs=1, resume=resume, run_dir=run_dir, cache_dir=tmp_path / "f")
        assert str(raised.value) == (
            f"another `captionbot train` is using {run_dir}; wait for it or choose another "
            f"--run-dir"
        )
        # The refused run leaves the holder's lock and folder as they were.
        assert [p.name for p in run_dir.iterdir()] == [LOCK_FILE]
    holder.close()

    # Once the lock is free, a run goes on to the data, and an exception releases the lock and
    # removes its file.
    with pytest.raises(DatasetError):
        train(config, epochs=1, run_dir=run_dir, cache_dir=tmp_path / "f")
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []
    _hold_lock(run_dir).close()


def test_concurrent_state_saves_of_one_run_dir_do_not_collide(tmp_path):
    import keras

    from captioner.decoder import build_decoder

    model = build_decoder(12, 8, embedding_dim=8, units=8)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    path = tmp_path / STATE_FILE
    errors = []

    def save_repeatedly(epoch: int) -> None:
        try:
            for _ in range(30):
                train_module._save_state(path, model, optimizer, {}, {"epoch": epoch})
        except OSError as err:
            errors.append(err)

    threads = [threading.Thread(target=save_repeatedly, args=(epoch,)) for epoch in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]
    with np.load(path) as saved:
        assert json.loads(saved["meta"].tobytes())["epoch"] in (1, 2)
