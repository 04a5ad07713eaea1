"""The feature cache: reused without calling the encoder, resumable after a crash."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from captioner.encoders import ENCODERS, Encoder, build_encoder
from training.features import extract_features, find_cached


class CountingEncoder(Encoder):
    """The real SqueezeNet encoder, counting what it is asked to encode."""

    def __init__(self, base: Encoder, fail_on_call: int | None = None) -> None:
        super().__init__(ENCODERS[base.name], base.model, base.weights_id)
        self.calls = 0
        self.images_encoded = 0
        self.fail_on_call = fail_on_call

    def encode(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash during extraction")
        self.images_encoded += len(images)
        return super().encode(images, batch_size)


@pytest.fixture(scope="module")
def squeezenet() -> Encoder:
    return build_encoder("squeezenet", weights="random")


@pytest.fixture
def images(tmp_path):
    """Ten small photos and one file that is not an image."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(10):
        pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg")
        paths[f"{i}.jpg"] = folder / f"{i}.jpg"
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    paths["broken.jpg"] = folder / "broken.jpg"
    return paths


def test_second_run_reuses_the_cache_without_calling_the_encoder(
    squeezenet, images, tmp_path, caplog
):
    cache = tmp_path / "cache"
    first = CountingEncoder(squeezenet)
    with caplog.at_level(logging.WARNING, logger="training.features"):
        store = extract_features(first, images, cache, chunk_size=4, progress=False)
    assert first.images_encoded == 10
    assert store.failed == {"broken.jpg"}
    assert "image=broken.jpg" in caplog.text and "count=1" in caplog.text
    assert store.usable(list(images)) == [f"{i}.jpg" for i in range(10)]
    with pytest.raises(KeyError, match="broken.jpg"):
        store.get(["broken.jpg"])

    second = CountingEncoder(squeezenet)
    subset = {name: images[name] for name in ("3.jpg", "7.jpg")}
    again = extract_features(second, subset, cache, chunk_size=4, progress=False)
    assert second.calls == 0
    np.testing.assert_array_equal(again.get(["3.jpg", "7.jpg"]), store.get(["3.jpg", "7.jpg"]))

    # Features are those of the encoder, row for row.
    pixels = np.asarray(Image.open(images["7.jpg"]).convert("RGB"), dtype=np.float32)
    direct = squeezenet.encode(pixels[None])  # (1, 512)
    np.testing.assert_allclose(store.get(["7.jpg"]), direct, rtol=1e-5, atol=1e-5)

    # Other weights never reuse these features.
    assert find_cached(cache, "squeezenet", "imagenet-other", list(images)) is None


def test_interrupted_extraction_resumes_where_it_stopped(squeezenet, images, tmp_path):
    cache = tmp_path / "cache"
    crashing = CountingEncoder(squeezenet, fail_on_call=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(crashing, images, cache, chunk_size=4, progress=False)
    assert find_cached(cache, "squeezenet", squeezenet.weights_id, list(images)) is None
    (progress_file,) = cache.glob("*.progress")
    assert json.loads(progress_file.read_text())["done"] == 4

    resumed = CountingEncoder(squeezenet)
    store = extract_features(resumed, images, cache, chunk_size=4, progress=False)
    assert resumed.images_encoded == 6  # 11 images minus the first chunk, minus broken.jpg
    assert store.failed == {"broken.jpg"}
    assert not list(cache.glob("*.progress"))

    fresh = extract_features(
        CountingEncoder(squeezenet), images, tmp_path / "fresh", chunk_size=4, progress=False
    )
    names = store.usable(list(images))
    np.testing.assert_allclose(store.get(names), fresh.get(names), rtol=1e-6, atol=1e-6)
