"""Checkpoints round-trip, refuse what does not match, and are written atomically."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import make_tiny_checkpoint

from captioner.checkpoint import (
    MANIFEST_FILE,
    MODEL_FILE,
    VOCABULARY_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    update_manifest_metrics,
)
from captioner.vocabulary import Vocabulary


@pytest.fixture()
def ckpt(tmp_path):
    return make_tiny_checkpoint(tmp_path / "ckpt", feature_dim=20)


def _edit_manifest(path, **changes):
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    for dotted, value in changes.items():
        node = manifest
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_round_trip_keeps_weights_vocabulary_and_manifest(ckpt):
    loaded = load_checkpoint(ckpt)
    assert loaded.manifest["encoder"]["feature_dim"] == 20
    assert loaded.max_length == 12
    again_dir = ckpt.parent / "again"
    save_checkpoint(again_dir, loaded.model, loaded.vocabulary, loaded.manifest)
    again = load_checkpoint(again_dir)
    for a, b in zip(loaded.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.vocabulary.words == loaded.vocabulary.words
    assert again.manifest == loaded.manifest


def test_missing_directory_and_manifest_are_refused(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    (ckpt / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match="has no manifest.json"):
        load_checkpoint(ckpt)


def test_wrong_format_is_refused(ckpt):
    _edit_manifest(ckpt, format="something-else/9")
    with pytest.raises(CheckpointError, match="format 'something-else/9'"):
        load_checkpoint(ckpt)


def test_vocabulary_size_mismatch_is_refused(ckpt):
    _edit_manifest(ckpt, vocabulary__size=5000)
    with pytest.raises(CheckpointError, match="manifest says 5000"):
        load_checkpoint(ckpt)


def test_vocabulary_that_does_not_fit_the_embedding_is_refused(ckpt):
    vocabulary = Vocabulary.load(ckpt / VOCABULARY_FILE)
    bigger = Vocabulary([*vocabulary.words, "zebra"])
    bigger.save(ckpt / VOCABULARY_FILE)
    _edit_manifest(ckpt, vocabulary__size=bigger.size, vocabulary__sha256=bigger.sha256())
    with pytest.raises(CheckpointError, match="decoder embeds"):
        load_checkpoint(ckpt)


def test_changed_vocabulary_file_is_refused(ckpt):
    words = json.loads((ckpt / VOCABULARY_FILE).read_text())
    words[4], words[5] = words[5], words[4]
    (ckpt / VOCABULARY_FILE).write_text(json.dumps(words))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(ckpt)


def test_feature_width_mismatch_is_refused(ckpt):
    _edit_manifest(ckpt, encoder__feature_dim=2048)
    with pytest.raises(CheckpointError, match="takes 20-d features"):
        load_checkpoint(ckpt)


def test_bad_max_length_is_refused(ckpt):
    _edit_manifest(ckpt, max_length=0)
    with pytest.raises(CheckpointError, match="max_length"):
        load_checkpoint(ckpt)


def test_damaged_model_file_is_refused(ckpt):
    (ckpt / MODEL_FILE).write_bytes(b"not a keras file")
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(ckpt)


def test_truncated_and_missing_model_files_say_so(ckpt):
    data = (ckpt / MODEL_FILE).read_bytes()
    (ckpt / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="decoder.keras is damaged"):
        load_checkpoint(ckpt)

    (ckpt / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match="has no decoder.keras"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("key", ["encoder", "vocabulary", "decoder", "metrics"])
def test_manifest_entries_that_are_not_mappings_are_refused(ckpt, key):
    _edit_manifest(ckpt, **{key: "squeezenet"})
    with pytest.raises(CheckpointError, match=f"'{key}' must be a mapping, not str"):
        load_checkpoint(ckpt)


def test_vocabulary_size_of_the_wrong_type_is_shown_as_such(ckpt):
    size = load_checkpoint(ckpt).vocabulary.size
    _edit_manifest(ckpt, vocabulary__size=str(size))
    with pytest.raises(CheckpointError, match=f"manifest says '{size}'"):
        load_checkpoint(ckpt)


def test_failed_save_leaves_the_old_checkpoint_whole(ckpt):
    loaded = load_checkpoint(ckpt)
    wrong = Vocabulary([*loaded.vocabulary.words, "extra"])
    with pytest.raises(CheckpointError):
        save_checkpoint(ckpt, loaded.model, wrong, loaded.manifest)

    # A crash in the middle of writing (the model save raising) leaves no trace either.
    class Boom(RuntimeError):
        pass

    def exploding_save(*args, **kwargs):
        raise Boom("disk full")

    original = loaded.model.save
    loaded.model.save = exploding_save
    with pytest.raises(Boom):
        save_checkpoint(ckpt, loaded.model, loaded.vocabulary, loaded.manifest)
    loaded.model.save = original
    assert load_checkpoint(ckpt).vocabulary.words == loaded.vocabulary.words
    assert sorted(os.listdir(ckpt.parent)) == ["ckpt"]


def test_update_manifest_metrics_merges_and_keeps_checkpoint_loadable(ckpt):
    update_manifest_metrics(ckpt, {"bleu": {"test_beam1": {"bleu1": 0.5}}, "epochs": 3})
    update_manifest_metrics(ckpt, {"bleu": {"test_beam3": {"bleu1": 0.6}}})
    metrics = load_checkpoint(ckpt).manifest["metrics"]
    assert metrics["bleu"] == {"test_beam1": {"bleu1": 0.5}, "test_beam3": {"bleu1": 0.6}}
    assert metrics["epochs"] == 3
    assert not [p for p in os.listdir(ckpt) if p.endswith(".tmp")]


def test_overwriting_a_checkpoint_replaces_it(ckpt, tmp_path):
    other = make_tiny_checkpoint(tmp_path / "other", feature_dim=20, seed=9)
    loaded = load_checkpoint(other)
    save_checkpoint(ckpt, loaded.model, loaded.vocabulary, loaded.manifest)
    replaced = load_checkpoint(ckpt)
    np.testing.assert_array_equal(replaced.model.get_weights()[0], loaded.model.get_weights()[0])
    shutil.rmtree(other)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
