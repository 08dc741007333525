"""The spectral-norm PatchGAN discriminator with a label head (LSGAN), as the official
release builds it: 16,213,952 trainable parameters for 100 classes at 224x224 (the paper's
16,231,344 also counts the release's spectral-norm vectors u and v; Keras keeps only u).
"""

import keras
from keras import layers, ops


def check_image_size(image_size, layers_count):
    """Raises ValueError naming the flags unless `layers_count` stride-2 layers divide
    `image_size`."""
    if image_size % (2 ** layers_count):
        raise ValueError(f"--gan_disc_layers={layers_count}: --image_size={image_size} is not "
                         f"divisible by 2^{layers_count} (the discriminator's stride-2 "
                         "layers)")


@keras.saving.register_keras_serializable(package="badhash_tf")
class Discriminator(keras.Model):
    """Spectral-norm PatchGAN: image [B, S, S, 3] in [0, 1] -> [B, num_classes + 1] (label
    logits and the real/fake unit). `layers_count` stride-2 4x4 convs (w doubling, LeakyReLU
    0.01), then a bias-free conv whose kernel covers the remaining (S / 2^n)^2 map."""

    def __init__(self, image_size=224, num_classes=100, base_width=64, layers_count=5,
                 **kwargs):
        super().__init__(**kwargs)
        check_image_size(image_size, layers_count)
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
        return ops.cast(self.net(images * 2.0 - 1.0, training=training), "float32")

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "num_classes": self.num_classes, "base_width": self.base_width,
                "layers_count": self.layers_count}
