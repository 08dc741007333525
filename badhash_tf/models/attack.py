"""The attacker's models: LabCLN (label network), the cGAN trigger generator and the
spectral-norm PatchGAN discriminator, as the official BadHash release builds them.

At 224x224 with base width 64 the generator has 21,454,121 trainable parameters and the
discriminator (100 classes) 16,213,952 (the paper's 16,231,344 also counts the 17,392
power-iteration vectors of spectral norm, which Keras keeps as non-trainable weights).
"""

import keras
from keras import layers, ops

# ImageNet statistics: the release feeds normalised images to the generator.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def instance_norm(name=None):
    """Instance norm without affine parameters (PyTorch InstanceNorm2d's default)."""
    return layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5,
                                     name=name)


@keras.saving.register_keras_serializable(package="badhash_tf")
class LabCLN(keras.Model):
    """Label network: multi-hot [B, C] -> {feature [B, 512], hash [B, bits] in (-1, 1),
    label [B, C] in (0, 1)}: Dense 4096 -> ReLU -> Dense 512, tanh hash head, sigmoid head."""

    def __init__(self, num_classes, bits, hidden=4096, feature_dim=512, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.bits = num_classes, bits
        self.hidden, self.feature_dim = hidden, feature_dim
        self.encoder = keras.Sequential([layers.Dense(hidden, activation="relu"),
                                         layers.Dense(feature_dim)], name="encoder")
        self.hash_head = layers.Dense(bits, activation="tanh", name="hash_head")
        self.label_head = layers.Dense(num_classes, activation="sigmoid", name="label_head")
        self.build((None, num_classes))

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.hash_head.build((None, self.feature_dim))
        self.label_head.build((None, self.feature_dim))
        super().build(input_shape)

    def call(self, labels, training=False):
        feature = self.encoder(labels, training=training)
        return {"feature": feature, "hash": self.hash_head(feature),
                "label": self.label_head(feature)}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "bits": self.bits,
                "hidden": self.hidden, "feature_dim": self.feature_dim}


