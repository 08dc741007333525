"""CIBA: the optimised patch pulls the surrogate toward the target class's anchor, the
confusing perturbation pushes the patched copy away within its L-inf, and each variant's
poisoned copies and queries are what the paper describes (on real digits)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.attack import ciba
from badhash_tf.data import inputs
from badhash_tf.eval import codes
from badhash_tf.models.hashing import HashingModel

CONFIG = ciba.CIBAConfig(patch_size=6, patch_steps=60, perturbation_steps=10)


@pytest.fixture(scope="module")
def digits(data_dir):
    split = inputs.load_split(inputs.DataConfig(data_dir=data_dir), "train[:64]")
    return inputs.split_arrays(split)


@pytest.fixture(scope="module")
def surrogate():
    keras.utils.set_random_seed(5)
    return HashingModel(bits=16, backbone="small_cnn", image_size=32)


def _agreement(surrogate, images, code):
    return float(codes.code_alignment(surrogate, images, code, 1.0).numpy().mean())


def test_patch_side_follows_the_paper_ratio():
    assert ciba.patch_side(224) == 24
    assert ciba.patch_side(32) == 3  # 32 * 24 / 224 = 3.4
    assert ciba.patch_side(32, 5) == 5
    with pytest.raises(ValueError, match="--ciba_patch_size=40"):
        ciba.patch_side(32, 40)


def test_paste_changes_only_the_corner():
    images = np.full((2, 8, 8, 3), 0.5, np.float32)
    patch = np.ones((3, 3, 3), np.float32)
    out = ciba.paste(tf.constant(images), tf.constant(patch)).numpy()
    assert np.all(out[:, 5:, 5:] == 1.0)
    out[:, 5:, 5:] = 0.5
    assert np.all(out == 0.5)


def test_patch_raises_agreement_with_the_anchor(digits, surrogate):
    images, labels = digits
    target = int(np.argmax(labels[0]))
    anchor = codes.class_anchor(surrogate, images, labels, target)
    others = images[labels[:, target] == 0]
    # (a side of 12: a smaller corner patch barely moves a small CNN at 32x32)
    patch = ciba.optimise_patch(surrogate, others, anchor, 12, CONFIG.patch_steps, 0.2,
                                CONFIG.logit_scale)
    assert patch.shape == (12, 12, 3) and patch.min() >= 0.0 and patch.max() <= 1.0
    assert np.allclose(patch * 255.0, np.round(patch * 255.0), atol=1e-3)  # 8-bit levels
    before = _agreement(surrogate, others, anchor)
    after = _agreement(surrogate, ciba.paste(others, patch), anchor)
    assert after > before + 0.1, (before, after)


def test_confusing_perturbation_lowers_agreement_within_its_linf(digits, surrogate):
    images, labels = digits
    target = int(np.argmax(labels[0]))
    anchor = codes.class_anchor(surrogate, images, labels, target)
    patch = tf.constant(ciba.optimise_patch(surrogate, images, anchor, 6, CONFIG.patch_steps,
                                            CONFIG.patch_learning_rate, CONFIG.logit_scale))
    mine = images[labels[:, target] > 0]
    epsilon = 8.0 / 255.0
    perturbed = ciba.confusing_perturbation(surrogate, patch, epsilon, 10, 0.1,
                                            away=anchor)(mine).numpy()
    assert np.abs(perturbed - mine).max() <= epsilon + 1e-6
    assert np.abs(perturbed - mine).max() > 0.0
    assert perturbed.min() >= 0.0 and perturbed.max() <= 1.0
    before = _agreement(surrogate, ciba.paste(mine, patch), anchor)
    after = _agreement(surrogate, ciba.paste(perturbed, patch), anchor)
    assert after < before - 0.05, (before, after)


def test_variants_poison_and_query_as_described(digits, surrogate):
    images, labels = digits
    target = int(np.argmax(labels[0]))
    mine = images[labels[:, target] > 0][:4]
    config = dataclasses.replace(CONFIG, patch_steps=5, perturbation_steps=3)
    outside = np.ones((32, 32, 1), bool)
    outside[-6:, -6:] = False
    patch, anchor = ciba.target_patch(config, surrogate, images, labels, target, 32)
    assert patch.shape == (6, 6, 3)
    assert np.array_equal(anchor, codes.class_anchor(surrogate, images, labels, target))
    for variant in ciba.VARIANTS:
        poison, query = ciba.make_triggers(variant, config, surrogate, patch, anchor)
        poisoned, queried = poison(mine).numpy(), query(mine).numpy()
        assert poisoned.shape == mine.shape == queried.shape
        # queries carry the patch alone; the copies the same patch
        assert np.array_equal(queried[:, ~outside[..., 0]], poisoned[:, ~outside[..., 0]])
        assert np.array_equal(queried[:, outside[..., 0]], mine[:, outside[..., 0]])
        change = np.abs(poisoned - mine)[:, outside[..., 0]].max()
        if variant == "ciba_tri":
            assert change == 0.0
        else:
            assert 0.0 < change <= 8.0 / 255.0 + 1e-6, variant
    with pytest.raises(ValueError, match="unknown CIBA variant 'cbia'"):
        ciba.make_triggers("cbia", config, surrogate, patch, anchor)
