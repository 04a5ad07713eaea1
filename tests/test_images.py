"""Tests for captioner.images: every input is generated here with Pillow, nothing is committed.

Pixel values are checked on real decodes: formats, colour modes, EXIF orientation, resizing,
and each way an input is refused.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.images import ImageError, load_image, load_images, megabytes

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
FLICKR_IMAGES = Path("/work/shared/data/flickr8k/images")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def halves(width: int = 32, height: int = 24) -> Image.Image:
    """RGB image, red left half, blue right half."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def png_bytes(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose IDAT holds almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4))
        + chunk(b"IEND", b"")
    )


def refusal(source: object, **kwargs: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    return info.value


# Formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 12),
        ("PNG", {}, 0),
        ("GIF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("MPO", {"quality": 95}, 12),
    ],
)
@pytest.mark.parametrize("as_path", [False, True])
def test_formats_decode_to_rgb(
    fmt: str, params: dict, tolerance: int, as_path: bool, tmp_path: Path
) -> None:
    data = encode(halves(), fmt, **params)
    source: bytes | Path = data
    if as_path:
        source = tmp_path / f"image.{fmt.lower()}"
        source.write_bytes(data)

    array = load_image(source, size=(24, 32))

    assert array.shape == (24, 32, 3)
    assert array.dtype == np.float32
    np.testing.assert_allclose(array[12, 4], RED, atol=tolerance)
    np.testing.assert_allclose(array[12, 28], BLUE, atol=tolerance)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {}), ("TIFF", {})],
)
def test_first_frame_of_animation_or_multipage(fmt: str, params: dict) -> None:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **params)
    assert Image.open(io.BytesIO(data)).n_frames == 2

    array = load_image(data, size=(8, 8))

    np.testing.assert_array_equal(array, np.full((8, 8, 3), RED, dtype=np.float32))


# Colour modes -----------------------------------------------------------------------------


def test_grey_l() -> None:
    array = load_image(encode(Image.new("L", (4, 4), 100), "PNG"), size=(4, 4))
    np.testing.assert_array_equal(array[0, 0], (100, 100, 100))


def test_one_bit() -> None:
    image = Image.new("1", (4, 4), 0)
    image.putpixel((3, 3), 1)
    array = load_image(encode(image, "PNG"), size=(4, 4))
    np.testing.assert_array_equal(array[0, 0], (0, 0, 0))
    np.testing.assert_array_equal(array[3, 3], WHITE)


def test_grey_with_alpha_la_composited_on_white() -> None:
    image = Image.new("LA", (2, 1), (50, 255))
    image.putpixel((1, 0), (50, 0))
    array = load_image(encode(image, "PNG"), size=(1, 2))
    np.testing.assert_array_equal(array[0, 0], (50, 50, 50))
    np.testing.assert_array_equal(array[0, 1], WHITE)


def test_palette_p() -> None:
    image = halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert image.mode == "P"
    array = load_image(encode(image, "PNG"), size=(24, 32))
    np.testing.assert_array_equal(array[0, 0], RED)
    np.testing.assert_array_equal(array[0, 31], BLUE)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_composited_on_white(fmt: str) -> None:
    image = halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    blue_index = image.getpixel((31, 0))
    data = encode(image, fmt, transparency=blue_index)
    assert Image.open(io.BytesIO(data)).mode == "P"

    array = load_image(data, size=(24, 32))

    np.testing.assert_array_equal(array[0, 0], RED)
    np.testing.assert_array_equal(array[0, 31], WHITE)


