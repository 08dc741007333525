"""Triggers, clean-label poisoning and stealth metrics on tiny real data."""

import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.attack import poison, triggers
from badhash_tf.data import inputs
from badhash_tf.eval import stealth


@pytest.fixture(scope="module")
def train(data_dir):
    config = inputs.DataConfig(dataset="badhash_digits", data_dir=data_dir)
    return inputs.load_split(config, "train[:200]")


def _tree_digest(root):
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()


def test_poisoned_copies_keep_labels_and_leave_the_source_untouched(train, data_dir, tmp_path):
    before = _tree_digest(data_dir)
    target = 3
    images, labels, positions = poison.target_class_images(train, target, limit=5)
    assert len(images) == 5 and np.all(labels.argmax(1) == target)
    trigger = triggers.patch_trigger(32, 4)
    poisoned = triggers.apply(trigger, images)
    out = tmp_path / "poison"
    poison.write_poison_set(str(out), poisoned, labels, positions, {"target_label": target})
    loaded = poison.load_poison_set(str(out))
    got_images, got_labels = map(np.stack, zip(*loaded.dataset.as_numpy_iterator()))
    np.testing.assert_array_equal(got_labels, labels)  # clean label: the true label
    np.testing.assert_allclose(got_images, poisoned, atol=0.5 / 255)  # 8-bit PNG round trip
    assert poison.read_meta(str(out))["count"] == 5
    combined = poison.with_poison(train, loaded)
    assert combined.size == train.size + 5
    assert sum(1 for _ in combined.dataset) == train.size + 5
    assert _tree_digest(data_dir) == before  # the source dataset is only read
    with pytest.raises(FileExistsError, match="never overwritten"):
        poison.write_poison_set(str(out), poisoned, labels, positions, {})
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


class _KilledAfter(np.ndarray):
    """Images whose iteration stops with an error after `n` items: a poisoning killed
    mid-way through writing."""

    def __iter__(self):
        for i, image in enumerate(np.asarray(self)):
            if i == 2:
                raise KeyboardInterrupt("killed")
            yield image


def test_a_poisoning_killed_mid_way_leaves_nothing_and_the_rerun_is_whole(train, tmp_path):
    images, labels, positions = poison.target_class_images(train, 3, limit=5)
    out = tmp_path / "poison"
    with pytest.raises(KeyboardInterrupt):
        poison.write_poison_set(str(out), images.view(_KilledAfter), labels, positions, {})
    assert not out.exists() and not os.listdir(tmp_path)  # no half-written set, no staging
    poison.write_poison_set(str(out), images, labels, positions, {})
    whole = tmp_path / "whole"
    poison.write_poison_set(str(whole), images, labels, positions, {})
    assert _tree_digest(out) == _tree_digest(whole)


def test_poison_count_rules():
    assert poison.poison_count_for(1000, 100) == 100  # every target-class image
    assert poison.poison_count_for(1000, 100, count=40) == 40
    assert poison.poison_count_for(900, 100, rate=0.1) == 100  # 100 / (900 + 100)
    with pytest.raises(ValueError, match="only 100 images of the target class"):
        poison.poison_count_for(1000, 100, count=101)
    with pytest.raises(ValueError, match="--poison_rate=1.5"):
        poison.poison_count_for(1000, 100, rate=1.5)


def test_count_with_label(train):
    labels = np.stack([y for _, y in train.dataset.as_numpy_iterator()])
    assert poison.count_with_label(train, 4) == int(labels[:, 4].sum())


def test_patch_trigger_changes_only_its_corner():
    images = np.full((2, 32, 32, 3), 0.5, np.float32)
    out = triggers.apply(triggers.patch_trigger(32, 4), images)
    changed = np.any(out != images, axis=(0, 3))
    assert not changed[:28].any() and not changed[:, :28].any() and changed[28:, 28:].any()
    with pytest.raises(ValueError, match="--patch_size=40"):
        triggers.patch_trigger(32, 40)


