"""The deep-hashing retrieval protocol: which items form the query, train and database splits.

Standard protocol (DeepHash-pytorch, BadHash release): `query` and `train` are drawn per
class (single-label) or at random (multi-label); `database` is every item not in `query`,
so `train` is a subset of `database`.
"""

import re

import numpy as np

SPLITS = ("query", "train", "database")
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