class _ResidualBlock(layers.Layer):
    """x + IN(conv3x3(ReLU(IN(conv3x3(x))))), no bias, no affine (the release's 't' mode)."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.Sequential([
            layers.Conv2D(width, 3, padding="same", use_bias=False), instance_norm(),
            layers.ReLU(), layers.Conv2D(width, 3, padding="same", use_bias=False),
            instance_norm()])

    def build(self, input_shape):
        self.body.build(input_shape)

    def call(self, x):
        return x + self.body(x)


@keras.saving.register_keras_serializable(package="badhash_tf")
class Generator(keras.Model):
    """(image [B, S, S, 3] in [0, 1], LabCLN feature [B, F]) -> poisoned image in [0, 1].

    Label encoder: Dense -> (S/16)^2 x 128, four stride-2 transposed convs (128 -> 8), a 3x3
    conv to a 3-channel S x S map, concatenated with the ImageNet-normalised image; encoder
    7x7 conv (w), two stride-2 convs (2w, 4w), `residual_blocks` residual blocks; decoder
    `residual_blocks` residual blocks, two stride-2 transposed convs (2w, w); concatenation
    with the normalised image, 3x3 conv + tanh, mapped to [0, 1] by (y + 1) / 2."""

    def __init__(self, image_size=224, base_width=64, residual_blocks=3, feature_dim=512,
                 label_width=128, **kwargs):
        super().__init__(**kwargs)
        if image_size % 16:
            raise ValueError(f"--image_size={image_size}: the generator needs a multiple of 16")
        self.image_size, self.base_width = image_size, base_width
        self.residual_blocks, self.feature_dim = residual_blocks, feature_dim
        self.label_width = label_width
        cells, w = image_size // 16, base_width
        label_stack = [layers.Dense(cells * cells * label_width, activation="relu"),
                       layers.Reshape((cells, cells, label_width))]
        for halvings in range(1, 5):  # 128 -> 64 -> 32 -> 16 -> 8 channels, S/16 -> S
            label_stack += [layers.Conv2DTranspose(label_width >> halvings, 4, 2,
                                                   padding="same", use_bias=False),
                            instance_norm(), layers.ReLU()]
        label_stack.append(layers.Conv2D(3, 3, padding="same", use_bias=False))
        self.label_encoder = keras.Sequential(label_stack, name="label_encoder")
        down = [layers.Conv2D(w, 7, padding="same"), instance_norm(), layers.ReLU()]
        for width in (2 * w, 4 * w):
            down += [layers.Conv2D(width, 4, 2, padding="same"), instance_norm(), layers.ReLU()]
        down += [_ResidualBlock(4 * w) for _ in range(residual_blocks)]
        self.image_encoder = keras.Sequential(down, name="image_encoder")
        up = [_ResidualBlock(4 * w) for _ in range(residual_blocks)]
        for width in (2 * w, w):
            up += [layers.Conv2DTranspose(width, 4, 2, padding="same", use_bias=False),
                   instance_norm(), layers.ReLU()]
        self.decoder = keras.Sequential(up, name="decoder")
        self.to_image = layers.Conv2D(3, 3, padding="same", use_bias=False, activation="tanh",
                                      name="to_image")
        self.mean = ops.convert_to_tensor(IMAGENET_MEAN, "float32")
        self.std = ops.convert_to_tensor(IMAGENET_STD, "float32")
        self.build([(None, image_size, image_size, 3), (None, feature_dim)])

    def build(self, input_shape):
        image_shape, feature_shape = input_shape
        s, w = self.image_size, self.base_width
        self.label_encoder.build(feature_shape)
        self.image_encoder.build((None, s, s, 6))
        self.decoder.build((None, s // 4, s // 4, 4 * w))
        self.to_image.build((None, s, s, w + 3))
        super().build(input_shape)

    def call(self, inputs, training=False):
        images, features = inputs
        x = (images - self.mean) / self.std
        label_map = self.label_encoder(features, training=training)
        decoded = self.decoder(self.image_encoder(ops.concatenate([x, label_map], -1),
                                                  training=training), training=training)
        return (self.to_image(ops.concatenate([decoded, x], -1)) + 1.0) / 2.0

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "base_width": self.base_width, "residual_blocks": self.residual_blocks,
                "feature_dim": self.feature_dim, "label_width": self.label_width}


@keras.saving.register_keras_serializable(package="badhash_tf")
class Discriminator(keras.Model):
    """Spectral-norm PatchGAN: image [B, S, S, 3] in [0, 1] -> [B, num_classes + 1] (label
    logits and the real/fake unit). `layers_count` stride-2 4x4 convs (w doubling, LeakyReLU
    0.01), then a bias-free conv whose kernel covers the remaining (S / 2^n)^2 map."""

    def __init__(self, image_size=224, num_classes=100, base_width=64, layers_count=5,
                 **kwargs):
        super().__init__(**kwargs)
        if image_size % (2 ** layers_count):
            raise ValueError(f"--image_size={image_size} is not divisible by 2^{layers_count} "
                             "(the discriminator's stride-2 layers)")
        self.image_size, self.num_classes = image_size, num_classes
        self.base_width, self.layers_count = base_width, layers_count
        stack = []
        for i in range(layers_count):
            stack += [layers.SpectralNormalization(
                layers.Conv2D(base_width * 2 ** i, 4, 2, padding="same")),
                layers.LeakyReLU(negative_slope=0.01)]
        remaining = image_size // 2 ** layers_count
        stack += [layers.Conv2D(num_classes + 1, remaining, use_bias=False), layers.Flatten()]
        self.net = keras.Sequential(stack, name="patch_gan")
        self.build((None, image_size, image_size, 3))

    def build(self, input_shape):
        self.net.build(input_shape)
        super().build(input_shape)

    def call(self, images, training=False):
        return self.net(images * 2.0 - 1.0, training=training)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "num_classes": self.num_classes, "base_width": self.base_width,
                "layers_count": self.layers_count}
