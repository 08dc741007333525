"""The tf.data input pipeline for every source (not the `badhash_tf.pipeline` program).
Elements are (image float32 [H, W, 3] in [0, 1], multi-hot label float32 [C]).

Sources (`DataConfig.dataset`):
- `badhash_digits`, `badhash_digit_mosaics`, `badhash_fashion_mnist`: the embedded tfds
  builders (built on first use; the last from Fashion-MNIST's IDX files in `source_dir`).
- `list:ROOT`: the paper's list files under ROOT (see list_files.py).
- any other name: a tfds catalog dataset already prepared in `data_dir` (e.g. `cifar10`);
  its splits are pooled and re-split by the retrieval protocol (protocol.py).
Splits are `query`, `train`, `database`, optionally sliced: `train[:64]`.
"""

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from badhash_tf.config import DataConfig  # noqa: F401  (the section this module reads)
from badhash_tf.data import digits  # noqa: F401  (registers the embedded builders)
from badhash_tf.data import fashion_mnist, list_files, protocol

EMBEDDED = ("badhash_digits", "badhash_digit_mosaics", "badhash_fashion_mnist")
LIST_PREFIX = "list:"


@dataclasses.dataclass
class Split:
    """A loaded split: `dataset` yields (image, label) unbatched, `size` items, `num_classes`;
    `labels` [size, C] when the source knows them without decoding images (list files);
    `eval_cache`: its in-memory evaluation batches (eval_dataset), kept with the split."""
    dataset: tf.data.Dataset
    size: int
    num_classes: int
    labels: Optional[np.ndarray] = None
    eval_cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False,
                                         compare=False)


def load_split(config, split):
    """DataConfig, split spec -> Split. Raises ValueError/FileNotFoundError on bad input."""
    name, part = protocol.parse_split(split)
    if name not in protocol.SPLITS + ("test",):
        raise ValueError(f"unknown split {name!r}: use one of {', '.join(protocol.SPLITS)}")
    if config.dataset.startswith(LIST_PREFIX):
        loaded = _list_split(config, name)
    elif config.dataset in EMBEDDED:
        return _embedded_split(config, split.replace("test", "query", 1))
    else:
        loaded = _catalog_split(config, name)
    return _slice(loaded, part, split)


def _slice(loaded, part, spec):
    start, stop, _ = part.indices(loaded.size)
    if stop <= start:
        raise ValueError(f"split {spec!r} is empty")
    ds = loaded.dataset.skip(start).take(stop - start)
    labels = None if loaded.labels is None else loaded.labels[start:stop]
    return Split(ds, stop - start, loaded.num_classes, labels)


def _finish_image(image, image_size):
    """uint8 [h, w, c] -> float32 [image_size, image_size, 3] in [0, 1]."""
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    image = tf.image.convert_image_dtype(image, tf.float32)
    if image.shape[0] != image_size or image.shape[1] != image_size:
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def _label_converter(features):
    """tfds FeaturesDict -> (label key, num_classes, fn(raw label) -> multi-hot float32)."""
    for key in ("label", "labels"):
        feature = features[key] if key in features else None
        if isinstance(feature, tfds.features.ClassLabel):
            n = feature.num_classes
            return key, n, lambda y: tf.one_hot(y, n, dtype=tf.float32)
        if isinstance(feature, tfds.features.Sequence) and isinstance(
                feature.feature, tfds.features.ClassLabel):
            n = feature.feature.num_classes
            return key, n, lambda y: tf.reduce_max(tf.one_hot(y, n, dtype=tf.float32), axis=0)
        if isinstance(feature, tfds.features.Tensor) and len(feature.shape) == 1:
            return key, feature.shape[0], lambda y: tf.cast(y, tf.float32)
    raise ValueError(f"dataset features {list(features.keys())} have no 'label' or 'labels' "
                     "class feature")


def check_splits(config, specs):
    """Loads every split a run reads, before any training: specs {flag: split spec} ->
    {flag: Split}. Raises ValueError / FileNotFoundError naming the flag (and, from the
    loaders, the file and line) for a misspelt or empty split, a bad image or label, or
    label widths that differ between the splits."""
    loaded = {}
    for flag, spec in specs.items():
        try:
            loaded[flag] = load_split(config, spec)
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"{flag}={spec}: {e}") from None
        if loaded[flag].size == 0:
            raise ValueError(f"{flag}={spec}: the split is empty")
    widths = {f"{flag}={specs[flag]}": split.num_classes for flag, split in loaded.items()}
    if len(set(widths.values())) > 1:
        raise ValueError("label widths differ between the splits of --dataset="
                         f"{config.dataset}: " + ", ".join(f"{k} has {v}"
                                                           for k, v in widths.items()))
    return loaded


def native_image_shape(config):
    """A dataset's image shape (H, W, C) as stored, before loading makes it
    image_size x image_size x 3, or None where it is not fixed (list files, a catalog
    dataset of varying sizes)."""
    if config.dataset.startswith(LIST_PREFIX):
        return None
    if config.dataset in EMBEDDED:
        return (protocol.IMAGE_SIZE, protocol.IMAGE_SIZE, 3)
    features = _builder(config).info.features
    shape = features["image"].shape if "image" in features else None
    return tuple(shape) if shape and None not in shape else None


def _builder(config):
    try:
        return tfds.builder(config.dataset, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"--dataset={config.dataset}: no such tfds dataset ({e})") from None


def _decode_fn(features, image_size):
    key, num_classes, to_multi_hot = _label_converter(features)
    return num_classes, lambda ex: (_finish_image(ex["image"], image_size), to_multi_hot(ex[key]))


