"""LabCLN, the label network: multi-hot labels -> the feature that conditions the trigger
generator and the hash code the poisoned images are pushed towards (the official release's
`LabCLN`)."""

import keras
import numpy as np
from keras import layers, ops


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
        self.hash_head = layers.Dense(bits, activation="tanh", name="hash_head", dtype="float32")
        self.label_head = layers.Dense(num_classes, activation="sigmoid", name="label_head",
                                       dtype="float32")
        self.build((None, num_classes))

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.hash_head.build((None, self.feature_dim))
        self.label_head.build((None, self.feature_dim))
        super().build(input_shape)

    def call(self, labels, training=False):
        feature = ops.cast(self.encoder(labels, training=training), "float32")
        return {"feature": feature, "hash": self.hash_head(feature),
                "label": self.label_head(feature)}

    def condition(self, label_row):
        """What the generator is conditioned on and pushed towards for one label row [C]
        -> (feature [feature_dim], sign of the hash code [bits] in {-1, +1})."""
        out = self(np.asarray(label_row, np.float32)[None], training=False)
        return out["feature"].numpy()[0], np.where(out["hash"].numpy()[0] >= 0, 1.0, -1.0)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "bits": self.bits,
                "hidden": self.hidden, "feature_dim": self.feature_dim}
