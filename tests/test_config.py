"""The config loader merges a user's file over config.yaml and names every bad key."""

from pathlib import Path

import pytest

from captioner.config import BASE_CONFIG, ConfigError, load_config


def _write(tmp_path, text):
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return path


def test_defaults_come_from_the_repository_config(monkeypatch):
    monkeypatch.delenv("CAPTIONBOT_CONFIG", raising=False)
    config = load_config()
    assert config.vocabulary.max_words == 5000
    assert config.decoder.units == 256
    assert config.encoder.name == "resnet50"
    assert config.data.root == (BASE_CONFIG.parent / "../shared/data/flickr8k").resolve()


def test_user_file_overrides_a_subset_and_resolves_its_own_paths(tmp_path):
    path = _write(tmp_path, "bot:\n  admin_ids: [7, 8]\ntraining:\n  run_dir: runs/x\n")
    config = load_config(path)
    assert config.bot.admin_ids == [7, 8]
    assert config.training.run_dir == tmp_path / "runs" / "x"
    assert config.bot.max_batch == 16  # untouched default


def test_a_users_split_joins_the_default_splits(tmp_path):
    config = load_config(_write(tmp_path, "data:\n  splits:\n    mini: mini.txt\n"))
    assert set(config.data.splits) == {"train", "dev", "test", "mini"}
    assert config.data.splits["mini"] == "mini.txt"


def test_config_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONBOT_CONFIG", str(_write(tmp_path, "caption:\n  beam_size: 3\n")))
    assert load_config().caption.beam_size == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bot:\n  admin_id: [1]\n", "unknown config key 'bot.admin_id'"),
        ("nonsense: 1\n", "unknown config key 'nonsense'"),
        ("bot:\n  max_batch: many\n", "'bot.max_batch' must be an integer"),
        ("bot:\n  max_batch: true\n", "'bot.max_batch' must be an integer"),
        ("bot:\n  admin_ids: [1, x]\n", r"'bot.admin_ids\[1\]' must be an integer"),
        ("decoder:\n  dropout: high\n", "'decoder.dropout' must be a number"),
        ("bot: 3\n", "'bot' must be a mapping"),
        ("- a\n- b\n", "mapping at the top level"),
        ("bot: [\n", "not valid YAML"),
        ("caption:\n  beam_size: 0\n", "'caption.beam_size' must be from 1 to 20"),
        ("caption:\n  beam_size: 100000\n", "'caption.beam_size' must be from 1 to 20"),
        ("training:\n  eval_beam_sizes: [1, 50]\n", "'training.eval_beam_sizes' must be beam"),
        ("training:\n  learning_rate: .nan\n", "'training.learning_rate' must be a finite"),
        ("bot:\n  read_timeout_s: .inf\n", "'bot.read_timeout_s' must be a finite number"),
        ("training:\n  seed: -1\n", "'training.seed' must be from 0 to 4294967295"),
        ("bot:\n  token_env: ''\n", "'bot.token_env' must be the name of an environment"),
        ("bot:\n  base_url: not a url\n", "'bot.base_url' must be an http"),
        ("training:\n  strategy: tpu\n", "'training.strategy' must be 'default' or 'mirrored'"),
        ("decoder:\n  dropout: 1.5\n", "'decoder.dropout' must be at least 0 and below 1"),
        ("bot:\n  batch_wait_ms: -1\n", "'bot.batch_wait_ms' must not be negative"),
        ("logging:\n  level: LOUD\n", "'logging.level' must be a logging level"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_yaml_errors_and_binary_files_are_one_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, "bot: [\n  x: 1\n"))
    assert "not valid YAML" in str(caught.value) and "at line 3, column 1" in str(caught.value)
    assert "\n" not in str(caught.value)

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00b\x00o")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(binary)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_weights_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTIONBOT_WEIGHTS_DIR", str(tmp_path))
    assert load_config().encoder.weights_dir == Path(tmp_path).resolve()
