"""The identity of the data a stage reads, for its fingerprint: a change to the data makes
every stage that read it differ from its record (engine/cells.py), as a changed flag does.

Per split: for list files (`list:ROOT`) the sha256 of the split's image and label list
files and a digest of every listed image's path, size and modification time; for a tfds
dataset its name and version and a digest of the split's parsed examples in key order (the
serialized bytes differ between two builds of the same data; the prepared files' sizes
and modification times instead past CONTENT_LIMIT bytes). Each part is a short hex digest
under a name that says what it covers, so a difference names the file that changed.
"""

import hashlib
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from badhash_tf import io_utils
from badhash_tf.data import inputs, list_files, protocol

CONTENT_LIMIT = 1 << 30  # prepared tfds files up to 1 GiB are hashed by content
LIST_PREFIX = "list:"


def _short(digest):
    return digest[:16]


def split_identity(config, split_spec):
    """DataConfig and a split spec ("train[:64]") -> {part: digest} of what the split reads
    (its slice is in the fingerprint already, as the split flag)."""
    name = protocol.parse_split(split_spec)[0]
    if config.dataset.startswith(LIST_PREFIX):
        return _list_identity(config.dataset[len(LIST_PREFIX):], name)
    return _tfds_identity(config, name)


def _list_identity(root, split):
    img_file, label_file = list_files.list_file_paths(root, split)
    parts = {os.path.basename(p): _short(io_utils.file_sha256(p)) for p in (img_file, label_file)}
    digest = hashlib.sha256()
    with open(img_file, encoding="utf-8") as f:
        for line in f:
            rel = line.strip()
            if not rel:
                continue
            path = rel if os.path.isabs(rel) else os.path.join(root, rel)
            try:
                stat = os.stat(path)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{rel}\0missing\n".encode())
    parts[f"{split} images (size, mtime)"] = _short(digest.hexdigest())
    return parts


def _tfds_identity(config, split):
    builder = tfds.builder(config.dataset, data_dir=config.data_dir)
    if not builder.is_prepared():
        return {"dataset": f"{config.dataset} {builder.version} (not prepared)"}
    records = sorted(f for f in os.listdir(builder.data_dir)
                     if ".tfrecord" in f or ".array_record" in f)
    if config.dataset in inputs.EMBEDDED:  # its own shards (the builders' test = query)
        split = "query" if split == "test" else split
        records = [f for f in records if f"-{split}." in f]
    # (a catalog dataset pools every split and re-splits it: all its records are read)
    paths = [os.path.join(builder.data_dir, f) for f in records]
    by_content = (sum(os.path.getsize(p) for p in paths) <= CONTENT_LIMIT
                  and all(".tfrecord" in p for p in paths))
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        if by_content:
            _records_digest(path, digest)
        else:
            stat = os.stat(path)
            digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}".encode())
    how = "content" if by_content else "size, mtime"
    return {"dataset": f"{config.dataset} {builder.version}",
            f"{split} files ({how})": _short(digest.hexdigest())}


def _records_digest(path, digest):
    """Adds a TFRecord file's examples to `digest`, each feature in name order (a
    serialised tf.train.Example's feature map has no fixed order: two builds of the same
    data differ in bytes, not in content)."""
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        for name in sorted(features):
            digest.update(name.encode() + b"\0" + features[name].SerializeToString())