@pytest.mark.parametrize(("fmt", "params"), [("PNG", {}), ("WEBP", {"lossless": True})])
def test_rgba_transparent_areas_become_white(fmt: str, params: dict) -> None:
    image = Image.new("RGBA", (3, 1), (255, 0, 0, 255))
    image.putpixel((1, 0), (0, 0, 0, 0))  # transparent black
    image.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    array = load_image(encode(image, fmt, **params), size=(1, 3))
    np.testing.assert_array_equal(array[0, 0], RED)
    np.testing.assert_array_equal(array[0, 1], WHITE)
    np.testing.assert_allclose(array[0, 2], (127, 127, 127), atol=1)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_pure_cyan(fmt: str) -> None:
    data = encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    array = load_image(data, size=(8, 8))
    np.testing.assert_allclose(array[4, 4], (0, 255, 255), atol=3)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grey_is_scaled_not_clipped(fmt: str) -> None:
    values = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16)
    data = encode(Image.fromarray(values), fmt)
    assert Image.open(io.BytesIO(data)).mode == "I;16"

    array = load_image(data, size=(1, 4))

    np.testing.assert_array_equal(array[0, :, 0], (0, 128, 255, 4))  # 1000 / 257 = 3.9
    np.testing.assert_array_equal(array[0, :, 0], array[0, :, 2])


def test_thirty_two_bit_integer_read_on_sixteen_bit_scale() -> None:
    image = Image.new("I", (3, 1))
    image.putdata([-5, 10 * 257, 70000])
    array = load_image(encode(image, "TIFF"), size=(1, 3))
    np.testing.assert_array_equal(array[0, :, 1], (0, 10, 255))


def test_float_image_read_as_zero_to_one() -> None:
    image = Image.new("F", (3, 1))
    image.putdata([0.0, 0.5, 2.0])
    array = load_image(encode(image, "TIFF"), size=(1, 3))
    np.testing.assert_array_equal(array[0, :, 0], (0, 128, 255))


# Orientation and geometry -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(
    ("orientation", "size", "red_at", "blue_at"),
    [
        # Stored 64 wide x 32 tall, red top-left quadrant. Orientation 6 means "rotate 90
        # degrees clockwise to display": the result is 32 wide x 64 tall, red top-right.
        (1, (32, 64), (8, 16), (8, 48)),
        (6, (64, 32), (16, 24), (16, 8)),
        (3, (32, 64), (24, 48), (8, 16)),
        (8, (64, 32), (48, 8), (16, 8)),
    ],
)
def test_exif_orientation_applied_before_resize(
    fmt: str,
    orientation: int,
    size: tuple[int, int],
    red_at: tuple[int, int],
    blue_at: tuple[int, int],
) -> None:
    image = Image.new("RGB", (64, 32), BLUE)
    image.paste(RED, (0, 0, 32, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(image, fmt, exif=exif.tobytes())

    array = load_image(data, size=size)

    assert array.shape == (*size, 3)
    np.testing.assert_allclose(array[red_at], RED, atol=12)
    np.testing.assert_allclose(array[blue_at], BLUE, atol=12)


def test_output_shape_is_height_width_and_writable() -> None:
    array = load_image(encode(halves(), "PNG"), size=(30, 50))
    assert array.shape == (30, 50, 3)
    assert array.dtype == np.float32
    assert array.flags.writeable and array.flags.c_contiguous
    assert 0.0 <= array.min() and array.max() <= 255.0


def test_one_by_one_pixel() -> None:
    array = load_image(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert array.shape == (224, 224, 3)
    np.testing.assert_array_equal(array, np.broadcast_to((10, 20, 30), (224, 224, 3)))


def test_wide_strip_is_squashed_not_cropped() -> None:
    array = load_image(encode(halves(4000, 10), "PNG"))
    assert array.shape == (224, 224, 3)
    np.testing.assert_array_equal(array[:, :100], np.broadcast_to(RED, (224, 100, 3)))
    np.testing.assert_array_equal(array[:, 124:], np.broadcast_to(BLUE, (224, 100, 3)))


def test_shrinking_averages_instead_of_picking_a_pixel() -> None:
    # Bilinear resampling widens its filter when shrinking; "nearest" would give 0 or 255.
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 255
    array = load_image(encode(Image.fromarray(checker.astype(np.uint8)), "PNG"), size=(8, 8))
    np.testing.assert_allclose(array, 127.5, atol=2)


def test_real_flickr8k_image_passes_unchanged() -> None:
    paths = sorted(FLICKR_IMAGES.glob("*.jpg"))[:1] if FLICKR_IMAGES.is_dir() else []
    if not paths:
        pytest.skip(f"no Flickr8k images under {FLICKR_IMAGES}")
    with Image.open(paths[0]) as image:
        expected = np.asarray(image.convert("RGB"), dtype=np.float32)

    array = load_image(paths[0])

    assert array.shape == (224, 224, 3)
    np.testing.assert_array_equal(array, expected)
    np.testing.assert_array_equal(load_image(str(paths[0])), array)
    np.testing.assert_array_equal(load_image(paths[0].read_bytes()), array)


def test_bytearray_and_memoryview_accepted() -> None:
    data = encode(halves(), "PNG")
    expected = load_image(data)
    np.testing.assert_array_equal(load_image(bytearray(data)), expected)
    np.testing.assert_array_equal(load_image(memoryview(data)), expected)


# Refusals ---------------------------------------------------------------------------------


def test_empty_bytes_and_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert refusal(b"").kind == "empty"
    assert refusal(empty).kind == "empty"


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is not a picture\n",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        b"\xff\xd8\xff",  # a JPEG start and nothing else
        bytes(range(256)) * 4,
    ],
)
def test_non_image_bytes(data: bytes) -> None:
    assert refusal(data).kind == "not_image"


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "PCX", "TGA"])
def test_images_outside_supported_formats_are_refused(fmt: str) -> None:
    data = encode(halves(), fmt)
    Image.open(io.BytesIO(data)).load()  # Pillow itself reads it
    assert refusal(data).kind == "not_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_files_are_refused(fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    error = refusal(data[: len(data) // 2])
    assert error.kind in {"truncated", "not_image"}
    if fmt != "WEBP":  # libwebp refuses a cut file while its header is read
        assert error.kind == "truncated"


