"""The captioner end to end: files in, captions or clear refusals out, and the CLI over it."""

import io
import json

import pytest
from conftest import FLICKR8K, make_tiny_checkpoint, needs_shared
from PIL import Image

from captionbot.cli import main
from captioner.checkpoint import CheckpointError
from captioner.images import ImageError
from captioner.pipeline import NO_CAPTION, Caption, Captioner

pytestmark = needs_shared()


def _png_bytes(color=(200, 30, 30), size=(64, 48)):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint, config):
    return Captioner.from_checkpoint(tiny_checkpoint, config)


@pytest.fixture(scope="module")
def photos():
    return sorted((FLICKR8K / "images").glob("*.jpg"))[:3]


def test_batch_mixes_captions_and_refusals_in_order(captioner, photos):
    sources = [str(photos[0]), b"", photos[1].read_bytes(), b"plain text", _png_bytes()]
    results = captioner.caption_batch(sources)
    assert [type(r) for r in results] == [Caption, ImageError, Caption, ImageError, Caption]
    assert results[1].kind == "empty"
    assert results[3].kind == "not_image"
    for caption in (results[0], results[2], results[4]):
        assert caption.text and caption.text == caption.text.lower()
        assert "<" not in caption.text  # no special tokens
        assert caption.ok == bool(caption.words)
        assert len(caption.words) <= captioner.checkpoint.max_length


def test_a_caption_does_not_depend_on_its_batch(captioner, photos):
    alone = captioner.caption(photos[0])
    together = captioner.caption_batch([photos[1], photos[0], photos[2]])[1]
    assert alone == together


def test_caption_raises_image_error_for_bad_input(captioner):
    with pytest.raises(ImageError):
        captioner.caption(b"\x89PNG\r\n\x1a\n broken")


def test_empty_word_list_becomes_the_no_caption_fallback():
    caption = Caption.from_words([])
    assert (caption.text, caption.ok) == (NO_CAPTION, False)


def test_encoder_feature_width_must_match_checkpoint(tmp_path, config):
    ckpt = make_tiny_checkpoint(tmp_path / "wide", feature_dim=2048, encoder_name="squeezenet")
    with pytest.raises(CheckpointError, match="512-d features"):
        Captioner.from_checkpoint(ckpt, config)


def test_encoder_weights_must_be_those_the_checkpoint_was_trained_on(tmp_path, config):
    ckpt = make_tiny_checkpoint(tmp_path / "random-trained", weights_id="random-seed0")
    with pytest.raises(CheckpointError, match="from weights random-seed0, but the squeezenet"):
        Captioner.from_checkpoint(ckpt, config)


def test_cli_caption_json_reports_each_image_and_exit_status(tiny_checkpoint, photos, capsys):
    bad = str(photos[0].parent / "does-not-exist.jpg")
    status = main(["caption", str(photos[0]), bad, "--checkpoint", str(tiny_checkpoint), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert lines[0]["image"] == str(photos[0]) and lines[0]["caption"] and lines[0]["ms"] > 0
    assert lines[1]["image"] == bad and "error" in lines[1]


def test_cli_caption_plain_all_good_exits_zero(tiny_checkpoint, photos, capsys):
    status = main(["caption", *map(str, photos[:2]), "--checkpoint", str(tiny_checkpoint)])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert [line.split("\t")[0] for line in out] == [str(p) for p in photos[:2]]


def test_cli_missing_checkpoint_is_one_line_no_traceback(tmp_path, photos, capsys):
    status = main(["caption", str(photos[0]), "--checkpoint", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert status == 2
    assert "no checkpoint directory" in err and "Traceback" not in err


def test_cli_bad_config_key_is_named(tmp_path, capsys):
    user = tmp_path / "c.yaml"
    user.write_text("caption:\n  beam: 3\n")
    assert main(["--config", str(user), "caption", "x.jpg"]) == 2
    assert "caption.beam" in capsys.readouterr().err


def test_cli_config_may_follow_the_subcommand(tmp_path, capsys):
    user = tmp_path / "c.yaml"
    user.write_text("caption:\n  beam: 3\n")
    assert main(["caption", "--config", str(user), "x.jpg"]) == 2
    assert "caption.beam" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["caption", "x.jpg", "--beam", "0"], "--beam: must be from 1 to 20, got 0"),
        (["caption", "x.jpg", "--beam", "100000"], "--beam: must be from 1 to 20"),
        (["evaluate", "ckpt", "--limit", "0"], "--limit: must be at least 1, got 0"),
        (["evaluate", "ckpt", "--beam", "-2"], "--beam: must be from 1 to 20, got -2"),
        (["train", "--epochs", "0"], "--epochs: must be at least 1"),
        (["train", "--limit-images", "-1"], "--limit-images: must be at least 1"),
        (["train", "--epochs", "many"], "'many' is not a whole number"),
    ],
)
def test_cli_refuses_out_of_range_counts_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert message in err and "Traceback" not in err


def test_beam_option_gives_a_caption(captioner, photos):
    caption = captioner.caption(photos[0], beam_size=3)
    assert isinstance(caption, Caption) and caption.text
    assert len(caption.words) <= captioner.checkpoint.max_length


def test_debug_logging_never_lets_token_bearing_loggers_through():
    # python-telegram-bot logs the API URL, token included, at DEBUG; httpx each URL at INFO.
    import logging

    from captionbot.cli import _setup_logging

    root_level = logging.root.level
    logging.root.setLevel(logging.DEBUG)  # as a user's "level: DEBUG" leaves it
    try:
        _setup_logging("DEBUG")
        assert not logging.getLogger("telegram.Bot").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("captioner.pipeline").isEnabledFor(logging.DEBUG)
    finally:
        logging.root.setLevel(root_level)
        for name in ("telegram", "httpx", "httpcore", "absl", "tensorflow", "h5py"):
            logging.getLogger(name).setLevel(logging.NOTSET)
