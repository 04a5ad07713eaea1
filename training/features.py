"""On-disk cache of image features, one per encoder and weights, filled by a resumable pass.

Features are written chunk by chunk into a NumPy memmap; after each chunk a small progress
file records how many rows are done, so a pass that is interrupted (even by SIGKILL) resumes
at the first unfinished chunk. Later runs and evaluation reuse any complete cache of the same
encoder and weights that holds the images they need, without calling the encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from captioner.atomic import write_text_atomic
from captioner.config import Config
from captioner.errors import CaptionbotError
from captioner.images import DEFAULT_MAX_PIXELS, ImageError, load_image

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_CHUNK = 256


CACHE_FOLDER = "feature cache folder"  # as messages name it


class FeatureError(CaptionbotError):
    """Features that cannot be had, e.g. a checkpoint's encoder weights are not here."""


@dataclass
class FeatureStore:
    """Features of a set of images, one row per image, for one encoder and weights.

    Attributes:
        path: the ``.npy`` file holding the rows.
        encoder: encoder name.
        weights_id: id of the encoder weights the features came from.
        names: image names, row order.
        features: (len(names), D) float32, memory-mapped read-only.
        input_size: (height, width) the images were squashed to for the encoder.
        failed: images that could not be read; their rows are zeros and must not be used.
    """

    path: Path
    encoder: str
    weights_id: str
    names: list[str]
    features: np.ndarray
    input_size: tuple[int, int]
    failed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._rows = {name: row for row, name in enumerate(self.names)}

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def usable(self, names: Sequence[str]) -> list[str]:
        """The subset of ``names`` that have features, order kept."""
        return [name for name in names if name in self._rows and name not in self.failed]

    def get(self, names: Sequence[str]) -> np.ndarray:
        """Rows of ``names`` as an in-memory (len(names), D) float32 array.

        Raises:
            KeyError: a name without features (not cached, or its image failed).
        """
        for name in names:
            if name not in self._rows or name in self.failed:
                raise KeyError(f"no features for image {name}")
        rows = np.fromiter((self._rows[name] for name in names), dtype=np.int64, count=len(names))
        return np.asarray(self.features[rows], dtype=np.float32)  # (len(names), D)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def cache_prefix(encoder: str, weights_id: str) -> str:
    """File-name prefix of every cache of one encoder and weights."""
    return f"{_safe(encoder)}-{_safe(weights_id)}"


