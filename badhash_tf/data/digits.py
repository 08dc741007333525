"""Embedded tfds datasets built from scikit-learn's bundled handwritten digits (nothing downloaded).

`badhash_digits`: the 1,797 real 8x8 digits as 32x32x3 uint8 images, 10 classes, with the
retrieval protocol splits (query 20/class, train 100/class, database = all but query).
`badhash_digit_mosaics`: 2x2 mosaics of digits with multi-hot labels of the digits shown,
a small stand-in for the multi-label NUS-WIDE / MS-COCO protocol.
"""

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from badhash_tf.data import protocol

IMAGE_SIZE = protocol.IMAGE_SIZE
NUM_CLASSES = 10
PROTOCOL_SEED = protocol.PROTOCOL_SEED


def _digit_images():
    """-> (images [1797, 8, 8] uint8 in 0..255, labels [1797] int)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def _to_rgb(gray, size=IMAGE_SIZE):
    """[h, w] uint8 -> [size, size, 3] uint8 by bilinear resize."""
    resized = Image.fromarray(gray).resize((size, size), Image.BILINEAR)
    return np.repeat(np.asarray(resized)[:, :, None], 3, axis=2)


class BadhashDigits(protocol.SingleLabelBuilder):
    """scikit-learn digits as a single-label deep-hashing retrieval dataset."""

    QUERY_PER_CLASS = 20
    TRAIN_PER_CLASS = 100

    def _label_feature(self):
        return tfds.features.ClassLabel(num_classes=NUM_CLASSES)

    def _pooled(self, dl_manager):
        del dl_manager  # the data ships with scikit-learn
        return _digit_images()

    _to_rgb = staticmethod(_to_rgb)


class BadhashDigitMosaics(tfds.core.GeneratorBasedBuilder):
    """2x2 mosaics of scikit-learn digits with multi-hot labels (multi-label protocol)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    NUM_MOSAICS = 2000
    QUERY_COUNT = 200
    TRAIN_COUNT = 1000

    def _info(self):
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "labels": tfds.features.Tensor(shape=(NUM_CLASSES,), dtype=np.uint8),
                "index": np.int64,
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        images, labels = _digit_images()
        rng = np.random.default_rng(PROTOCOL_SEED)
        cells = rng.integers(0, len(images), size=(self.NUM_MOSAICS, 4))
        splits = protocol.random_split_indices(
            self.NUM_MOSAICS, self.QUERY_COUNT, self.TRAIN_COUNT, seed=PROTOCOL_SEED)
        return {name: self._generate_examples(images, labels, cells, idx)
                for name, idx in splits.items()}

    def _generate_examples(self, images, labels, cells, indices):
        for i in indices:
            tiles = images[cells[i]]
            mosaic = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
            multi_hot = np.zeros(NUM_CLASSES, np.uint8)
            multi_hot[labels[cells[i]]] = 1
            yield int(i), {"image": _to_rgb(mosaic), "labels": multi_hot, "index": int(i)}
