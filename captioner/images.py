"""Turn image bytes or an image file into the encoder's input array.

`load_image` is the single decoding path for training and inference alike: it refuses bad
inputs with a typed `ImageError` whose message can be shown to a user, and otherwise returns
an (H, W, 3) float32 RGB array in 0..255 squashed to the requested size.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from captioner.errors import CaptionbotError

logger = logging.getLogger(__name__)

# Fallback for callers that do not pass `images.max_pixels` from config.yaml (the source).
DEFAULT_MAX_PIXELS = 40_000_000

# Most bytes read from a pipe or device when the caller sets no byte limit (/dev/zero never
# ends); a 40-megapixel photo is well under it.
STREAM_MAX_BYTES = 256 * 2**20

# Pillow plugins allowed to open an input ("JPEG" also opens MPO, the format of many phone
# photos). A short list keeps exotic decoders (EPS runs Ghostscript) away from untrusted bytes.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# Bilinear, not Keras' default "nearest": Pillow widens the bilinear filter when it shrinks, so a
# large phone photo is averaged instead of aliased. Inputs already at `size` are not resampled.
RESAMPLE = Image.Resampling.BILINEAR

_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

# Pillow warns, on stderr, of large images (ours is the stricter pixel limit, checked before
# decoding) and of damaged TIFF/EXIF tags (the image is still decoded, or refused, on its own
# terms): neither is news to the person at the terminal.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


MEGABYTE = 2**20  # "MB" in every message means 1,048,576 bytes, as Telegram's "20 MB" does


def megabytes(n_bytes: int, *, round_up: bool = False) -> str:
    """A byte count in binary megabytes as people read it: "20 MB", "2.5 MB", "19.1 MB".

    Whole megabytes show no decimals; others show one, up to 100 MB. ``round_up`` rounds up
    instead of to the nearest, so a file just over a limit never reads as the limit itself.
    """
    tenths = n_bytes * 10
    # Integer arithmetic, so no float error can round an exact 20 MB up to "20.1 MB".
    tenths = -(-tenths // MEGABYTE) if round_up else (tenths + MEGABYTE // 2) // MEGABYTE
    if tenths % 10 == 0 or tenths >= 1000:
        whole = -(-tenths // 10) if round_up else (tenths + 5) // 10
        return f"{whole} MB"
    return f"{tenths // 10}.{tenths % 10} MB"


class ImageError(CaptionbotError):
    """Refusal of an input; str(err) / err.user_message is fit to show a user.

    Attributes:
        kind: short machine key, one of "empty", "not_found", "unreadable", "not_image",
            "too_large", "truncated", "unsupported".
        user_message: plain sentence for the person who sent the image.
        detail: technical reason for logs (never image bytes); not meant for users.
    """

    def __init__(self, kind: str, user_message: str, detail: str = "") -> None:
        super().__init__(user_message)
        self.kind = kind
        self.user_message = user_message
        self.detail = detail

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str, str]]:
        # Survives pickling, so worker processes can hand refusals back.
        return (type(self), (self.kind, self.user_message, self.detail))

    def __repr__(self) -> str:
        return f"ImageError(kind={self.kind!r}, user_message={self.user_message!r})"


def load_image(
    source: bytes | str | Path,
    size: tuple[int, int] = (224, 224),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decode an image and squash it to `size`, ready for an encoder's `preprocess`.

    The first frame of an animation (GIF, WebP, PNG) or the first page of a TIFF is used. EXIF
    orientation is applied before resizing. Transparent areas are composited on white; 16-bit
    grey is scaled (65535 -> 255), not clipped. The aspect ratio is not kept, as with Keras'
    `load_img(target_size=size)`; resampling is bilinear (see `RESAMPLE`), and an image already
    at `size` passes through unresampled, so the 224 x 224 Flickr8k files keep their exact pixels.

    Args:
        source: encoded image bytes, or a path to an image file.
        size: output (height, width), Keras' `target_size` order.
        max_pixels: refuse images whose header claims more pixels than this, before decoding.
        max_bytes: refuse inputs longer than this many bytes; None for no limit.

    Returns:
        (height, width, 3) float32 RGB array, values in 0..255.

    Raises:
        ImageError: the input cannot be used; `kind` says why.
        TypeError, ValueError: the arguments themselves are wrong (a caller's bug).
    """
    height, width = _check_size(size)
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: BinaryIO = io.BytesIO(bytes(source))
        n_bytes = len(stream.getbuffer())
    elif isinstance(source, (str, os.PathLike)):
        stream, n_bytes = _open_file(Path(source), max_bytes)
    else:
        raise TypeError(f"source must be bytes or a path, got {type(source).__name__}")

    with stream:
        if n_bytes == 0:
            raise _refuse("empty", "The file is empty.", "0 bytes")
        if max_bytes is not None and n_bytes > max_bytes:
            raise _too_many_bytes(n_bytes, max_bytes)
        with _open_image(stream, max_pixels) as image:
            return _decode(image, height, width, max_pixels)


def load_images(
    sources: Iterable[bytes | str | Path],
    size: tuple[int, int] = (224, 224),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    max_bytes: int | None = None,
) -> list[np.ndarray | ImageError]:
    """Load each source with `load_image`; a refused one yields its ImageError in its place."""
    results: list[np.ndarray | ImageError] = []
    for source in sources:
        try:
            results.append(load_image(source, size, max_pixels, max_bytes=max_bytes))
        except ImageError as err:
            results.append(err)
    return results


