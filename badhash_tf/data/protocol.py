"""The deep-hashing retrieval protocol: which items form the query, train and database splits.

Standard protocol (DeepHash-pytorch, BadHash release): `query` and `train` are drawn per
class (single-label) or at random (multi-label); `database` is every item not in `query`,
so `train` is a subset of `database`.
"""

import abc
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

SPLITS = ("query", "train", "database")
PROTOCOL_SEED = 2022  # the embedded datasets' split seed
IMAGE_SIZE = 32  # the embedded datasets' image side
_SPLIT_SPEC = re.compile(r"^(?P<name>[A-Za-z_]+)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def per_class_split_indices(class_ids, query_per_class, train_per_class, seed=0):
    """Single-label protocol. class_ids: [N] int -> {split: sorted int64 indices}.

    For each class, a seeded permutation gives `query_per_class` query items, then
    `train_per_class` train items from the rest. Raises ValueError when a class is too small.
    """
    class_ids = np.asarray(class_ids)
    rng = np.random.default_rng(seed)
    query, train = [], []
    for c in np.unique(class_ids):
        members = rng.permutation(np.flatnonzero(class_ids == c))
        need = query_per_class + train_per_class
        if len(members) < need:
            raise ValueError(
                f"class {c} has {len(members)} items, fewer than query_per_class + "
                f"train_per_class = {need}")
        query.append(members[:query_per_class])
        train.append(members[query_per_class:need])
    return _finish(len(class_ids), np.concatenate(query), np.concatenate(train))


class SingleLabelBuilder(tfds.core.GeneratorBasedBuilder):
    """A tfds builder of a single-label retrieval dataset: subclasses give the pooled images
    and labels (`_pooled`), the 32x32x3 conversion (`_to_rgb`), the label feature, and
    QUERY_PER_CLASS / TRAIN_PER_CLASS; the splits follow `per_class_split_indices`; the
    description is the subclass's module docstring. Abstract, so tfds does not register it."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    @abc.abstractmethod
    def _label_feature(self):
        """-> the tfds feature of the label (a ClassLabel)."""

    @abc.abstractmethod
    def _pooled(self, dl_manager):
        """-> (grey images [N, h, w] uint8, labels [N] int)."""

    @abc.abstractmethod
    def _to_rgb(self, gray):
        """[h, w] uint8 -> [IMAGE_SIZE, IMAGE_SIZE, 3] uint8."""

    def _info(self):
        return self.dataset_info_from_configs(
            description=sys.modules[type(self).__module__].__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "label": self._label_feature(),
                "index": np.int64,
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        images, labels = self._pooled(dl_manager)
        splits = per_class_split_indices(labels, self.QUERY_PER_CLASS, self.TRAIN_PER_CLASS,
                                         seed=PROTOCOL_SEED)
        return {name: self._generate_examples(images, labels, idx) for name, idx in splits.items()}

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            yield int(i), {"image": self._to_rgb(images[i]), "label": int(labels[i]),
                           "index": int(i)}


def random_split_indices(num_items, query_count, train_count, seed=0):
    """Multi-label protocol: a seeded permutation of `num_items` -> {split: sorted indices}."""
    if query_count + train_count > num_items:
        raise ValueError(f"query_count + train_count = {query_count + train_count} exceeds the "
                         f"{num_items} items available")
    order = np.random.default_rng(seed).permutation(num_items)
    return _finish(num_items, order[:query_count], order[query_count:query_count + train_count])


def _finish(num_items, query, train):
    database = np.setdiff1d(np.arange(num_items), query)
    return {"query": np.sort(query).astype(np.int64), "train": np.sort(train).astype(np.int64),
            "database": database.astype(np.int64)}


def parse_split(spec):
    """'train' or 'train[:64]' or 'database[10:20]' -> (name, slice). Raises ValueError."""
    match = _SPLIT_SPEC.match(spec.strip())
    if not match:
        raise ValueError(f"split {spec!r} is not of the form NAME or NAME[start:stop]")
    to_int = lambda s: int(s) if s not in (None, "") else None
    return match["name"], slice(to_int(match["start"]), to_int(match["stop"]))
