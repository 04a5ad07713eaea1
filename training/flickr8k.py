"""Reading the Flickr8k layout: a token file of captions, split files and an image folder.

The official split is used as given (train, dev, test); token-file ids outside the chosen
splits and the file's one malformed id are skipped, and images missing on disk are reported
by name and left out, so a run never trains on a caption without its photo.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from captioner.config import DataConfig
from captioner.errors import CaptionbotError

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")

# An image id is a plain file name with an image extension; "x.jpg.1" is malformed.
_IMAGE_ID = re.compile(r"^[^#/\\\s]+\.(jpe?g|png)$", re.IGNORECASE)


class DatasetError(CaptionbotError):
    """A dataset that cannot be used (missing split or token file); str() is fit to print."""


def _read_utf8(path: Path, what: str, where: str = "") -> str:
    """The text of a dataset file, or a DatasetError naming it as ``what`` and ``where``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{what} not found{where}: {path}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{what}{where} {path} is not UTF-8 text (byte {err.start} cannot be decoded); "
            f"save it as UTF-8"
        ) from None
    except OSError as err:
        raise DatasetError(f"cannot read {what}{where} {path}: {err.strerror or err}") from None


@dataclass(frozen=True)
class DatasetPaths:
    """Where the dataset's files are."""

    token_file: Path
    images_dir: Path
    splits: dict[str, Path]

    @classmethod
    def from_config(cls, data: DataConfig) -> DatasetPaths:
        """Resolve ``config.data``'s file names against its root."""
        root = Path(data.root)
        return cls(
            token_file=root / data.token_file,
            images_dir=root / data.images_dir,
            splits={name: root / file for name, file in data.splits.items()},
        )


@dataclass(frozen=True)
class SplitData:
    """The images of one split that have captions and a file on disk.

    Attributes:
        name: split name, e.g. "train".
        images: image names in split-file order.
        captions: raw captions of each image, in token-file order (five for Flickr8k).
        images_dir: folder holding the image files.
        missing: names listed in the split file whose image file is absent.
        uncaptioned: names listed in the split file that have no caption.
    """

    name: str
    images: list[str]
    captions: dict[str, list[str]]
    images_dir: Path
    missing: list[str] = field(default_factory=list)
    uncaptioned: list[str] = field(default_factory=list)

    def image_path(self, image: str) -> Path:
        """Path of one image of the split."""
        return self.images_dir / image

    @property
    def caption_count(self) -> int:
        return sum(len(self.captions[image]) for image in self.images)


def read_captions(token_file: Path) -> dict[str, list[str]]:
    """Read ``IMAGE#N<TAB>caption`` lines into raw captions per image id.

    Lines whose id is malformed (such as ``x.jpg.1#0``) or that have no tab are skipped and
    counted in one warning.

    Raises:
        DatasetError: the token file is missing, unreadable or not UTF-8.
    """
    text = _read_utf8(token_file, "caption token file")

    captions: dict[str, list[str]] = {}
    malformed: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        image = key.rsplit("#", 1)[0].strip()
        if not tab or not _IMAGE_ID.match(image):
            malformed.append(key.strip())
            continue
        captions.setdefault(image, []).append(caption.strip())
    if malformed:
        logger.warning(
            "caption lines skipped reason=malformed_id count=%d ids=%s",
            len(malformed),
            ",".join(malformed[:5]),
        )
    return captions


def read_split_file(path: Path, split: str = "") -> list[str]:
    """Read a split file: one image name a line, order kept, duplicates dropped.

    Raises:
        DatasetError: the file does not exist, cannot be read, is not UTF-8 or lists no
            image.
    """
    where = f" (split '{split}')" if split else ""
    text = _read_utf8(path, "split file", where)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        # Said here: the usual "no usable images" would point at warnings never printed.
        raise DatasetError(f"split file{where} {path} lists no images; put one image name a line")
    return list(dict.fromkeys(names))


def load_splits(
    paths: DatasetPaths,
    splits: Iterable[str] = SPLITS,
    limit_images: int | None = None,
) -> dict[str, SplitData]:
    """Load the named splits: captions from the token file, images checked on disk.

    Args:
        paths: where the dataset lives.
        splits: which splits to load; each must be named in ``paths.splits``.
        limit_images: keep only the first N usable images of each split (quick runs).

    Returns:
        One ``SplitData`` per split name.

    Raises:
        DatasetError: an unknown split name, a missing split or token file, a missing
            image folder, or a limit below 1.
    """
    if limit_images is not None and limit_images < 1:
        # A slice such as [:-3] would quietly keep all but the last images.
        raise DatasetError(f"the image limit must be at least 1, not {limit_images}")
    splits = list(splits)
    for split in splits:
        if split not in paths.splits:
            known = ", ".join(sorted(paths.splits))
            raise DatasetError(f"unknown split '{split}' (known: {known})")
    names_by_split = {split: read_split_file(paths.splits[split], split) for split in splits}
    captions = read_captions(paths.token_file)
    try:
        on_disk = set(os.listdir(paths.images_dir))
    except FileNotFoundError:
        raise DatasetError(f"image folder not found: {paths.images_dir}") from None

    in_splits = set().union(*names_by_split.values()) if names_by_split else set()
    outside = len(set(captions) - in_splits)
    if outside:
        logger.debug("caption ids outside the loaded splits count=%d (ignored)", outside)

    result = {}
    for split, names in names_by_split.items():
        uncaptioned = [name for name in names if name not in captions]
        missing = [name for name in names if name in captions and name not in on_disk]
        for name in missing:
            logger.warning("image skipped split=%s image=%s reason=missing_file", split, name)
        if uncaptioned:
            logger.warning(
                "split images without captions split=%s count=%d images=%s",
                split,
                len(uncaptioned),
                ",".join(uncaptioned[:5]),
            )
        images = [name for name in names if name in captions and name in on_disk]
        if limit_images is not None:
            images = images[:limit_images]
        if missing:
            logger.warning("images missing split=%s count=%d", split, len(missing))
        result[split] = SplitData(
            name=split,
            images=images,
            captions={name: captions[name] for name in images},
            images_dir=paths.images_dir,
            missing=missing,
            uncaptioned=uncaptioned,
        )
        logger.info(
            "split loaded split=%s images=%d captions=%d",
            split,
            len(images),
            result[split].caption_count,
        )
    return result