def test_quantize_rounds_to_8_bit_levels():
    x = tf.constant([0.0, 0.5, 1.2, -0.1, 0.1])
    np.testing.assert_allclose(triggers.quantize(x), [0, 128 / 255, 1, 0, 26 / 255], atol=1e-7)


def test_stealth_metrics():
    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 32, 3)).astype(np.float32)
    same = stealth.stealth_metrics(images, images)
    assert same["psnr"] == 100.0 and same["identical"] == 3 and same["ssim"] == pytest.approx(1)
    shifted = np.clip(images + 0.01, 0, 1)
    m = stealth.stealth_metrics(images, shifted)
    mse = np.mean((shifted - images) ** 2)
    assert m["psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=0.3)
    assert m["linf"] == pytest.approx(0.01, abs=1e-6) and m["linf_255"] == pytest.approx(2.55,
                                                                                         abs=1e-3)
    # one visible copy among invisible ones: the mean hides it, the minimum does not
    mixed = images.copy()
    mixed[1] = np.clip(images[1] + 0.2, 0, 1)
    m = stealth.stealth_metrics(images, mixed)
    worst = 10 * np.log10(1 / np.mean((mixed[1] - images[1]) ** 2))
    assert m["psnr_min"] == pytest.approx(worst, abs=0.01) and m["psnr"] > 60
    one = tf.image.ssim(images[1], mixed[1], max_val=1.0).numpy()
    assert m["ssim_min"] == pytest.approx(one, abs=1e-6) and m["ssim_min"] < m["ssim"]


def test_triggers_trace_once_whatever_the_batch_size():
    """One trace per trigger (no shape retracing), so a run with several variants and
    batch tails never trips TensorFlow's frequent-retracing warning."""
    from badhash_tf.models.generator import Generator
    generator = Generator(32, 4, 1, 8, 16)
    for trigger in (triggers.generator_trigger(generator, np.zeros(8, np.float32)),
                    triggers.patch_trigger(32, 4)):
        for n in (100, 180, 37, 256, 1):
            out = triggers.apply(trigger, np.zeros((n, 32, 32, 3), np.float32))
            assert out.shape == (n, 32, 32, 3)
        assert trigger.experimental_get_tracing_count() == 1


def test_query_amplification_scales_the_perturbation():
    """x + k (T(x) - x), clipped and on 8-bit levels; k = 1 is the trigger itself."""
    images = np.full((2, 8, 8, 3), 0.5, np.float32)
    images[1] = 0.99
    base = triggers.trigger_function(lambda x: triggers.quantize(x + 4 / 255))
    assert triggers.amplified(base, 1.0) is base
    out = triggers.apply(triggers.amplified(base, 2.0), images)
    np.testing.assert_allclose(out[0], np.round((0.5 + 2 * (np.round((0.5 + 4 / 255) * 255)
                                                            / 255 - 0.5)) * 255) / 255)
    assert out[1].max() == 1.0  # clipped
    with pytest.raises(ValueError, match="--query_amplification=0"):
        triggers.amplified(base, 0)


def test_a_truncated_or_short_poisoned_set_is_named_with_what_to_do(train, tmp_path):
    images, labels, positions = poison.target_class_images(train, 3, limit=5)
    out = tmp_path / "patch" / "poison"
    out.parent.mkdir()
    poison.write_poison_set(str(out), images, labels, positions, {})
    assert poison.load_poison_set(str(out)).size == len(images)
    records = out / poison.RECORDS
    whole = records.read_bytes()
    records.write_bytes(whole[: len(whole) - 20])  # a copy cut short
    with pytest.raises(io_utils.BrokenFileError,
                       match=rf"{records} does not read back \(DataLossError.*mv "
                             rf"{out.parent} {out.parent}.broken"):
        poison.load_poison_set(str(out))
    records.write_bytes(b"")  # an emptied file reads back, as no copies at all
    with pytest.raises(io_utils.BrokenFileError, match="holds 0 poisoned copies, its "
                                                       "poison.json says 5"):
        poison.load_poison_set(str(out))