def _open_file(path: Path, max_bytes: int | None) -> tuple[BinaryIO, int]:
    """Open a file for decoding: a regular file as it is, anything else read into memory.

    A pipe or device (``<(cat photo.jpg)``, ``/dev/stdin``) reports no size, so it is read
    whole, at most one byte past the limit, and its real length is what counts.
    """
    try:
        stream = path.open("rb")
    except FileNotFoundError as exc:
        raise _refuse("not_found", "The image file was not found.", str(exc)) from None
    except OSError as exc:  # a directory, no permission, a symlink loop, ...
        raise _refuse("unreadable", "The image file could not be read.", str(exc)) from None
    info = os.fstat(stream.fileno())
    if stat.S_ISREG(info.st_mode):
        return stream, info.st_size
    limit = max_bytes if max_bytes is not None else STREAM_MAX_BYTES
    with stream:
        try:
            data = stream.read(limit + 1)
        except OSError as exc:
            raise _refuse("unreadable", "The image file could not be read.", str(exc)) from None
    if len(data) > limit:
        raise _too_many_bytes(len(data), limit)
    return io.BytesIO(data), len(data)


def _too_many_bytes(n_bytes: int, limit: int) -> ImageError:
    return _refuse(
        "too_large",
        f"The file is too large ({megabytes(n_bytes, round_up=True)}; the limit is "
        f"{megabytes(limit)}).",
        f"bytes={n_bytes} max_bytes={limit}",
    )


def _open_image(stream: BinaryIO, max_pixels: int) -> Image.Image:
    """Identify the format and parse the header; no pixel data is decoded yet."""
    try:
        return Image.open(stream, formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires at twice Image.MAX_IMAGE_PIXELS, only if ours is set higher.
        raise _refuse("too_large", _too_many_pixels(None, max_pixels), str(exc)) from None
    except Exception as exc:  # UnidentifiedImageError, or any parser failure on bad bytes
        raise _not_image(f"{type(exc).__name__}: {exc}") from None


def _decode(image: Image.Image, height: int, width: int, max_pixels: int) -> np.ndarray:
    # Image.open only parsed the header: check the claimed size before any pixel buffer exists.
    claimed_width, claimed_height = image.size
    pixels = claimed_width * claimed_height
    if pixels <= 0:
        raise _not_image(f"size={claimed_width}x{claimed_height}")
    if pixels > max_pixels:
        raise _refuse(
            "too_large",
            _too_many_pixels((claimed_width, claimed_height), max_pixels),
            f"size={claimed_width}x{claimed_height} max_pixels={max_pixels}",
        )

    try:
        image.load()
    except MemoryError:
        raise _refuse(
            "too_large", _too_many_pixels(image.size, max_pixels), "out of memory decoding"
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        raise _refuse(
            "truncated",
            "The image looks incomplete or damaged, so I could not read it.",
            f"{image.format}: {type(exc).__name__}: {exc}",
        ) from None

    try:
        # Pixels are loaded, so a failure here can only come from malformed EXIF.
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:
        logger.debug("exif orientation ignored format=%s reason=%s", image.format, exc)
        oriented = image

    try:
        rgb = _to_rgb(oriented)
    except Exception as exc:
        raise _refuse(
            "unsupported",
            "This image uses a colour format I cannot read. Please send it as JPEG or PNG.",
            f"mode={oriented.mode}: {type(exc).__name__}: {exc}",
        ) from None

    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), RESAMPLE)
    return np.asarray(rgb, dtype=np.float32)  # (height, width, 3)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB image: high bit depths scaled, transparency composited on white."""
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        # Limitation: transparency of 16-bit and float images is ignored.
        values = np.asarray(image)  # (H, W) uint16 / int32 / float32
        if mode == "F":
            # Limitation: float images are taken to span 0..1, the usual convention for them.
            scaled = np.clip(values, 0.0, 1.0) * 255.0
        else:
            # 16-bit grey spans 0..65535; 32-bit integer images are read on the same scale.
            scaled = np.clip(values, 0, 65535) / 257.0
        grey = Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
        return grey.convert("RGB")

    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")

    # Limitation: embedded ICC profiles are not applied; CMYK uses Pillow's plain conversion.
    return image if mode == "RGB" else image.convert("RGB")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = size
    if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
        raise ValueError(f"size must be two positive ints (height, width), got {size!r}")
    return height, width


def _too_many_pixels(claimed: tuple[int, int] | None, max_pixels: int) -> str:
    shown = f"{claimed[0]} x {claimed[1]} pixels; " if claimed else ""
    return (
        f"The image is too large ({shown}the limit is {max_pixels:,} pixels). "
        "Please send a smaller one."
    )


def _not_image(detail: str) -> ImageError:
    return _refuse(
        "not_image",
        "This file is not an image I can read. "
        "Please send a JPEG, PNG, GIF, WebP, BMP or TIFF picture.",
        detail,
    )


def _refuse(kind: str, user_message: str, detail: str) -> ImageError:
    logger.debug("image refused kind=%s detail=%s", kind, detail)
    return ImageError(kind, user_message, detail)
