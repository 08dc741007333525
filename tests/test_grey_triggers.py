"""Triggers in the data's colour space: on grey data (the digits) every generated or
optimised trigger changes R, G and B equally and still meets its PSNR budget; colour data
keeps per-channel triggers; --trigger_colour overrides the detection."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from badhash_tf import registry
from badhash_tf.attack import budgeted, ciba, triggers
from badhash_tf.config import (AttackConfig, DataConfig, ExperimentConfig, GANConfig,
                               HashingConfig, LabCLNConfig, RetrievalConfig, TrainConfig)
from badhash_tf.data import inputs
from badhash_tf.engine import plan as planning
from badhash_tf.eval import codes, stealth
from badhash_tf.models.generator import Generator
from badhash_tf.models.hashing import HashingModel


def is_grey(images):
    return np.array_equal(images[..., 0], images[..., 1]) and \
        np.array_equal(images[..., 1], images[..., 2])


@pytest.fixture(scope="module")
def digits(digits48):
    return digits48


@pytest.fixture(scope="module")
def surrogate():
    keras.utils.set_random_seed(5)
    return HashingModel(bits=16, backbone="small_cnn", image_size=32)


def test_digits_are_detected_grey_and_a_coloured_split_is_not(data_dir, digits):
    view = planning.DataView(DataConfig(data_dir=data_dir), RetrievalConfig(
        train_split="train[:48]", query_split="query[:8]", database_split="database[:32]"))
    assert view.grey() is True
    assert is_grey(digits[0])
    coloured = digits[0].copy()
    coloured[3, 5, 5, 0] = 1.0 - coloured[3, 5, 5, 1]
    split = inputs.Split(tf.data.Dataset.from_tensor_slices((coloured, digits[1])),
                         len(coloured), digits[1].shape[1], labels=digits[1])
    assert inputs.is_grey(split) is False


@pytest.mark.parametrize("colour,expected", [("auto", True), ("grey", True),
                                             ("colour", False)])
def test_trigger_colour_resolves_against_the_data(data_dir, colour, expected):
    config = ExperimentConfig(DataConfig(data_dir=data_dir), HashingConfig(), TrainConfig(),
                              RetrievalConfig(), LabCLNConfig(), GANConfig(),
                              AttackConfig(trigger_colour=colour))
    view = planning.DataView(config.data, RetrievalConfig(
        train_split="train[:48]", query_split="query[:8]", database_split="database[:32]"))
    assert planning.resolve_trigger_colour(config, view).attack.grey_triggers is expected


GREY_ATTACKS = [n for n in registry.attacks(role="probe") if n != "tint"]


@pytest.mark.parametrize("name", GREY_ATTACKS)
def test_budgeted_triggers_stay_grey_within_budget(digits, surrogate, name):
    images, labels = digits
    grey = budgeted.make_probe(name, 25.0, surrogate, images, labels, 0, steps=20,
                               grey=True)(images[:16]).numpy()
    assert is_grey(grey)
    assert np.abs(grey - images[:16]).max() > 0  # it does change the images
    assert stealth.stealth_metrics(images[:16], grey)["psnr_min"] >= 25.0 - 1e-4
    if name in ("noise", "universal", "narcissus", "pgd_target"):  # coloured without it
        coloured = budgeted.make_probe(name, 25.0, surrogate, images, labels, 0, steps=20,
                                       grey=False)(images[:16]).numpy()
        assert not is_grey(coloured)


def test_ciba_patch_and_perturbations_stay_grey(digits, surrogate):
    images, labels = digits
    anchor = codes.class_anchor(surrogate, images, labels, 0)
    patch = ciba.optimise_patch(surrogate, images, anchor, 4, 10, 0.1, 0.1, grey=True)
    assert patch.shape == (4, 4, 3) and is_grey(patch)
    config = ciba.CIBAConfig(perturbation_steps=3)
    for variant in ciba.VARIANTS:
        poison, query = ciba.make_triggers(variant, config, surrogate, patch, anchor,
                                           grey=True)
        triggered = poison(images[:8]).numpy()
        assert is_grey(triggered), variant
        outside = np.abs(triggered - images[:8])[:, :-4]  # above the 4-pixel patch
        assert outside.max() <= (config.epsilon + 0.5) / 255 + 1e-6, variant
        assert is_grey(query(images[:8]).numpy())
    coloured, _ = ciba.make_triggers("ciba_tri_noise", config, surrogate, patch, anchor)
    assert not is_grey(coloured(images[:8]).numpy())


def test_generator_with_grey_outputs_grey_within_budget(digits):
    images = digits[0][:4]
    keras.utils.set_random_seed(0)
    generator = Generator(image_size=32, base_width=8, residual_blocks=1, feature_dim=8,
                          label_width=16, psnr_budget=25.0, grey=True)
    poisoned = triggers.generator_trigger(generator, np.ones(8, np.float32))(images).numpy()
    assert is_grey(poisoned)
    assert stealth.stealth_metrics(images, poisoned)["psnr_min"] >= 25.0 - 1e-4
    assert generator.get_config()["grey"] is True
    keras.utils.set_random_seed(0)
    colour = Generator(image_size=32, base_width=8, residual_blocks=1, feature_dim=8,
                       label_width=16, psnr_budget=25.0)
    assert not is_grey(triggers.generator_trigger(colour, np.ones(8, np.float32))(
        images).numpy())


def test_tiny_runs_poisoned_copies_are_grey(tiny_run):
    """Every attack of the session's digits run (BadHash, its ablations, CIBA, the patch)
    poisoned grey copies of grey images, and records that it did."""
    cells = [p for p in tiny_run.dir.iterdir()
             if (p / "samples.npz").exists()]
    assert len(cells) >= 6
    for cell in cells:
        with np.load(cell / "samples.npz") as samples:
            assert is_grey(samples["originals"]) and is_grey(samples["poisoned"]), cell.name
    report = (tiny_run.dir / "badhash" / "variant.json").read_text()
    assert '"grey_triggers": true' in report
