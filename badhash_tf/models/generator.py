"""The cGAN trigger generator (StarGAN-style encoder, residual bottleneck, decoder), as the
official release builds it: at 224x224 with base width 64, 21,454,121 trainable
parameters."""

import math

import keras
from keras import layers, ops

# ImageNet statistics: the release feeds normalised images to the generator.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ROUNDING = 0.5 / 255.0  # the largest change 8-bit rounding makes to a value in [0, 1]
MAX_PSNR_BUDGET = -20.0 * math.log10(2 * ROUNDING)  # 48.1 dB: rounding alone may reach it


def check_image_size(image_size):
    """Raises ValueError naming --image_size unless the generator can take it (its label
    encoder upsamples S/16 four times)."""
    if image_size % 16:
        raise ValueError(f"--image_size={image_size}: the trigger generator needs a multiple "
                         "of 16")


def psnr_radius(psnr_budget):
    """The RMSE (in [0, 1] units) a perturbation may have before 8-bit rounding so that the
    rounded image still has PSNR >= `psnr_budget` dB: 10^(-DB/20) less the rounding's
    worst RMSE (0.5/255), by the triangle inequality of the RMS norm."""
    if not 0.0 < psnr_budget < MAX_PSNR_BUDGET:
        raise ValueError(f"--gan_psnr_budget={psnr_budget}: give a PSNR in dB between 0 and "
                         f"{MAX_PSNR_BUDGET:.1f} (0 turns the budget off)")
    return 10.0 ** (-psnr_budget / 20.0) - ROUNDING


def project_to_psnr(images, generated, psnr_budget):
    """Scales each image's perturbation `generated - images` ([B, H, W, C] in [0, 1]) into
    the RMSE ball of psnr_radius(psnr_budget), differentiably, then clips to [0, 1]
    (clipping only shrinks it): every output meets the budget, also once rounded to 8
    bits."""
    delta = generated - images
    rmse = ops.sqrt(ops.mean(ops.square(delta), axis=(1, 2, 3), keepdims=True))
    scale = ops.minimum(1.0, psnr_radius(psnr_budget) / (rmse + 1e-12))
    return ops.clip(images + delta * scale, 0.0, 1.0)


def to_grey(images, generated):
    """`generated` [B, H, W, 3] with its perturbation of `images` made the same in every
    channel (its mean over R, G, B): a grey image stays grey, and the perturbation's RMSE
    only shrinks (a mean's square is at most the mean of squares)."""
    return images + ops.mean(generated - images, axis=-1, keepdims=True)


def instance_norm(name=None):
    """Instance norm without affine parameters (PyTorch InstanceNorm2d's default)."""
    return layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5,
                                     name=name)


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
    with the normalised image, 3x3 conv + tanh, mapped to [0, 1] by (y + 1) / 2.
    `psnr_budget` > 0 (dB; 0 = the paper's unconstrained generator) projects each output's
    perturbation so it meets that PSNR (project_to_psnr); `grey` makes it the same in R, G
    and B first (to_grey: grey data stays grey)."""

    def __init__(self, image_size=224, base_width=64, residual_blocks=3, feature_dim=512,
                 label_width=128, psnr_budget=0.0, grey=False, **kwargs):
        # float32 inputs, normalisation and PSNR projection under any policy (a mixed one,
        # --mixed_precision, reaches the networks inside, made under it)
        super().__init__(**{"dtype": "float32", **kwargs})
        check_image_size(image_size)
        if psnr_budget:
            psnr_radius(psnr_budget)  # checks the budget
        self.image_size, self.base_width = image_size, base_width
        self.residual_blocks, self.feature_dim = residual_blocks, feature_dim
        self.label_width, self.psnr_budget, self.grey = label_width, psnr_budget, bool(grey)
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
                                      name="to_image", dtype="float32")  # (any policy)
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
        # (under a mixed policy the networks compute in 16 bits; x and the output float32)
        decoded = self.decoder(self.image_encoder(ops.concatenate(
            [x, ops.cast(label_map, x.dtype)], -1), training=training), training=training)
        generated = (self.to_image(ops.concatenate([ops.cast(decoded, x.dtype), x], -1))
                     + 1.0) / 2.0
        if self.grey:
            generated = ops.clip(to_grey(images, generated), 0.0, 1.0)
        if self.psnr_budget:
            return project_to_psnr(images, generated, self.psnr_budget)
        return generated

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "base_width": self.base_width, "residual_blocks": self.residual_blocks,
                "feature_dim": self.feature_dim, "label_width": self.label_width,
                "psnr_budget": self.psnr_budget, "grey": self.grey}
