"""Embedded tfds builders, the catalog protocol, the list-file reader and its errors."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from badhash_tf.engine import plan
from badhash_tf.engine.layout import RunLayout
from badhash_tf.data import list_files, protocol
from badhash_tf.data.inputs import (DataConfig, check_splits, eval_dataset, load_split,
                                    train_dataset)
from badhash_tf.training.labcln import distinct_label_dataset
from tests.test_fingerprints import CONFIG


def _labels(split):
    return np.concatenate([y.numpy() for _, y in eval_dataset(split)])


def test_digits_protocol_splits(data_dir):
    config = DataConfig(data_dir=data_dir)
    sizes = {s: load_split(config, s).size for s in ("query", "train", "database")}
    assert sizes == {"query": 200, "train": 1000, "database": 1597}
    query = _labels(load_split(config, "query"))
    assert (query.sum(0) == 20).all() and (query.sum(1) == 1).all()
    assert (_labels(load_split(config, "train")).sum(0) == 100).all()
    index = lambda s: {int(ex["index"]) for ex in tfds.load(
        "badhash_digits", split=s, data_dir=data_dir).as_numpy_iterator()}
    assert index("train") <= index("database")
    assert not index("query") & index("database")
    assert index("query") | index("database") == set(range(1797))


def test_digits_images_and_slicing(data_dir):
    split = load_split(DataConfig(data_dir=data_dir), "train[:64]")
    images, labels = next(iter(eval_dataset(split, batch_size=64)))
    assert split.size == 64 and split.num_classes == 10
    assert images.shape == (64, 32, 32, 3) and labels.shape == (64, 10)
    assert 0.0 <= images.numpy().min() and images.numpy().max() <= 1.0
    assert images.numpy().max() > 0.9  # real strokes, not an empty canvas


def test_a_split_kept_in_memory_is_decoded_once_for_every_evaluation(data_dir):
    """Every victim evaluated on one Split object reads the same cached batches; a copy of
    the split, and a streamed evaluation, do not share them."""
    split = load_split(DataConfig(data_dir=data_dir), "query[:40]")
    cached = eval_dataset(split, batch_size=16, in_memory=True)
    assert eval_dataset(split, batch_size=16, in_memory=True) is cached
    assert eval_dataset(split, batch_size=16) is not cached
    assert eval_dataset(dataclasses.replace(split), batch_size=16, in_memory=True) is not cached
    streamed = np.concatenate([x.numpy() for x, _ in eval_dataset(split, batch_size=16)])
    for _ in range(2):  # filled, then read back from memory: the same images in order
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in cached]), streamed)
    assert streamed.shape == (40, 32, 32, 3)


def test_mosaics_are_multi_label(data_dir):
    config = DataConfig(dataset="badhash_digit_mosaics", data_dir=data_dir)
    assert [load_split(config, s).size for s in ("query", "train", "database")] == [200, 1000, 1800]
    labels = _labels(load_split(config, "train"))
    assert labels.shape == (1000, 10)
    counts = labels.sum(1)
    assert counts.min() >= 1 and counts.max() <= 4 and (counts > 1).mean() > 0.5


def test_train_dataset_resume_skips_seen_batches(data_dir):
    config = DataConfig(data_dir=data_dir)
    split = load_split(config, "train[:64]")
    full = [y.numpy() for _, y in train_dataset(split, config, 16, seed=3).take(6)]
    resumed = [y.numpy() for _, y in train_dataset(split, config, 16, seed=3, start_step=4).take(2)]
    np.testing.assert_array_equal(full[4:], resumed)
    with pytest.raises(ValueError, match="global_batch_size=128 exceeds the 64"):
        train_dataset(split, config, 128, seed=0)


def test_every_pipeline_runs_without_autotuning_thread(data_dir):
    # its idle wake-ups blocked iterator deletion at a stage's end for up to a minute
    config = DataConfig(data_dir=data_dir)
    split = load_split(config, "train[:64]")
    pipelines = {"train": train_dataset(split, config, 16, seed=0), "eval": eval_dataset(split),
                 "labcln": distinct_label_dataset(np.eye(10), 4, seed=0)}
    for name, ds in pipelines.items():
        assert (ds.options().autotune.enabled, ds.options().deterministic) == (False, True), name
    # the same batches as with autotuning on (the order is deterministic either way)
    tuned = tf.data.Options()
    tuned.autotune.enabled = True
    untuned = train_dataset(split, config, 16, seed=0)
    np.testing.assert_array_equal(
        np.concatenate([x.numpy() for x, _ in untuned.take(9)]),
        np.concatenate([x.numpy() for x, _ in
                        train_dataset(split, config, 16, seed=0).with_options(tuned).take(9)]))


def test_bad_split_names(data_dir):
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_split(DataConfig(data_dir=data_dir), "validation")
    with pytest.raises(ValueError, match="not of the form"):
        load_split(DataConfig(data_dir=data_dir), "train[:x]")
    with pytest.raises(ValueError, match="is empty"):
        load_split(DataConfig(data_dir=data_dir), "train[5:5]")


class TinyCatalog(tfds.core.GeneratorBasedBuilder):
    """A stand-in for a catalog dataset such as cifar10: train/test splits, ClassLabel."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 30), "test": self._generate_examples(30, 12)}

    def _generate_examples(self, start, n):
        for i in range(start, start + n):
            yield i, {"image": np.full((8, 8, 1), i, np.uint8), "label": i % 3}


