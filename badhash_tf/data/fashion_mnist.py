"""Embedded tfds dataset of real photographs: Fashion-MNIST from its four IDX files on this
machine (nothing downloaded).

`badhash_fashion_mnist`: the 70,000 28x28 grey product photos (train and t10k files
pooled), 10 classes, as 32x32x3 uint8 (2 black pixels of padding each side: the photos'
own background, no resampling), with the deep-hashing protocol: `query` 100 per class,
`train` 500 per class, `database` = everything not in `query`. The source directory is
tfds' manual_dir: by default where Debian's package `dataset-fashion-mnist` installs the
files, or any directory holding them (`--source_dir`).
"""

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from badhash_tf.data import protocol

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SIZE = protocol.IMAGE_SIZE
NUM_CLASSES = 10
CLASS_NAMES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
               "sneaker", "bag", "ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def _find(directory, name):
    """The path of IDX file `name` in `directory`, gzipped or not. Raises FileNotFoundError
    naming the directory and what to do."""
    for candidate in (name + ".gz", name):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"{os.path.join(directory, name)}[.gz] not found: badhash_fashion_mnist reads "
        f"Fashion-MNIST's four IDX files from --source_dir (default {DEBIAN_DIR}, where "
        "`apt-get install dataset-fashion-mnist` puts them; nothing is downloaded)")


def check_source(directory):
    """Raises FileNotFoundError naming the file when `directory` lacks one of the four IDX
    files (before tfds starts building)."""
    for names in FILES.values():
        for name in names:
            _find(directory, name)


def read_idx(path, magic):
    """An IDX file (gzipped or not) with the given magic number -> uint8 array of the
    dimensions its header gives. Raises ValueError naming the file when it is not one."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable IDX file ({e})") from None
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{path}: not an IDX file of magic {magic} (uint8, "
                         f"{'images' if magic == _IMAGES_MAGIC else 'labels'})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {'x'.join(map(str, dims))} = "
                         f"{int(np.prod(dims))} bytes, the file holds {body.size} (truncated?)")
    return body.reshape(dims)


def load_pooled(directory):
    """The train and t10k files of `directory` pooled -> (images [N, 28, 28] uint8,
    labels [N] int64). Raises FileNotFoundError / ValueError naming the file."""
    images, labels = [], []
    for part in ("train", "t10k"):
        image_path, label_path = (_find(directory, name) for name in FILES[part])
        x, y = read_idx(image_path, _IMAGES_MAGIC), read_idx(label_path, _LABELS_MAGIC)
        if len(x) != len(y):
            raise ValueError(f"{image_path} holds {len(x)} images but {label_path} "
                             f"{len(y)} labels")
        if y.size and y.max() >= NUM_CLASSES:
            raise ValueError(f"{label_path}: label {int(y.max())} outside 0..{NUM_CLASSES - 1}")
        images.append(x)
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _to_rgb(gray):
    """[28, 28] uint8 -> [32, 32, 3] uint8, padded with the photos' black background."""
    pad = (IMAGE_SIZE - gray.shape[0]) // 2, (IMAGE_SIZE - gray.shape[1]) // 2
    padded = np.pad(gray, ((pad[0], IMAGE_SIZE - gray.shape[0] - pad[0]),
                           (pad[1], IMAGE_SIZE - gray.shape[1] - pad[1])))
    return np.repeat(padded[:, :, None], 3, axis=2)


class BadhashFashionMnist(protocol.SingleLabelBuilder):
    """Fashion-MNIST's real photographs as a single-label deep-hashing retrieval dataset."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"`apt-get install dataset-fashion-mnist` (files in {DEBIAN_DIR}), or put the four "
        "IDX files (train/t10k images/labels, .gz or not) in a directory given as "
        "--source_dir.")
    QUERY_PER_CLASS = 100
    TRAIN_PER_CLASS = 500

    def _label_feature(self):
        return tfds.features.ClassLabel(names=CLASS_NAMES)

    def _pooled(self, dl_manager):
        return load_pooled(os.fspath(dl_manager.manual_dir))

    _to_rgb = staticmethod(_to_rgb)
