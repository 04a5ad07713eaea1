"""Tests of the encoder registry: weights resolution and loading, preprocessing, batching.

ResNet50 runs with random weights and with weights files written here; SqueezeNet also runs
with the real ImageNet weights from the shared folder, on real Flickr8k photos.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from captioner.encoders import (
    ENCODERS,
    RESNET50_WEIGHTS_FILE,
    WEIGHTS_DIR_ENV,
    Encoder,
    EncoderWeightsError,
    WeightsFile,
    build_encoder,
    find_weights_file,
)
from captioner.squeezenet import (
    FIRE_MODULES,
    SQUEEZENET_WEIGHTS_FILE,
    SQUEEZENET_WEIGHTS_SHA256,
    build_squeezenet,
    keras_layer_name,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS_DIR = SHARED / "weights"
FLICKR_IMAGES = SHARED / "data" / "flickr8k" / "images"

needs_shared = pytest.mark.skipif(
    not (WEIGHTS_DIR / SQUEEZENET_WEIGHTS_FILE).is_file(),
    reason=f"shared SqueezeNet weights not found under {WEIGHTS_DIR}",
)


def write_keras2_weights(layers: list[keras.Layer], path: Path) -> None:
    """Write the layers' weights in the Keras 2 HDF5 layout of the published ImageNet files."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name for layer in layers], dtype=bytes)
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in layers:
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:0" for w in weights]
            group.attrs["weight_names"] = np.array(names, dtype=bytes)
            for name, weight in zip(names, weights, strict=True):
                group.create_dataset(name, data=keras.ops.convert_to_numpy(weight))