def _embedded_split(config, split):
    builder = _builder(config)
    if not builder.is_prepared():
        source = None
        if config.dataset == "badhash_fashion_mnist":
            source = config.source_dir or fashion_mnist.DEBIAN_DIR
            fashion_mnist.check_source(source)
        try:  # from scikit-learn's bundled digits, or the IDX files in `source`
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=source))
        except FileExistsError:  # another worker prepared it at the same time: use theirs
            builder = _builder(config)
            if not builder.is_prepared():
                raise
    num_classes, decode = _decode_fn(builder.info.features, config.image_size)
    size = builder.info.splits[split].num_examples
    if size == 0:
        raise ValueError(f"split {split!r} of {config.dataset} is empty")
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return Split(ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE), size, num_classes)


def _catalog_split(config, name):
    builder = _builder(config)
    if not builder.is_prepared():
        raise ValueError(
            f"--dataset={config.dataset} is not prepared in --data_dir="
            f"{config.data_dir or tfds.core.constants.DATA_DIR}: nothing is downloaded at run "
            f"time; run `tfds build {config.dataset} --data_dir=...` where the data is reachable")
    pooled = "+".join(sorted(builder.info.splits.keys()))
    key, num_classes, _ = _label_converter(builder.info.features)
    raw_labels = [ex[key] for ex in builder.as_dataset(
        split=pooled, shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()}).as_numpy_iterator()]
    if isinstance(builder.info.features[key], tfds.features.ClassLabel):
        indices = protocol.per_class_split_indices(
            np.asarray(raw_labels), config.query_per_class, config.train_per_class,
            config.protocol_seed)
    else:
        indices = protocol.random_split_indices(
            len(raw_labels), config.query_per_class * num_classes,
            config.train_per_class * num_classes, config.protocol_seed)
    chosen = indices["query" if name == "test" else name]
    mask = np.zeros(len(raw_labels), bool)
    mask[chosen] = True
    _, decode = _decode_fn(builder.info.features, config.image_size)
    ds = builder.as_dataset(split=pooled, shuffle_files=False).enumerate()
    ds = ds.filter(lambda i, ex: tf.gather(tf.constant(mask), i)).map(
        lambda i, ex: decode(ex), num_parallel_calls=tf.data.AUTOTUNE)
    return Split(ds, len(chosen), num_classes)


def _list_split(config, name):
    root = config.dataset[len(LIST_PREFIX):]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--dataset={config.dataset}: dataset root {root} not found")
    paths, labels = list_files.read_list_split(root, name)
    resize_to = round(config.image_size * 256 / 224)  # the release: resize 256, crop 224

    def decode(path, label):
        image = tf.image.convert_image_dtype(list_files.decode_image(tf.io.read_file(path)),
                                             tf.float32)
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        new_hw = tf.cast(tf.round(hw * resize_to / tf.reduce_min(hw)), tf.int32)
        image = tf.image.resize(image, new_hw, antialias=True)
        image = tf.image.resize_with_crop_or_pad(image, config.image_size, config.image_size)
        return tf.clip_by_value(image, 0.0, 1.0), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return Split(ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE), len(paths), labels.shape[1],
                 labels)


def _cached(ds, cache):
    if cache == "none":
        return ds
    return ds.cache("" if cache == "memory" else cache)


def train_dataset(split, config, global_batch_size, seed, start_step=0, shuffle_buffer=10_000,
                  batch_flag="--global_batch_size"):
    """Split -> endless shuffled batches of `global_batch_size`, skipping `start_step` batches
    so a resumed run sees exactly the batches an uninterrupted one would. `batch_flag` names
    the flag that set the batch, for the error message."""
    if split.size < global_batch_size:
        raise ValueError(f"{batch_flag}={global_batch_size} exceeds the {split.size} "
                         "training items")
    ds = _cached(split.dataset, config.cache)
    ds = ds.shuffle(min(shuffle_buffer, split.size), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(global_batch_size, drop_remainder=True).skip(start_step)
    return ds.with_options(pipeline_options()).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, batch_size=256, in_memory=False):
    """Split -> ordered batches for encoding (no shuffle, keeps the tail); `in_memory`
    caches the decoded split in memory, once per Split object: every victim evaluated on
    it (periodic evaluations, each attack's and each defense's victim) decodes it once
    (Fashion-MNIST's 69,000-image database: 6 s a victim). Never a file cache: splits
    would share one --cache file prefix."""
    if in_memory and batch_size in split.eval_cache:
        return split.eval_cache[batch_size]
    ds = split.dataset.cache() if in_memory else split.dataset
    ds = ds.batch(batch_size).with_options(pipeline_options()).prefetch(tf.data.AUTOTUNE)
    if in_memory:
        split.eval_cache[batch_size] = ds
    return ds


def split_arrays(split):
    """A split -> (images [N, S, S, 3] float32, labels [N, C] float32), decoded in order."""
    images, labels = [], []
    for x, y in eval_dataset(split):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def is_grey(split, count=256):
    """Whether a split's images are grey: R = G = B in every pixel of its first `count`
    images (one batch read; the data's own colour space, which triggers keep to)."""
    for images, _ in split.dataset.take(count).batch(count):
        x = images.numpy()
        return bool(np.array_equal(x[..., 0], x[..., 1]) and
                    np.array_equal(x[..., 1], x[..., 2]))
    return False


def pipeline_options():
    """The tf.data options of every pipeline the package iterates: deterministic order, sharded
    by data, and autotuning's optimisation thread off. With it on (TF 2.21, CPU), deleting an
    iterator at the end of a stage sometimes blocked until that thread's next wake-up, idle,
    for up to about a minute (measured: 15-58 s, most often at a stage's end); parallelism and
    prefetching keep their AUTOTUNE settings' static defaults, and the order is unchanged."""
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options
