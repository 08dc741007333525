"""Hashing models: shapes, output range, config round trip, local backbone weights."""

import keras
import numpy as np
import pytest

from badhash_tf.models.hashing import HashingModel


@pytest.mark.parametrize("backbone", ["small_cnn", "vgg11", "resnet50"])
def test_hashing_model_shapes(backbone):
    model = HashingModel(bits=16, backbone=backbone, image_size=32)
    u = model(np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)).numpy()
    assert u.shape == (2, 16) and np.all(np.abs(u) <= 1.0)


def test_config_round_trip_and_save(tmp_path):
    model = HashingModel(bits=48, backbone="small_cnn", image_size=32)
    model.scale.assign(2.0)
    clone = HashingModel.from_config(model.get_config())
    assert (clone.bits, clone.backbone_name, clone.image_size) == (48, "small_cnn", 32)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).random((3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert float(loaded.scale.numpy()) == 2.0


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="--backbone=alexnet"):
        HashingModel(backbone="alexnet")


@pytest.mark.parametrize("backbone", ["small_cnn", "vgg11"])
def test_local_backbone_weights(tmp_path, backbone):
    source = HashingModel(bits=16, backbone=backbone, image_size=32)
    path = str(tmp_path / f"{backbone}.weights.h5")
    source.backbone.save_weights(path)
    loaded = HashingModel(bits=16, backbone=backbone, image_size=32, backbone_weights=path)
    x = np.random.default_rng(2).random((1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.backbone(x), source.backbone(x), atol=1e-5)


def test_bad_backbone_weights_name_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--backbone_weights=.*missing.weights.h5"):
        HashingModel(backbone_weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match="--backbone_weights=.*model.ckpt.*weights.h5"):
        HashingModel(backbone_weights=str(tmp_path / "model.ckpt"))
    # a small CNN's backbone weights offered to VGG11: named, not a bare Keras error
    small = str(tmp_path / "small.weights.h5")
    HashingModel(bits=8, backbone="small_cnn", image_size=32).backbone.save_weights(small)
    with pytest.raises(ValueError, match="--backbone_weights=.*small.weights.h5: not the "
                       "weights of this --backbone=vgg11"):
        HashingModel(bits=8, backbone="vgg11", image_size=32, backbone_weights=small)


def test_imagenet_weights_by_name_reach_keras_applications(monkeypatch):
    """--backbone_weights=imagenet: ResNet50 asks keras.applications for weights="imagenet"
    (its own download and cache; faked here: nothing is fetched), a local file asks for
    none and loads it after, and the backbones keras.applications lacks are refused."""
    import keras
    asked = []

    def fake_resnet50(**kwargs):
        asked.append(kwargs["weights"])
        return keras.Sequential([keras.layers.GlobalAveragePooling2D()])

    monkeypatch.setattr(keras.applications, "ResNet50", fake_resnet50)
    model = HashingModel(bits=8, backbone="resnet50", image_size=32,
                         backbone_weights="imagenet")
    assert asked == ["imagenet"] and model.get_config()["backbone_weights"] == "imagenet"
    HashingModel(bits=8, backbone="resnet50", image_size=32)
    assert asked == ["imagenet", None]
    for backbone in ("vgg11", "small_cnn"):
        with pytest.raises(ValueError, match=f"--backbone_weights=imagenet: keras.applications "
                           f"has no ImageNet weights for --backbone={backbone}"):
            HashingModel(bits=8, backbone=backbone, image_size=32, backbone_weights="imagenet")