def _names_digest(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()[:12]


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_cached(
    cache_dir: Path, encoder: str, weights_id: str, names: Sequence[str]
) -> FeatureStore | None:
    """A complete cache of this encoder and weights that holds every image of ``names``.

    Images recorded as failed count as held: they were tried, and trying again would fail
    the same way.
    """
    # Limitation: caches are keyed by image name, not file content; an image replaced under
    # the same name keeps its old features until the cache file is deleted.
    cache_dir = Path(cache_dir)
    wanted = set(names)
    for index_path in sorted(cache_dir.glob(f"{cache_prefix(encoder, weights_id)}-*.json")):
        index = _read_json(index_path)
        if not index or not index.get("complete") or index.get("format") != CACHE_FORMAT:
            continue
        if index.get("encoder") != encoder or index.get("weights_id") != weights_id:
            continue
        if not wanted.issubset(index["images"]):
            continue
        return _open_store(index_path, index)
    return None


def _open_store(index_path: Path, index: dict) -> FeatureStore:
    array_path = index_path.with_suffix(".npy")
    features = np.load(array_path, mmap_mode="r")  # (N, D)
    return FeatureStore(
        path=array_path,
        encoder=index["encoder"],
        weights_id=index["weights_id"],
        names=list(index["images"]),
        features=features,
        input_size=tuple(index["input_size"]),
        failed=set(index.get("failed", [])),
    )


def extract_features(
    encoder,
    images: dict[str, Path],
    cache_dir: Path,
    *,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> FeatureStore:
    """Features of ``images`` from the cache, extracting (or finishing) them when needed.

    Args:
        encoder: a ``captioner.encoders.Encoder`` (name, weights_id, feature_dim, input_size,
            encode).
        images: image name -> file path, in the row order wanted for a new cache.
        cache_dir: folder of the caches; created when missing.
        batch_size: images per encoder call.
        max_pixels: decompression-bomb limit handed to ``load_image``.
        chunk_size: images encoded and flushed to disk between progress records.
        progress: show a tqdm progress bar.
        on_chunk: called with the number of rows done after each flushed chunk.

    Returns:
        A store holding at least every image of ``images`` (unreadable ones as ``failed``).
    """
    cache_dir = ensure_cache_dir(cache_dir)
    names = list(images)
    cached = find_cached(cache_dir, encoder.name, encoder.weights_id, names)
    if cached is not None:
        logger.info(
            "features reused encoder=%s weights_id=%s images=%d cache=%s",
            encoder.name,
            encoder.weights_id,
            len(names),
            cached.path,
        )
        return cached

    stem = f"{cache_prefix(encoder.name, encoder.weights_id)}-{_names_digest(names)}"
    index_path = cache_dir / f"{stem}.json"
    array_path = cache_dir / f"{stem}.npy"
    progress_path = cache_dir / f"{stem}.progress"
    index = {
        "format": CACHE_FORMAT,
        "encoder": encoder.name,
        "weights_id": encoder.weights_id,
        "feature_dim": int(encoder.feature_dim),
        "input_size": list(encoder.input_size),
        "images": names,
        "complete": False,
    }

    # Resume only a pass over the very same images and shape; anything else starts over.
    state = _read_json(progress_path)
    previous = _read_json(index_path)
    resumable = (
        state is not None
        and previous is not None
        and previous.get("images") == names
        and previous.get("feature_dim") == index["feature_dim"]
        and array_path.exists()
    )
    if resumable:
        features = np.load(array_path, mmap_mode="r+")
        done, failed = int(state["done"]), list(state["failed"])
        logger.info("features resumed encoder=%s done=%d of=%d", encoder.name, done, len(names))
    else:
        try:
            _write_json(index_path, index)
            features = np.lib.format.open_memmap(
                array_path, mode="w+", dtype=np.float32, shape=(len(names), index["feature_dim"])
            )  # (N, D), zeros
            _write_json(progress_path, {"done": 0, "failed": []})
        except OSError as err:
            raise folder_error(FeatureError, CACHE_FOLDER, cache_dir, "write in", err) from None
        done, failed = 0, []

    started = time.perf_counter()
    size = tuple(encoder.input_size)

    def load_chunk(start: int) -> tuple[list[int], list[np.ndarray], list[str]]:
        rows, arrays, unreadable = [], [], []
        for row in range(start, min(start + chunk_size, len(names))):
            name = names[row]
            try:
                arrays.append(load_image(images[name], size=size, max_pixels=max_pixels))
                rows.append(row)
            except (ImageError, OSError) as err:
                logger.warning("image skipped image=%s reason=%s", name, _reason(err))
                unreadable.append(name)
        return rows, arrays, unreadable

    bar = tqdm(
        total=len(names), initial=done, unit="img", desc=f"features {encoder.name}",
        disable=None if progress else True,  # None: a bar only on a terminal
    )  # fmt: skip
    # Decode the next chunk's JPEGs on a thread while the encoder works on this one.
    with ThreadPoolExecutor(max_workers=1) as pool, bar:
        pending = pool.submit(load_chunk, done) if done < len(names) else None
        while pending is not None:
            rows, arrays, unreadable = pending.result()
            failed.extend(unreadable)
            start = done
            done = min(start + chunk_size, len(names))
            pending = pool.submit(load_chunk, done) if done < len(names) else None
            if rows:
                batch = np.stack(arrays)  # (n, H, W, 3)
                encoded = encoder.encode(batch, batch_size=batch_size)  # (n, D)
                features[rows] = encoded
            features.flush()
            _write_json(progress_path, {"done": done, "failed": failed})
            bar.update(done - start)
            if on_chunk is not None:
                on_chunk(done)
    del features

    index["failed"] = failed
    index["complete"] = True
    _write_json(index_path, index)
    progress_path.unlink(missing_ok=True)
    if failed:
        logger.warning("images skipped reason=unreadable count=%d", len(failed))
    logger.info(
        "features extracted encoder=%s weights_id=%s images=%d failed=%d seconds=%.1f",
        encoder.name,
        encoder.weights_id,
        len(names),
        len(failed),
        time.perf_counter() - started,
    )
    return _open_store(index_path, index)


def _reason(err: Exception) -> str:
    if isinstance(err, ImageError):
        return err.kind
    return type(err).__name__


def encoder_weights_for(name: str, config: Config) -> str:
    """The weights setting to build encoder ``name`` with: the config's for its own encoder,
    the published ImageNet weights for any other (as the captioner does)."""
    return config.encoder.weights if name == config.encoder.name else "imagenet"


def folder_error(
    error: type[CaptionbotError], what: str, folder: Path, doing: str, err: OSError
) -> CaptionbotError:
    """``error`` saying that the run's ``what`` at ``folder`` cannot be created or written."""
    return error(
        f"cannot {doing} the {what} {folder}: {err.strerror or err}; by default it lies "
        f"beside training.run_dir, so set training.run_dir in a config file to a writable "
        f"place"
    )


def ensure_folder(folder: str | Path, what: str, error: type[CaptionbotError]) -> Path:
    """Create a folder that a run writes in (feature cache, evaluation files), or ``error``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise folder_error(error, what, folder, "create", err) from None
    return folder


def ensure_cache_dir(cache_dir: str | Path) -> Path:
    """Create the feature cache folder, or a FeatureError naming it."""
    return ensure_folder(cache_dir, CACHE_FOLDER, FeatureError)


def default_cache_dir(config: Config) -> Path:
    """Where features are cached by default: ``features/`` beside the configured run dir."""
    return Path(config.training.run_dir).parent / "features"


def features_for(
    images: dict[str, Path],
    config: Config,
    encoder_name: str,
    cache_dir: Path,
    *,
    weights_id: str | None = None,
    progress: bool = True,
) -> FeatureStore:
    """Features of ``images`` for encoder ``encoder_name``: cached, else extracted.

    Args:
        images: image name -> file path.
        config: settings (encoder weights, batch size, pixel limit).
        encoder_name: registry name of the encoder.
        cache_dir: feature cache folder.
        weights_id: the weights the features must come from (a checkpoint's); when given, a
            matching cache is used without building the encoder at all.
        progress: show a progress bar while extracting.

    Raises:
        FeatureError: the encoder that can be built here has other weights than
            ``weights_id``.
    """
    if weights_id is not None:
        cached = find_cached(cache_dir, encoder_name, weights_id, list(images))
        if cached is not None:
            logger.info("features reused encoder=%s weights_id=%s", encoder_name, weights_id)
            return cached

    from captioner.encoders import build_encoder

    encoder = build_encoder(
        encoder_name,
        weights=encoder_weights_for(encoder_name, config),
        weights_dir=config.encoder.weights_dir,
    )
    if weights_id is not None and encoder.weights_id != weights_id:
        raise FeatureError(
            f"the checkpoint was trained on {encoder_name} features from weights {weights_id}, "
            f"but the weights found here are {encoder.weights_id} and no cached features "
            f"match; point encoder.weights at the original weights file"
        )
    return extract_features(
        encoder,
        images,
        cache_dir,
        batch_size=config.encoder.batch_size,
        max_pixels=config.images.max_pixels,
        progress=progress,
    )
