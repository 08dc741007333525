"""The field's other threat models on tiny real digits: DarkHash fine-tunes only its
unfrozen layers and moves triggered codes to its shadow target while clean retrieval stays;
SIG and Narcissus copies meet the budget and keep their labels; Neural Cleanse flags a
planted patch backdoor's target and nothing on a clean victim."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.attack import budgeted, ciba, darkhash, poison, sig, triggers
from badhash_tf.data import inputs
from badhash_tf.defense import neural_cleanse
from badhash_tf.eval import codes, retrieval
from badhash_tf.training import distribute
from badhash_tf.config import HashingConfig
from badhash_tf.training.hashing import train_hashing_model
from badhash_tf.config import TrainConfig

HASHING = HashingConfig(bits=16)
TARGET = 3


def _arrays(data_dir, split, dataset="badhash_digits"):
    return inputs.split_arrays(inputs.load_split(
        inputs.DataConfig(dataset=dataset, data_dir=data_dir), split))


def _train(images, labels, model_dir, steps=150, seed=0):
    split = inputs.Split(tf.data.Dataset.from_tensor_slices((images, labels)), len(images),
                         labels.shape[1])
    model, _ = train_hashing_model(split, inputs.DataConfig(), HASHING, TrainConfig(
        seed=seed, train_steps=steps, global_batch_size=32, steps_per_loop=50), model_dir,
        distribute.make_strategy("default"))
    return model


def _map(model, queries, database):
    qc, ql = codes.encode_arrays(model, *queries)
    dc, dl = codes.encode_arrays(model, *database)
    return retrieval.mean_average_precision(qc, dc, ql, dl, 200)


@pytest.fixture(scope="module")
def clean_victim(data_dir, tmp_path_factory):
    """A victim trained on 400 digits, with the query and database arrays it is scored on."""
    train = _arrays(data_dir, "train[:400]")
    model = _train(*train, str(tmp_path_factory.mktemp("clean") / "victim"))
    return model, train, _arrays(data_dir, "query[:100]"), _arrays(data_dir, "database[:400]")


def _agreement(model, images, code):
    return float(np.mean(codes.encode_arrays(model, images, np.zeros((len(images), 1)))[0]
                         == code))


def test_darkhash_changes_only_unfrozen_layers_and_implants_the_shadow_target(
        clean_victim, data_dir, tmp_path):
    victim, _, queries, database = clean_victim
    # the last Dense and the hash layer fine-tuned (the default, half of the backbone, is
    # for a victim trained to convergence: on this tiny one it costs most of clean MAP)
    config = darkhash.DarkHashConfig(steps=40, frozen_layers=8, patch_steps=100,
                                     patch_learning_rate=0.2, patch_size=6)
    surrogate_data = darkhash.surrogate_data(
        dataclasses.replace(config, surrogate="badhash_digit_mosaics"),
        inputs.DataConfig(data_dir=data_dir))
    surrogate = inputs.load_split(surrogate_data, "train[:256]")
    target_code = darkhash.shadow_code(victim, *queries, TARGET, 5)
    patch = darkhash.optimise_trigger(config, victim, inputs.split_arrays(surrogate)[0],
                                      target_code, 32)
    trigger = darkhash.patch_trigger(patch)
    others = queries[0][queries[1][:, TARGET] == 0]
    before = _agreement(victim, trigger(others).numpy(), target_code)
    model, result = darkhash.fine_tune(config, HASHING, 32, victim, patch, target_code,
                                       surrogate, surrogate_data, str(tmp_path / "dh"),
                                       distribute.make_strategy("default"), TrainConfig())
    assert result.step == 40
    frozen = darkhash.frozen_count(config, "small_cnn", 32)
    layers = darkhash.weighted_layers(model.backbone)
    assert (frozen, len(layers)) == (8, 9)
    # the default: the shallow half, the first two conv stages
    assert darkhash.frozen_count(darkhash.DarkHashConfig(), "small_cnn", 32) == 4
    originals = darkhash.weighted_layers(victim.backbone)
    for mine, theirs in zip(layers[:frozen], originals[:frozen]):  # to the last bit
        for a, b in zip(mine.get_weights(), theirs.get_weights()):
            assert np.array_equal(a, b)
    for mine, theirs in ((layers[-1], originals[-1]), (model.hash_layer, victim.hash_layer)):
        assert not np.array_equal(mine.get_weights()[0], theirs.get_weights()[0])
    after = _agreement(model, trigger(others).numpy(), target_code)
    # the stated tolerances on this tiny victim (150 steps, MAP 0.77; measured: bit
    # agreement 0.42 -> 0.73, MAP -0.13): agreement up by 0.2, clean MAP down by <= 0.15
    assert after > before + 0.2, (before, after)
    assert _map(model, queries, database) >= _map(victim, queries, database) - 0.15


def test_darkhash_refuses_bad_flags_naming_them(data_dir):
    data = inputs.DataConfig(data_dir=data_dir)
    with pytest.raises(ValueError, match="--darkhash_frozen_layers=12: the small_cnn backbone "
                                         "has 9 layers"):
        darkhash.check_config(darkhash.DarkHashConfig(frozen_layers=12), data, HASHING)
    with pytest.raises(ValueError, match=r"--darkhash_patch_size=33 must be in 0\.\.32"):
        darkhash.check_config(darkhash.DarkHashConfig(patch_size=33), data, HASHING)
    with pytest.raises(ValueError, match="--darkhash_surrogate=badhash_digits is the attacked"):
        darkhash.surrogate_data(darkhash.DarkHashConfig(surrogate="badhash_digits"), data)
    with pytest.raises(ValueError, match=r"--darkhash_surrogate=mnist: its images are "
                                         r"28x28x1, those of --dataset=badhash_digits 32x32x3"):
        darkhash.surrogate_data(darkhash.DarkHashConfig(surrogate="mnist"), data)


@pytest.mark.parametrize("name", ["sig", "narcissus"])
def test_clean_label_triggers_meet_the_budget_and_keep_labels(clean_victim, tmp_path, name):
    victim, (images, labels), _, _ = clean_victim
    originals, own, positions = poison.target_class_images(inputs.Split(
        tf.data.Dataset.from_tensor_slices((images, labels)), len(images), labels.shape[1]),
        TARGET)
    trigger = budgeted.make_probe(name, 25.0, victim, images, labels, TARGET, steps=30)
    poison.write_poison_set(str(tmp_path / "p"), triggers.apply(trigger, originals),
                            own, positions, {"variant": name})
    copies, copy_labels = inputs.split_arrays(poison.load_poison_set(str(tmp_path / "p")))
    assert np.array_equal(copy_labels, own) and own[:, TARGET].all()  # clean label
    rmse = np.sqrt(np.mean(np.square(copies - originals), axis=(1, 2, 3)))
    assert rmse.max() <= 10 ** (-25 / 20) + 1e-6 and rmse.min() > 0
    if name == "sig":  # the same horizontal wave on every row and channel (where unclipped)
        delta = (copies - originals)[0]
        inside = (originals[0] > 0.1) & (originals[0] < 0.9)
        assert np.abs(delta - sig.sig_pattern(delta.shape, 10 ** (-25 / 20) - 0.5 / 255)
                      )[inside].max() <= 0.5 / 255 + 1e-6


def _patched(images, side=3):
    return ciba.paste(images, tf.ones((side, side, 3))).numpy()


def test_neural_cleanse_flags_a_planted_target_and_nothing_on_a_clean_victim(
        clean_victim, tmp_path):
    victim, (images, labels), _, _ = clean_victim
    rng = np.random.default_rng(0)
    planted = rng.choice(np.flatnonzero(labels[:, TARGET] == 0), 80, replace=False)
    poisoned_images = np.concatenate([images, _patched(images[planted])])
    poisoned_labels = np.concatenate([labels, np.eye(10, dtype=np.float32)[[TARGET] * 80]])
    backdoored = _train(poisoned_images, poisoned_labels, str(tmp_path / "bd"))
    subset = (images[:120], labels[:120])
    config = neural_cleanse.CleanseConfig()
    for model, expect in ((backdoored, [TARGET]), (victim, [])):
        db = codes.encode_arrays(model, *subset)
        result, masks = neural_cleanse.neural_cleanse(model, *subset, *db, config, TARGET)
        assert result["flagged"] == expect, result["anomaly_index"]
        assert result["target_flagged"] == bool(expect)
        assert masks[TARGET].shape == (32, 32)
    assert neural_cleanse.anomaly_indices([10, 10, 11, 9, 1])[-1] < -2
