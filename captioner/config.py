"""Typed settings loaded from ``config.yaml``.

The repository's ``config.yaml`` holds every default; a user's file is merged over it and may
set any subset. Unknown keys and wrong types are refused with a message naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from captioner.errors import CaptionbotError

BASE_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"
CONFIG_ENV = "CAPTIONBOT_CONFIG"
WEIGHTS_DIR_ENV = "CAPTIONBOT_WEIGHTS_DIR"

# The widest beam accepted, in the config and on the command line: each decoding step scores
# beam size x vocabulary candidates, so a beam of thousands would hold gigabytes, and past a
# handful of beams BLEU stops improving.
MAX_BEAM_SIZE = 20


class ConfigError(CaptionbotError, ValueError):
    """A configuration file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ImagesConfig:
    max_pixels: int
    max_file_bytes: int


@dataclass(frozen=True)
class EncoderConfig:
    name: str
    weights: str
    weights_dir: Path | None
    batch_size: int


@dataclass(frozen=True)
class DecoderConfig:
    embedding_dim: int
    units: int
    dropout: float


@dataclass(frozen=True)
class VocabularyConfig:
    max_words: int
    max_length_cap: int


@dataclass(frozen=True)
class CaptionConfig:
    checkpoint: Path | None
    beam_size: int


@dataclass(frozen=True)
class DataConfig:
    root: Path
    token_file: str
    images_dir: str
    splits: dict[str, str]


@dataclass(frozen=True)
class TrainingConfig:
    run_dir: Path
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int
    strategy: str
    eval_beam_sizes: list[int]


@dataclass(frozen=True)
class BotConfig:
    token_env: str
    base_url: str
    base_file_url: str
    admin_ids: list[int]
    queue_size: int
    max_batch: int
    batch_wait_ms: int
    per_user_inflight: int
    max_download_bytes: int
    read_timeout_s: float


@dataclass(frozen=True)
class LoggingConfig:
    level: str


@dataclass(frozen=True)
class Config:
    images: ImagesConfig
    encoder: EncoderConfig
    decoder: DecoderConfig
    vocabulary: VocabularyConfig
    caption: CaptionConfig
    data: DataConfig
    training: TrainingConfig
    bot: BotConfig
    logging: LoggingConfig


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line saying what PyYAML found wrong and where (its own text spans several)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _annotate_paths(data: Any, base: Path) -> Any:
    """Wrap every string leaf with the directory it is relative to (used for Path fields)."""
    if isinstance(data, dict):
        return {key: _annotate_paths(value, base) for key, value in data.items()}
    if isinstance(data, str):
        return _Located(data, base)
    return data


class _Located(str):
    """A string that remembers the directory of the file that set it."""

    base: Path

    def __new__(cls, value: str, base: Path) -> _Located:
        obj = super().__new__(cls, value)
        obj.base = base
        return obj


def _merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{dotted}'")
        if isinstance(base[key], dict) and not _is_free_mapping(dotted):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' must be a mapping")
            merged[key] = _merge(base[key], value, f"{dotted}.")
        elif _is_free_mapping(dotted) and isinstance(value, dict):
            merged[key] = {**base[key], **value}  # a new split joins train, dev and test
        else:
            merged[key] = value
    return merged


def _is_free_mapping(dotted: str) -> bool:
    # data.splits maps split names to files; users may name their own splits.
    return dotted == "data.splits"


def _convert(value: Any, kind: Any, dotted: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(value, inner, dotted)
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config key '{dotted}' must be a path, got {value!r}")
        path = Path(os.path.expanduser(value))
        if not path.is_absolute() and isinstance(value, _Located):
            path = (value.base / path).resolve()
        return path
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{dotted}' must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{dotted}' must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{dotted}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{dotted}' must be a finite number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{dotted}' must be a string, got {value!r}")
        return str(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{dotted}' must be a list, got {value!r}")
        (inner,) = typing.get_args(kind)
        return [_convert(item, inner, f"{dotted}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{dotted}' must be a mapping, got {value!r}")
        _, inner = typing.get_args(kind)
        return {str(k): _convert(v, inner, f"{dotted}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, f"{dotted}.")
    raise TypeError(f"unsupported config type {kind!r} for '{dotted}'")


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    values = {}
    for name in names:
        if name not in data:
            raise ConfigError(f"missing config key '{prefix}{name}'")
        values[name] = _convert(data[name], hints[name], f"{prefix}{name}")
    return cls(**values)


_HTTP_ADDRESS = (lambda v: v.startswith(("http://", "https://")), "an http(s) address")

# Values that a type alone does not constrain: dotted key -> (check, what it must be).
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "training.strategy": (lambda v: v in ("default", "mirrored"), "'default' or 'mirrored'"),
    "logging.level": (
        lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        "a logging level such as INFO",
    ),
    "decoder.dropout": (lambda v: 0.0 <= v < 1.0, "at least 0 and below 1"),
    "caption.beam_size": (lambda v: 1 <= v <= MAX_BEAM_SIZE, f"from 1 to {MAX_BEAM_SIZE}"),
    "training.eval_beam_sizes": (
        lambda v: all(1 <= b <= MAX_BEAM_SIZE for b in v),
        f"beam sizes from 1 to {MAX_BEAM_SIZE}",
    ),
    "training.seed": (lambda v: 0 <= v < 2**32, "from 0 to 4294967295 (2**32 - 1)"),
    "bot.token_env": (lambda v: bool(v.strip()), "the name of an environment variable"),
    "bot.base_url": _HTTP_ADDRESS,
    "bot.base_file_url": _HTTP_ADDRESS,
}
_POSITIVE = (
    "images.max_pixels",
    "images.max_file_bytes",
    "encoder.batch_size",
    "decoder.embedding_dim",
    "decoder.units",
    "vocabulary.max_words",
    "vocabulary.max_length_cap",
    "training.epochs",
    "training.batch_size",
    "training.learning_rate",
    "bot.queue_size",
    "bot.max_batch",
    "bot.per_user_inflight",
    "bot.max_download_bytes",
    "bot.read_timeout_s",
)


def _validate(config: Config) -> None:
    def value(dotted: str) -> Any:
        section, key = dotted.split(".")
        return getattr(getattr(config, section), key)

    for dotted in _POSITIVE:
        if value(dotted) <= 0:
            raise ConfigError(f"config key '{dotted}' must be positive, got {value(dotted)!r}")
    for dotted, (check, wanted) in _RULES.items():
        if not check(value(dotted)):
            raise ConfigError(f"config key '{dotted}' must be {wanted}, got {value(dotted)!r}")
    for dotted in ("bot.batch_wait_ms", "training.patience"):
        if value(dotted) < 0:
            raise ConfigError(f"config key '{dotted}' must not be negative, got {value(dotted)!r}")


def load_config(path: str | Path | None = None) -> Config:
    """Load the settings: the repository's config.yaml, with ``path`` merged over it.

    Args:
        path: a user's YAML file; when None, ``$CAPTIONBOT_CONFIG`` if set.

    Returns:
        The typed, validated settings.

    Raises:
        ConfigError: unreadable file, unknown key or wrong type (the message names the key).
    """
    data = _annotate_paths(_read_yaml(BASE_CONFIG), BASE_CONFIG.parent)
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    if path is not None:
        user_path = Path(path).resolve()
        data = _merge(data, _annotate_paths(_read_yaml(user_path), user_path.parent))
    config = _build(Config, data)
    _validate(config)

    weights_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if weights_dir:
        encoder = dataclasses.replace(config.encoder, weights_dir=Path(weights_dir).resolve())
        config = dataclasses.replace(config, encoder=encoder)
    return config