def read_keras2_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight arrays, for every layer of a Keras 2 weights file that has any."""
    out = {}
    with h5py.File(path, "r") as f:
        for raw in f.attrs["layer_names"]:
            name = raw.decode()
            names = [n.decode() for n in f[name].attrs["weight_names"]]
            if names:
                out[name] = [np.asarray(f[name][n]) for n in names]
    return out


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    # (3, 224, 224, 3) RGB 0..255
    return np.random.default_rng(7).uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def resnet_random() -> Encoder:
    return build_encoder("resnet50", weights="random")


@pytest.fixture(scope="module")
def squeezenet_imagenet() -> Encoder:
    if not (WEIGHTS_DIR / SQUEEZENET_WEIGHTS_FILE).is_file():
        pytest.skip(f"shared SqueezeNet weights not found under {WEIGHTS_DIR}")
    return build_encoder("squeezenet", weights="imagenet", weights_dir=WEIGHTS_DIR)


def test_unknown_encoder_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="known: resnet50, squeezenet"):
        build_encoder("vgg16", weights="random")


def test_resnet50_random_features(resnet_random: Encoder, images: np.ndarray) -> None:
    features = resnet_random.encode(images)

    assert (resnet_random.name, resnet_random.input_size) == ("resnet50", (224, 224))
    assert resnet_random.feature_dim == 2048
    assert resnet_random.weights_id == "random-seed0"
    assert features.shape == (3, 2048) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert not np.allclose(features[0], features[1])


def test_random_weights_are_reproducible(resnet_random: Encoder) -> None:
    again = build_encoder("resnet50", weights="random")

    assert again.weights_id == resnet_random.weights_id
    for ours, theirs in zip(
        again.model.get_weights(), resnet_random.model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("fixture", ["resnet_random", "squeezenet_imagenet"])
def test_features_do_not_depend_on_batch(
    fixture: str, images: np.ndarray, request: pytest.FixtureRequest
) -> None:
    encoder: Encoder = request.getfixturevalue(fixture)

    together = encoder.encode(images, batch_size=3)  # (3, D)
    scale = np.abs(together).max()
    for batch_size in (1, 2):
        np.testing.assert_allclose(
            encoder.encode(images, batch_size=batch_size), together, rtol=1e-4, atol=1e-5 * scale
        )
    # The same photo among other neighbours.
    np.testing.assert_allclose(
        encoder.encode(images[[2, 0]])[1], together[0], rtol=1e-4, atol=1e-5 * scale
    )


@pytest.mark.parametrize("fixture", ["resnet_random", "squeezenet_imagenet"])
def test_encode_gives_the_keras_models_own_features(
    fixture: str, images: np.ndarray, request: pytest.FixtureRequest
) -> None:
    # encode runs a frozen copy of the graph; it must compute what the model itself does.
    encoder: Encoder = request.getfixturevalue(fixture)

    expected = keras.ops.convert_to_numpy(
        encoder.model(encoder.preprocess(images), training=False)
    )  # (3, D)
    np.testing.assert_allclose(
        encoder.encode(images), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max()
    )


def test_preprocess_is_caffe_and_leaves_input_alone(resnet_random: Encoder) -> None:
    image = np.zeros((1, 224, 224, 3), dtype=np.float32)
    image[..., :] = (10.0, 20.0, 30.0)  # RGB
    before = image.copy()

    batch = resnet_random.preprocess(image)

    np.testing.assert_array_equal(image, before)
    # BGR order, ImageNet means subtracted, no scaling.
    np.testing.assert_allclose(batch[0, 5, 5], (30 - 103.939, 20 - 116.779, 10 - 123.68), 1e-5)
    assert batch.dtype == np.float32 and batch.shape == (1, 224, 224, 3)


def test_encode_checks_its_input(resnet_random: Encoder, images: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(N, 224, 224, 3\)"):
        resnet_random.encode(images[0])
    with pytest.raises(ValueError, match=r"\(N, 224, 224, 3\)"):
        resnet_random.encode(np.zeros((1, 100, 100, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        resnet_random.encode(images, batch_size=0)

    empty = resnet_random.encode(images[:0])
    assert empty.shape == (0, 2048) and empty.dtype == np.float32


def test_resnet50_loads_files_from_weights_dir_and_path(
    resnet_random: Encoder, images: np.ndarray, tmp_path: Path
) -> None:
    expected = resnet_random.encode(images[:2])

    # The published layout under the canonical name, found by the weights_dir search.
    write_keras2_weights(resnet_random.model.layers, tmp_path / RESNET50_WEIGHTS_FILE)
    from_dir = build_encoder("resnet50", weights="imagenet", weights_dir=tmp_path)

    # A Keras 3 weights file named explicitly.
    saved = tmp_path / "mine.weights.h5"
    resnet_random.model.save_weights(saved)
    from_path = build_encoder("resnet50", weights=str(saved))

    # Not the published file, so "file-" whichever way it was found.
    legacy_sha = hashlib.sha256((tmp_path / RESNET50_WEIGHTS_FILE).read_bytes()).hexdigest()
    assert from_dir.weights_id == "file-" + legacy_sha[:16]
    assert from_path.weights_id.startswith("file-") and from_path.weights_id != from_dir.weights_id
    np.testing.assert_allclose(from_dir.encode(images[:2]), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_path.encode(images[:2]), expected, rtol=1e-5, atol=1e-5)


def test_squeezenet_architecture() -> None:
    model = build_squeezenet()
    names = {layer.name for layer in model.layers}

    assert model.count_params() == 722_496
    assert model.output_shape == (None, 512)
    assert model.get_layer("fire9_concat").output.shape == (None, 13, 13, 512)
    assert {"conv1", "pool1", "pool3", "pool5"} <= names
    for fire, squeeze, expand in FIRE_MODULES:
        assert model.get_layer(f"{fire}_squeeze1x1").filters == squeeze
        assert model.get_layer(f"{fire}_expand1x1").kernel.shape[:2] == (1, 1)
        assert model.get_layer(f"{fire}_expand3x3").kernel.shape[:2] == (3, 3)
        assert model.get_layer(f"{fire}_expand3x3").filters == expand

    # The 1x1 branch comes first in the concatenation, as in the weights file.
    probe = keras.Model(
        model.input,
        [model.get_layer("fire2_relu_expand1x1").output, model.get_layer("fire2_concat").output],
    )
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    left, both = (keras.ops.convert_to_numpy(t) for t in probe(x))  # (1, 55, 55, 64), (.., 128)
    np.testing.assert_array_equal(both[..., :64], left)
    assert not np.array_equal(both[..., 64:], left)


def test_squeezenet_weights_land_in_layers(squeezenet_imagenet: Encoder) -> None:
    file_weights = read_keras2_weights(WEIGHTS_DIR / SQUEEZENET_WEIGHTS_FILE)

    assert squeezenet_imagenet.weights_id == "imagenet-" + SQUEEZENET_WEIGHTS_SHA256[:16]
    assert len(file_weights) == 25
    for file_name, (kernel, bias) in file_weights.items():
        layer = squeezenet_imagenet.model.get_layer(keras_layer_name(file_name))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), kernel)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), bias)


def test_squeezenet_features_of_real_photos(squeezenet_imagenet: Encoder) -> None:
    names = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]
    photos = np.stack(
        [np.asarray(Image.open(FLICKR_IMAGES / n).convert("RGB"), np.float32) for n in names]
    )  # (2, 224, 224, 3)

    features = squeezenet_imagenet.encode(photos)  # (2, 512)

    assert features.shape == (2, 512)
    assert (features >= 0).all() and (features > 0).mean() > 0.5
    # Random weights give near-parallel features for any two photos (cosine ~0.99).
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert float(unit[0] @ unit[1]) < 0.9


@needs_shared
def test_weights_dir_from_the_environment_and_path_give_one_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(WEIGHTS_DIR))

    from_env = build_encoder("squeezenet")
    by_path = build_encoder("squeezenet", weights=WEIGHTS_DIR / SQUEEZENET_WEIGHTS_FILE)

    # The published file has one id however it is found.
    assert from_env.weights_id == "imagenet-" + SQUEEZENET_WEIGHTS_SHA256[:16]
    assert by_path.weights_id == from_env.weights_id


def test_squeezenet_rejects_weights_that_do_not_fit(tmp_path: Path) -> None:
    model = build_squeezenet()
    wrong = tmp_path / "wrong.h5"
    write_keras2_weights(model.layers, wrong)
    with h5py.File(wrong, "a") as f:
        group = f["fire5_expand3x3"]
        kernel_name = group.attrs["weight_names"][0].decode()
        del group[kernel_name]
        group.create_dataset(kernel_name, data=np.zeros((1, 1, 32, 128), np.float32))
    partial = tmp_path / "partial.h5"
    write_keras2_weights([model.get_layer("conv1")], partial)

    with pytest.raises(EncoderWeightsError, match=r"fire5_expand3x3 expects weight shapes"):
        build_encoder("squeezenet", weights=wrong)
    with pytest.raises(EncoderWeightsError, match="no weights for layer fire2_squeeze1x1"):
        build_encoder("squeezenet", weights=partial)


def test_missing_weights_say_where_to_put_them(tmp_path: Path) -> None:
    # Nothing listens on port 9 of the loopback: the download fails at once, as offline.
    absent = WeightsFile("no_such_weights.h5", "http://127.0.0.1:9/no_such_weights.h5", "0" * 64)

    with pytest.raises(EncoderWeightsError) as err:
        find_weights_file(absent, weights_dir=tmp_path)
    message = str(err.value)
    assert "no_such_weights.h5" in message and str(tmp_path) in message
    assert WEIGHTS_DIR_ENV in message

    with pytest.raises(EncoderWeightsError, match="does not exist"):
        build_encoder("squeezenet", weights=tmp_path / "nowhere.h5")


def test_registry_matches_models() -> None:
    assert sorted(ENCODERS) == ["resnet50", "squeezenet"]
    assert ENCODERS["squeezenet"].feature_dim == build_squeezenet().output_shape[-1]
