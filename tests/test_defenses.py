"""Defenses: each query-time transform keeps shape and range; the inspections find a
planted outlier cluster and not a random one; fine-pruning removes the requested share of
channels and keeps them removed through fine-tuning; STRIP tells a constant-code model
apart; `defend` refuses bad input before any work."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.config import DataConfig, RetrievalConfig
from badhash_tf.training.victim import train_and_evaluate
from badhash_tf.data import inputs
from badhash_tf.defense import inspection, repair, strip, transforms
from badhash_tf.engine import defenses as harness
from badhash_tf.engine.layout import VARIANT_JSON
from badhash_tf.engine.plan import DataView
from badhash_tf.models.hashing import HashingModel
from badhash_tf.config import HashingConfig
from badhash_tf.config import TrainConfig


@pytest.fixture(scope="module")
def digits(data_dir):
    split = inputs.load_split(inputs.DataConfig(data_dir=data_dir), "train[:32]")
    return inputs.split_arrays(split)


@pytest.mark.parametrize("name,strength", [("jpeg", 50), ("blur", 1.0), ("resize", 0.5),
                                           ("bit_depth", 3)])
def test_transform_keeps_shape_and_range_and_changes_images(digits, name, strength):
    images = digits[0][:8]
    out = transforms.apply(name, images, strength, batch_size=5)  # two batches
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - images).max() > 0.01


def test_transform_details():
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32)[None, :, None, None],
                   (1, 1, 16, 3)).transpose(0, 2, 1, 3)
    assert len(np.unique(transforms.apply("bit_depth", ramp, 2))) == 4  # 2 bits: 4 levels
    flat = np.full((1, 16, 16, 3), 0.3, np.float32)
    for name, strength in (("blur", 2.0), ("resize", 0.25)):  # a flat image stays flat
        assert np.allclose(transforms.apply(name, flat, strength), 0.3, atol=1e-5)


def _planted(seed, outliers=True):
    """Two labels of 90 clean items each; label 0 also holds 10 items that form (or, with
    `outliers` False, do not form) a shifted cluster -> features, labels, is_poison."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((190, 16))
    labels = np.zeros((190, 2), np.float32)
    labels[:100, 0] = labels[100:, 1] = 1.0
    is_poison = np.zeros(190, bool)
    is_poison[90:100] = True
    if outliers:
        features[90:100] += 4.0 * rng.standard_normal(16) / 4.0 + 3.0
    return features, labels, is_poison


@pytest.mark.parametrize("name", inspection.SCORERS)
def test_inspection_finds_a_planted_cluster_and_not_a_random_one(name):
    features, labels, is_poison = _planted(0)
    scores = inspection.SCORERS[name](features, labels)
    removed = inspection.removal_mask(scores, labels, 0.15)
    planted = inspection.detection_figures(scores, is_poison, removed)
    assert planted["auroc"] > 0.97
    assert planted["recall"] == 1.0
    assert planted["removed"] == 15 + 14  # ceil(0.15 x 100) + ceil(0.15 x 90)
    aurocs = [inspection.detection_figures(inspection.SCORERS[name](*_planted(s, False)[:2]),
                                           _planted(s, False)[2], removed)["auroc"]
              for s in range(1, 6)]
    assert 0.3 < np.mean(aurocs) < 0.7, aurocs


def test_prune_masks_the_least_active_channels():
    mask = repair.prune_mask(np.array([5.0, 0.1, 3.0, 0.0, 2.0]), 0.4)
    assert mask.tolist() == [1, 0, 1, 0, 1]


def test_fine_pruning_removes_the_share_and_fine_tuning_keeps_it_removed(digits, tmp_path):
    keras.utils.set_random_seed(2)
    victim = HashingModel(bits=16, image_size=32)
    weights = str(tmp_path / "victim.weights.h5")
    victim.save_weights(weights)
    activity = repair.channel_activity(victim, digits[0])
    assert activity.shape == (128,)  # the small CNN's last conv
    mask = repair.prune_mask(activity, 0.25)
    split = inputs.Split(tf.data.Dataset.from_tensor_slices(digits), 32, 10)
    model, metrics, _ = train_and_evaluate(
        inputs.DataConfig(), HashingConfig(bits=16), TrainConfig(train_steps=3,
                                                                global_batch_size=16),
        RetrievalConfig(query_split="query[:16]", database_split="database[:64]",
                        eval_every_epochs=0), str(tmp_path / "ft"),
        tf.distribute.get_strategy(), train_split=split,
        initialize=repair.initializer(weights, mask))
    assert metrics["train_steps"] == 3
    assert repair.pruned_channels(model) == 32  # 25% of 128, still zero after 3 steps
    conv, norm, _ = repair.last_conv(model.backbone)
    assert np.all(keras.ops.convert_to_numpy(norm.gamma)[mask == 0] == 0)
    kept = keras.ops.convert_to_numpy(conv.kernel)[..., mask == 1]
    original = keras.ops.convert_to_numpy(repair.last_conv(victim.backbone)[0].kernel)
    assert not np.allclose(kept, original[..., mask == 1])  # the rest was fine-tuned