def test_decompression_bomb_header_refused_before_decoding() -> None:
    # 40000 x 40000 RGB would need 4.8 GB; its IDAT holds 4 bytes.
    error = refusal(png_bytes(40_000, 40_000))
    assert error.kind == "too_large"
    assert "pixels" in str(error)


def test_own_pixel_limit_checked_before_decoding() -> None:
    # Below Pillow's own bomb limit, so only load_image's check stands in the way. Were the
    # pixels decoded first, the 4-byte IDAT would make this a "truncated" refusal instead.
    assert Image.open(io.BytesIO(png_bytes(8000, 8000))).size == (8000, 8000)
    assert refusal(png_bytes(8000, 8000)).kind == "too_large"

    small = png_bytes(10, 10)
    assert refusal(small).kind == "truncated"
    assert refusal(small, max_pixels=99).kind == "too_large"
    assert load_image(encode(halves(10, 10), "PNG"), max_pixels=100).shape == (224, 224, 3)


def test_file_byte_limit() -> None:
    data = encode(halves(), "PNG")
    assert refusal(data, max_bytes=len(data) - 1).kind == "too_large"
    assert load_image(data, max_bytes=len(data)).shape == (224, 224, 3)

    # Sizes are given in the same megabytes as the limit's own description ("20 MB").
    error = refusal(data + bytes(21 * 2**20 - len(data)), max_bytes=20 * 2**20)
    assert "(21 MB; the limit is 20 MB)" in str(error)
    just_over = refusal(data + bytes(20 * 2**20 - len(data) + 1), max_bytes=20 * 2**20)
    assert "(20.1 MB; the limit is 20 MB)" in str(just_over)