def test_catalog_dataset_uses_protocol(data_dir):
    TinyCatalog(data_dir=data_dir).download_and_prepare()
    config = DataConfig(dataset="tiny_catalog", data_dir=data_dir, image_size=16,
                        query_per_class=2, train_per_class=5)
    query, train = load_split(config, "query"), load_split(config, "train")
    database = load_split(config, "database")
    assert (query.size, train.size, database.size) == (6, 15, 36)
    images, labels = next(iter(eval_dataset(query)))
    assert images.shape == (6, 16, 16, 3) and (labels.numpy().sum(0) == 2).all()
    pixel = lambda split: {round(float(x[0, 0, 0]) * 255) for x, _ in split.dataset}
    assert pixel(train) <= pixel(database) and not pixel(query) & pixel(database)


def test_catalog_dataset_not_prepared_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--dataset=cifar10 is not prepared in --data_dir="):
        load_split(DataConfig(dataset="cifar10", data_dir=str(tmp_path)), "train")


def test_per_class_protocol_needs_enough_items():
    with pytest.raises(ValueError, match="class 1 has 2 items"):
        protocol.per_class_split_indices([0, 0, 0, 1, 1], 1, 2)


# ---- list files -------------------------------------------------------------------------

def _write_image(path, value, size=(40, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture
def list_root(tmp_path):
    root = tmp_path / "ds"
    for split, n in (("train", 3), ("test", 2), ("database", 4)):
        for i in range(n):
            _write_image(str(root / "img" / f"{split}{i}.png"), 40 * i)
        (root / f"{split}_img.txt").write_text(
            "".join(f"img/{split}{i}.png\n" for i in range(n)))
        (root / f"{split}_label.txt").write_text(
            "".join(f"{int(i % 3 == 0)} {int(i % 3 == 1)} 1\n" for i in range(n)))
    return root


def test_list_files_pipeline(list_root):
    config = DataConfig(dataset=f"list:{list_root}", image_size=16)
    split = load_split(config, "query")  # the release's test_*.txt
    images, labels = next(iter(eval_dataset(split)))
    assert split.size == 2 and split.num_classes == 3
    assert images.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(images.numpy()[1], 40 / 255, atol=1e-3)
    np.testing.assert_array_equal(labels.numpy(), [[1, 0, 1], [0, 1, 1]])
    assert load_split(config, "database[1:3]").size == 2


def _one_bit_bmp(root):
    """Line 2 of train_img.txt becomes a 1-bit BMP: PIL reads it, TensorFlow does not."""
    from PIL import Image
    Image.open(root / "img" / "train1.png").convert("1").save(root / "img" / "train1.bmp")
    lines = (root / "train_img.txt").read_text().splitlines()
    (root / "train_img.txt").write_text("\n".join([lines[0], "img/train1.bmp", *lines[2:]]) + "\n")


def _directory_line(root):
    (root / "img" / "sub").mkdir()
    lines = (root / "train_img.txt").read_text().splitlines()
    (root / "train_img.txt").write_text("\n".join([lines[0], "img/sub", *lines[2:]]) + "\n")


@pytest.mark.parametrize("mutate, error, message", [
    (_one_bit_bmp, ValueError, r"train_img.txt:2: image 'img/train1.bmp' cannot be read by "
     r"training's decoder, tf.io.decode_image \(Number of channels"),
    (_directory_line, ValueError, r"train_img.txt:2: image path 'img/sub' is a directory"),
    (lambda r: (r / "img" / "train1.png").unlink(), FileNotFoundError,
     r"train_img.txt:2: image 'img/train1.png' not found"),
    (lambda r: (r / "img" / "train2.png").write_text("not an image"), ValueError,
     r"train_img.txt:3: image 'img/train2.png' is not a JPEG, PNG"),
    (lambda r: (r / "train_label.txt").write_text("1 0 1\n0 1\n1 1 0\n"), ValueError,
     r"train_label.txt:2: label row has 2 values, expected 3"),
    (lambda r: (r / "train_label.txt").write_text("1 0 1\n0 1 1\n"), ValueError,
     r"train_img.txt has 3 lines but .*train_label.txt has 2"),
    (lambda r: ((r / "train_img.txt").write_text(""), (r / "train_label.txt").write_text("")),
     ValueError, r"train_img.txt: split 'train' is empty"),
    (lambda r: (r / "train_img.txt").write_text("img/train0.png\n../../etc/passwd\nimg/x.png\n"),
     ValueError, r"train_img.txt:2: image path '../../etc/passwd' escapes the dataset root"),
    (lambda r: (r / "train_label.txt").write_text("1 0 1\n0 x 1\n1 1 0\n"), ValueError,
     r"train_label.txt:2: label row '0 x 1' is not numeric"),
    (lambda r: (r / "train_img.txt").unlink(), FileNotFoundError,
     r"no list file for split 'train'"),
    (lambda r: (r / "img" / "train1.png").write_bytes(
        (r / "img" / "train1.png").read_bytes()[:60]), ValueError,  # valid PNG start
     r"train_img.txt:2: image 'img/train1.png' cannot be decoded whole"),
    (lambda r: (r / "train_label.txt").write_text("1 0 1\n0 nan 1\n1 1 0\n"), ValueError,
     r"train_label.txt:2: label value nan is not 0 or 1"),
    (lambda r: (r / "train_label.txt").write_text("1 0 1\n0 1 1\n1 -1 0\n"), ValueError,
     r"train_label.txt:3: label value -1.0 is not 0 or 1"),
    (lambda r: (r / "train_label.txt").write_text("1 0 inf\n0 1 1\n1 1 0\n"), ValueError,
     r"train_label.txt:1: label value inf is not 0 or 1"),
    (lambda r: (r / "train_label.txt").write_text("1 0 1\n0 0 0\n1 1 0\n"), ValueError,
     r"train_label.txt:2: label row has no label \(all zeros\)"),
    (lambda r: (r / "train_img.txt").write_bytes(b"img/train0.png\nimg/tr\xe9in1.png\n"),
     ValueError, r"train_img.txt:2: not UTF-8 text"),
])
def test_list_file_errors_name_file_and_line(list_root, mutate, error, message):
    before = sorted(p.name for p in list_root.iterdir())
    mutate(list_root)
    with pytest.raises(error, match=message):
        load_split(DataConfig(dataset=f"list:{list_root}"), "train")
    assert set(p.name for p in list_root.iterdir()) <= set(before)  # nothing written


def test_list_reader_returns_absolute_checked_paths(list_root):
    paths, labels = list_files.read_list_split(str(list_root), "database", num_classes=3)
    assert len(paths) == 4 and all(os.path.isabs(p) and os.path.exists(p) for p in paths)
    assert labels.dtype == np.float32 and labels.shape == (4, 3)


def _write_idx(path, array, magic):
    """A gzipped IDX file of a uint8 array (big-endian header: magic, then each dim)."""
    import gzip
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fashion_source(tmp_path):
    """Tiny Fashion-MNIST IDX files: 4 photos per class in 'train', 2 in 't10k'; pixel
    (0, 0) of item i holds i % 256 so items can be traced through the builder."""
    source = tmp_path / "fashion"
    source.mkdir()
    for part, per_class in (("train", 4), ("t10k", 2)):
        labels = np.repeat(np.arange(10), per_class)
        images = np.full((len(labels), 28, 28), 200, np.uint8)
        images[:, 0, 0] = np.arange(len(labels)) + (0 if part == "train" else 40)
        _write_idx(source / f"{part}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(source / f"{part}-labels-idx1-ubyte.gz", labels, 2049)
    return source


def test_fashion_mnist_builder_from_idx_files(fashion_source, tmp_path, monkeypatch):
    from badhash_tf.data import fashion_mnist
    monkeypatch.setattr(fashion_mnist.BadhashFashionMnist, "QUERY_PER_CLASS", 1)
    monkeypatch.setattr(fashion_mnist.BadhashFashionMnist, "TRAIN_PER_CLASS", 3)
    config = DataConfig(dataset="badhash_fashion_mnist", data_dir=str(tmp_path / "tfds"),
                        source_dir=str(fashion_source))
    splits = {s: load_split(config, s) for s in ("query", "train", "database")}
    assert {s: v.size for s, v in splits.items()} == {"query": 10, "train": 30, "database": 50}
    assert all(v.num_classes == 10 for v in splits.values())
    images = np.concatenate([x.numpy() for x, _ in eval_dataset(splits["database"])])
    assert images.shape == (50, 32, 32, 3)
    # 2 pixels of black padding around the untouched 28x28 photo, grey as 3 equal channels
    assert np.all(images[:, :2] == 0) and np.all(images[:, :, -2:] == 0)
    assert np.allclose(images[:, 2:30, 2:30][:, 1:, 1:], 200 / 255)
    assert np.all(images[..., 0] == images[..., 2])
    # t10k items are pooled in (their pixel (0, 0) starts at 40), none of query in database
    corner = lambda s: {round(v * 255) for v in np.concatenate(
        [x.numpy()[:, 2, 2, 0] for x, _ in eval_dataset(splits[s])])}
    assert max(corner("database") | corner("query")) >= 40
    assert not corner("query") & corner("database")
    assert np.all(_labels(splits["query"]).sum(0) == 1)  # one query per class


def test_fashion_mnist_missing_or_broken_files_are_named(fashion_source, tmp_path):
    from badhash_tf.data import fashion_mnist
    missing = DataConfig(dataset="badhash_fashion_mnist", data_dir=str(tmp_path / "a"),
                         source_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere/train-images-idx3-ubyte.*"
                       "apt-get install dataset-fashion-mnist"):
        load_split(missing, "train")
    labels = fashion_source / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, np.arange(5), 2049)  # 5 labels for 20 images
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz holds 20 images but .*"
                       "t10k-labels-idx1-ubyte.gz 5 labels"):
        fashion_mnist.load_pooled(str(fashion_source))
    truncated = fashion_source / "train-images-idx3-ubyte.gz"
    _write_idx(truncated, np.zeros((40, 28, 27)), 2051)
    data = __import__("gzip").open(truncated).read()
    __import__("gzip").open(truncated, "wb").write(data[:16] + data[16:100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: header says 40x28x27"):
        fashion_mnist.read_idx(str(truncated), 2051)
    with pytest.raises(ValueError, match="not an IDX file of magic 2049"):
        fashion_mnist.read_idx(str(truncated), 2049)


def test_every_split_a_run_reads_is_checked_before_training(list_root, tmp_path):
    config = dataclasses.replace(CONFIG, data=DataConfig(dataset=f"list:{list_root}",
                                                         image_size=16))
    (list_root / "img" / "database3.png").unlink()  # only the database split misses one
    layout = RunLayout(str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match=r"--database_split=database: .*"
                       r"database_img.txt:4: image 'img/database3.png' not found"):
        plan.make_plan(config, layout.root, ("badhash",))
    assert not os.path.exists(layout.surrogate)  # nothing trained
    _write_image(str(list_root / "img" / "database3.png"), 0)
    (list_root / "database_label.txt").write_text("1 0 1 0\n" * 4)
    specs = {"--train_split": "train", "--query_split": "query", "--database_split": "database"}
    with pytest.raises(ValueError, match=r"label widths differ .*--train_split=train has 3, "
                       r"--query_split=query has 3, --database_split=database has 4"):
        check_splits(config.data, specs)
    with pytest.raises(ValueError, match=r"--query_split=qeury: unknown split 'qeury'"):
        check_splits(config.data, {**specs, "--query_split": "qeury"})