class ConstantCode(keras.Model):
    def call(self, images):
        return tf.ones((tf.shape(images)[0], 8)) * tf.constant([1., -1.] * 4)


def test_strip_scores_a_constant_code_model_as_fully_stable(digits):
    images = digits[0]
    constant = strip.strip_scores(ConstantCode(), images[:6], images[6:], blends=8)
    assert np.allclose(constant, 1.0)
    keras.utils.set_random_seed(0)
    responsive = strip.strip_scores(HashingModel(bits=16, image_size=32), images[:6],
                                    images[6:], blends=8)
    assert responsive.shape == (6,)
    assert responsive.max() < 1.0 and responsive.min() >= 0.0


def test_defend_refuses_bad_input_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--defenses: unknown 'blurr'"):
        harness.check_run_dir(str(tmp_path), ["jpeg", "blurr"], str(tmp_path / "out"))
    with pytest.raises(ValueError, match="no such directory"):
        harness.check_run_dir(str(tmp_path / "nowhere"), ["jpeg"], str(tmp_path / "out"))
    with pytest.raises(ValueError, match="no finished attack variant"):
        harness.check_run_dir(str(tmp_path), ["jpeg"], str(tmp_path / "out"))
    variant = tmp_path / "badhash"
    (variant / "victim").mkdir(parents=True)
    (variant / VARIANT_JSON).write_text("{}")
    with pytest.raises(ValueError, match="variant badhash lacks its victim checkpoint, "
                                         "victim codes, triggered queries, poisoned set"):
        harness.check_run_dir(str(tmp_path), ["jpeg", "spectral"], str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--variants: unknown 'cbia'; choose from badhash"):
        harness.check_run_dir(str(tmp_path), ["jpeg"], str(tmp_path / "out"), ["cbia"])
    assert not os.path.exists(tmp_path / "out")


def test_find_variants_passes_over_stages_moved_aside(tmp_path):
    for name in ("badhash", "darkhash", "darkhash.replaced-20261203-153026", ".hidden"):
        (tmp_path / name).mkdir()
        (tmp_path / name / VARIANT_JSON).write_text("{}")
    assert [os.path.basename(d) for d in harness.find_variants(str(tmp_path))] == [
        "badhash", "darkhash"]


def test_find_variants_follows_linked_stages_once(tmp_path):
    """A cell linked from another run (the demo's frontier links the attack run's BadHash,
    the grids link shared stages) is found, and a directory reached twice is read once."""
    (tmp_path / "other" / "badhash").mkdir(parents=True)
    (tmp_path / "other" / "badhash" / VARIANT_JSON).write_text("{}")
    run = tmp_path / "run"
    (run / "patch").mkdir(parents=True)
    (run / "patch" / VARIANT_JSON).write_text("{}")
    (run / "badhash").symlink_to(tmp_path / "other" / "badhash")
    (run / "loop").symlink_to(run)  # a link back up is not walked again
    assert [os.path.relpath(d, run) for d in harness.find_variants(str(run))] == [
        "badhash", "patch"]


def test_the_log_line_names_what_each_kind_of_defense_found():
    assert harness.summary({"t_map": 0.5, "clean_map": 0.25, "seconds": 3}) == \
        "t_map 0.5000, clean_map 0.2500"
    assert harness.summary({"flagged": [4, 8], "target_flagged": True}) == "flags 4,8"
    assert harness.summary({"flagged": []}) == "flags no label"
    assert harness.summary({"not_applicable": "n/a"}) == "n/a"


def test_the_defenses_read_the_attacks_splits(data_dir):
    """A defended variant's data config, read back from its record, finds the attacks'
    DataView (and so their decoded database); other splits get their own view, once."""
    retrieval = RetrievalConfig(train_split="train[:64]", query_split="query[:40]",
                                database_split="database[:200]")
    view = DataView(DataConfig(data_dir=data_dir), retrieval)
    recorded = DataConfig(**json.loads(json.dumps(dataclasses.asdict(view.config))))
    views = {}
    views[harness._view_key(view.config, view.retrieval)] = view
    assert harness.data_view(views, recorded, retrieval) is view
    assert harness.data_view(views, recorded, retrieval).database is view.database
    other_retrieval = dataclasses.replace(retrieval, query_split="query[:20]")
    other = harness.data_view(views, recorded, other_retrieval)
    assert other.query.size == 20 and harness.data_view(views, recorded, other_retrieval) is other
    images, labels = other.arrays("--query_split")
    assert images.shape == (20, 32, 32, 3) and other.arrays("--query_split")[0] is images
