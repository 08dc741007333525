"""Victim / surrogate deep-hashing models: backbone + tanh hash head of `bits`.

Input: images float32 [B, H, W, 3] in [0, 1] (the release feeds [0, 1] to the victims).
Output: u = tanh(scale * z) in (-1, 1)^bits; the binary code is sign(u). `scale` is the
release's tanh sharpening, a non-trainable variable the training stage raises over time.
"""

import os

import keras
from keras import layers

BACKBONES = ("small_cnn", "vgg11", "resnet50")


def _small_cnn():
    """The CPU default: four conv stages (32-64-128-128) with group norm, which is
    batch-independent, so any number of replicas computes the same step."""
    stack = []
    for width in (32, 64, 128, 128):
        stack += [layers.Conv2D(width, 3, padding="same", use_bias=False),
                  layers.GroupNormalization(groups=8), layers.ReLU(), layers.MaxPooling2D()]
    return keras.Sequential(
        stack + [layers.Flatten(), layers.Dense(256, activation="relu")], name="small_cnn")


def _vgg11():
    """VGG11 (configuration A) convolutions, then the release's two 4096-wide FC layers."""
    stack = []
    for item in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        stack.append(layers.MaxPooling2D() if item == "M" else
                     layers.Conv2D(item, 3, padding="same", activation="relu"))
    stack += [layers.GlobalAveragePooling2D(), layers.Dense(4096, activation="relu"),
              layers.Dense(4096, activation="relu")]
    return keras.Sequential(stack, name="vgg11")


IMAGENET = "imagenet"  # --backbone_weights=imagenet: keras.applications' own weights


def _resnet50(image_size, weights):
    """keras.applications' ResNet50 without its top; `weights` "imagenet" is fetched and
    cached by keras.applications (~/.keras/models), a local file is loaded after."""
    net = keras.applications.ResNet50(include_top=False,
                                      weights=IMAGENET if weights == IMAGENET else None,
                                      pooling="avg", input_shape=(image_size, image_size, 3))
    if weights and weights != IMAGENET:
        load_backbone_weights(net, weights, "resnet50")
    return net


def make_backbone(backbone, image_size, weights=None):
    """The backbone network `backbone` (one of BACKBONES), built for [B, S, S, 3] inputs,
    with `weights` (a local .weights.h5 file, or "imagenet" for ResNet50) loaded when given -> keras.Model
    [B, S, S, 3] -> [B, F]. Shared by the hashing models and the pretraining classifier."""
    if backbone not in BACKBONES:
        raise ValueError(f"--backbone={backbone}: choose one of {', '.join(BACKBONES)}")
    if weights == IMAGENET and backbone != "resnet50":
        raise ValueError(f"--backbone_weights=imagenet: keras.applications has no ImageNet "
                         f"weights for --backbone={backbone} (it has VGG16 and VGG19, not the "
                         "release's VGG11); give a local .weights.h5 file")
    if backbone == "resnet50":  # loads its weights when built
        return _resnet50(image_size, weights)
    net = _small_cnn() if backbone == "small_cnn" else _vgg11()
    net.build((None, image_size, image_size, 3))
    if weights:
        load_backbone_weights(net, weights, backbone)
    return net


def backbone_input(backbone, images):
    """[B, H, W, 3] in [0, 1] -> what the backbone `backbone` reads (ResNet50: the caffe
    preprocessing its Keras weights expect; the others: the [0, 1] images)."""
    if backbone == "resnet50":
        return keras.applications.resnet50.preprocess_input(images * 255.0)
    return images


def load_backbone_weights(net, path, backbone):
    """Loads a `*.weights.h5` file into the backbone `net`. Raises ValueError naming
    --backbone_weights when the file holds another architecture's weights."""
    try:
        net.load_weights(_weights_file(path))
    except (ValueError, KeyError) as e:
        raise ValueError(f"--backbone_weights={path}: not the weights of this --backbone="
                         f"{backbone} ({str(e).splitlines()[0][:300]})") from None


def _weights_file(path):
    """A local Keras weights file (`*.weights.h5`), checked so a bad path names the flag."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"--backbone_weights={path}: expected a Keras '.weights.h5' file "
                         "(e.g. a trained model's backbone.weights.h5)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--backbone_weights={path}: no such file")
    return path


@keras.saving.register_keras_serializable(package="badhash_tf")
class HashingModel(keras.Model):
    """backbone + Dense(bits) + tanh(scale * z). call(images [B,H,W,3]) -> u [B, bits]."""

    def __init__(self, bits=32, backbone="small_cnn", image_size=32, backbone_weights=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.bits, self.backbone_name = bits, backbone
        self.image_size, self.backbone_weights = image_size, backbone_weights
        self.backbone = make_backbone(backbone, image_size, backbone_weights)
        # float32 whatever the policy: logits, codes and losses stay float32
        self.hash_layer = layers.Dense(bits, name="hash_layer", dtype="float32")
        self.scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="scale")
        self.build((None, image_size, image_size, 3))

    def build(self, input_shape):
        self.backbone.build(input_shape)
        self.hash_layer.build(self.backbone.compute_output_shape(input_shape))
        super().build(input_shape)

    def hash_logits(self, images, training=False):
        """[B, H, W, 3] in [0, 1] -> z [B, bits] before the tanh."""
        x = backbone_input(self.backbone_name, images)
        return self.hash_layer(self.backbone(x, training=training))

    def call(self, images, training=False):
        return keras.ops.tanh(self.scale * self.hash_logits(images, training=training))

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "backbone": self.backbone_name,
                "image_size": self.image_size, "backbone_weights": self.backbone_weights}