@pytest.mark.parametrize(
    ("n_bytes", "nearest", "up"),
    [
        (20 * 2**20, "20 MB", "20 MB"),  # config.yaml's 20971520: Telegram's "20 MB"
        (20 * 2**20 + 1, "20 MB", "20.1 MB"),
        (25 * 2**20, "25 MB", "25 MB"),
        (5 * 2**19, "2.5 MB", "2.5 MB"),
        (20_000_000, "19.1 MB", "19.1 MB"),  # a decimal "20 MB" is under the binary 20 MB
        (10 * 2**20 - 1, "10 MB", "10 MB"),
        (150 * 2**20 + 1, "150 MB", "151 MB"),
    ],
)
def test_megabytes_are_binary_with_at_most_one_decimal(n_bytes: int, nearest: str, up: str):
    assert megabytes(n_bytes) == nearest
    assert megabytes(n_bytes, round_up=True) == up


def test_pillow_warnings_stay_off_stderr(tmp_path: Path) -> None:
    # Above Pillow's warning threshold (89 million pixels) but below the limit given here:
    # Pillow would print a DecompressionBombWarning before our own check refuses it. pytest
    # resets warning filters per test, so a fresh interpreter shows what a user would see.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(10_000, 10_000))
    script = (
        "import sys\n"
        "from captioner.images import ImageError, load_image\n"
        "try:\n"
        "    load_image(sys.argv[1], max_pixels=99_000_000)\n"
        "except ImageError as err:\n"
        "    print(err.kind)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "too_large"
    assert run.stderr == ""


def test_missing_path_and_directory(tmp_path: Path) -> None:
    assert refusal(tmp_path / "missing.jpg").kind == "not_found"
    assert refusal(str(tmp_path / "missing.jpg")).kind == "not_found"
    assert refusal(tmp_path).kind == "unreadable"


def test_pipes_and_devices_are_read_as_streams(tmp_path: Path) -> None:
    # A FIFO reports size 0: it must be read, not called empty (as <(cat photo.jpg) would be).
    data = encode(halves(), "PNG")
    fifo = tmp_path / "photo.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    assert load_image(fifo).shape == (224, 224, 3)
    writer.join()

    # An endless device stops at the byte limit instead of filling the memory.
    assert refusal("/dev/zero", max_bytes=1000).kind == "too_large"
    assert refusal("/dev/null").kind == "empty"


@pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning")
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF"])
def test_corrupted_bytes_never_escape_as_other_errors(fmt: str) -> None:
    # Flip random bytes all over valid files: each must decode or raise ImageError.
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    original = np.frombuffer(encode(Image.fromarray(noise), fmt), dtype=np.uint8)
    outcomes = set()
    for _ in range(40):
        corrupted = original.copy()
        spots = rng.integers(0, len(corrupted), size=rng.integers(1, 8))
        corrupted[spots] = rng.integers(0, 256, size=len(spots), dtype=np.uint8)
        try:
            load_image(corrupted.tobytes(), size=(16, 16))
            outcomes.add("decoded")
        except ImageError as err:
            outcomes.add(err.kind)
    assert outcomes <= {"decoded", "not_image", "truncated", "too_large", "unsupported"}


def test_image_error_message_kind_and_pickling() -> None:
    error = refusal(b"not an image")
    assert str(error) == error.user_message
    assert "Please send" in error.user_message
    assert "PIL" not in error.user_message and "Error" not in error.user_message

    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.user_message, copy.detail) == (
        error.kind,
        error.user_message,
        error.detail,
    )


def test_bad_arguments_are_caller_bugs() -> None:
    with pytest.raises(TypeError):
        load_image(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_image(encode(halves(), "PNG"), size=(0, 224))


def test_load_images_keeps_order_and_returns_refusals_in_place(tmp_path: Path) -> None:
    good = encode(halves(), "PNG")
    results = load_images([good, b"", tmp_path / "missing.png", good], size=(24, 32))

    assert len(results) == 4
    assert isinstance(results[0], np.ndarray) and results[0].shape == (24, 32, 3)
    assert isinstance(results[1], ImageError) and results[1].kind == "empty"
    assert isinstance(results[2], ImageError) and results[2].kind == "not_found"
    np.testing.assert_array_equal(results[3], results[0])
