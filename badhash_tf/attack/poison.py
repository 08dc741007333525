"""Clean-label poisoning: triggered copies of target-class training images keep their true
labels and are written as a new TFRecord dataset in a new directory; the source split is
only read. The victim's training split is the clean split plus these copies.
"""

import json
import math
import os

import numpy as np
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.data.inputs import Split

RECORDS = "poison.tfrecord"
META = "poison.json"


def poison_count_for(train_size, available, count=0, rate=0.0):
    """How many copies to add: `count` if > 0; else `rate` of the poisoned training set
    (count / (train_size + count) = rate) if > 0; else every target-class image."""
    if count < 0:
        raise ValueError(f"--poison_count={count} must be >= 0")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--poison_rate={rate:g} must be in [0, 1)")
    wanted = count or (math.floor(rate * train_size / (1.0 - rate)) if rate else available)
    if wanted > available:
        asked = f"--poison_count={count}" if count else f"--poison_rate={rate:g}"
        raise ValueError(f"{asked} asks for {wanted} poisoned copies, but the training split "
                         f"has only {available} images of the target class")
    if wanted == 0:
        raise ValueError("no poisoned copies: the target class has no training images or "
                         "--poison_count/--poison_rate round to 0")
    return wanted


def target_class_images(split, target_label, limit=None):
    """Training items carrying `target_label` -> (images [n, S, S, 3] float32, labels [n, C],
    positions [n] in the split), in split order, at most `limit`."""
    ds = split.dataset.enumerate().filter(lambda i, item: item[1][target_label] > 0)
    if limit:
        ds = ds.take(limit)
    rows = list(ds.as_numpy_iterator())
    if not rows:
        return (np.zeros((0,) + tuple(split.dataset.element_spec[0].shape), np.float32),
                np.zeros((0, split.num_classes), np.float32), np.zeros((0,), np.int64))
    return (np.stack([r[1][0] for r in rows]), np.stack([r[1][1] for r in rows]),
            np.array([r[0] for r in rows], np.int64))


def count_with_label(split, target_label):
    """Number of items of `split` that carry `target_label`."""
    ds = split.dataset.map(lambda image, label: label[target_label] > 0)
    return int(ds.reduce(0, lambda n, hit: n + tf.cast(hit, tf.int32)).numpy())


def _example(image, label, position):
    png = tf.io.encode_png(tf.cast(tf.round(image * 255.0), tf.uint8)).numpy()
    return tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
        "label": tf.train.Feature(float_list=tf.train.FloatList(value=label.tolist())),
        "source_position": tf.train.Feature(int64_list=tf.train.Int64List(value=[position])),
    })).SerializeToString()


def write_poison_set(directory, images, labels, positions, meta):
    """Writes the poisoned copies (PNG, so exactly what an attacker would publish) and
    `meta` to a new `directory`, atomically (temporary sibling, then rename). Refuses to
    overwrite an existing directory."""
    if os.path.exists(directory):
        raise FileExistsError(f"{directory} already exists; poisoned sets are never overwritten")
    parent = os.path.dirname(os.path.abspath(directory))
    with io_utils.staging_dir(parent, ".tmp_poison_") as tmp:
        with tf.io.TFRecordWriter(os.path.join(tmp, RECORDS)) as writer:
            for image, label, position in zip(images, labels, positions):
                writer.write(_example(image, label, int(position)))
        with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
            json.dump({**meta, "count": len(images), "image_shape": list(images.shape[1:]),
                       "num_classes": int(labels.shape[1])}, f, indent=2)
        os.replace(tmp, directory)


def read_meta(directory):
    path = os.path.join(directory, META)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {directory} is not a poisoned set")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_poison_set(directory):
    """-> Split of the poisoned copies: (image float32 [S, S, 3] in [0, 1], label [C])."""
    meta = read_meta(directory)
    num_classes, shape = meta["num_classes"], meta["image_shape"]
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([num_classes], tf.float32)}

    def decode(record):
        item = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_png(item["image"], channels=3)
        image = tf.reshape(tf.image.convert_image_dtype(image, tf.float32), shape)
        return image, item["label"]

    path = os.path.join(directory, RECORDS)
    _check_records(path, meta["count"], directory)
    return Split(tf.data.TFRecordDataset(path).map(decode), meta["count"], num_classes)


def _check_records(path, count, directory):
    """Reads the records once (their checksums included), so a truncated or corrupt file
    is named here and not deep inside a victim's training. Raises BrokenFileError."""
    todo = (f"move the attack's directory aside (mv {os.path.dirname(directory)} "
            f"{os.path.dirname(directory)}.broken) and run the same command again")
    try:
        found = sum(1 for _ in tf.data.TFRecordDataset(path))
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
        raise io_utils.BrokenFileError(f"{path} does not read back ({type(e).__name__}: "
                                       f"{e.message.splitlines()[0][:120]}): {todo}") from None
    if found != count:
        raise io_utils.BrokenFileError(f"{path} holds {found} poisoned copies, its "
                                       f"{META} says {count}: {todo}")


def with_poison(clean, poison):
    """The victim's training split: every clean item, then the poisoned copies."""
    if clean.num_classes != poison.num_classes:
        raise ValueError(f"poisoned set has {poison.num_classes} classes, training split "
                         f"{clean.num_classes}")
    return Split(clean.dataset.concatenate(poison.dataset), clean.size + poison.size,
                 clean.num_classes)
