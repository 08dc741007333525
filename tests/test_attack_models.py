"""The attacker's models: shapes, ranges, parameter counts at the paper's size, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.models.discriminator import Discriminator
from badhash_tf.models.generator import Generator
from badhash_tf.models.labcln import LabCLN


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_labcln_shapes_and_config():
    model = LabCLN(num_classes=10, bits=32, hidden=64, feature_dim=16)
    out = model(np.eye(10, dtype=np.float32)[:3])
    assert out["feature"].shape == (3, 16) and out["hash"].shape == (3, 32)
    assert out["label"].shape == (3, 10)
    assert np.all(np.abs(out["hash"]) < 1) and np.all((out["label"] > 0) & (out["label"] < 1))
    clone = LabCLN.from_config(model.get_config())
    assert (clone.num_classes, clone.bits, clone.hidden, clone.feature_dim) == (10, 32, 64, 16)


def test_generator_at_paper_size_has_the_release_parameter_count():
    assert _trainable(Generator(image_size=224, base_width=64, residual_blocks=3)) == 21_454_121


def test_discriminator_at_paper_size_has_the_release_parameter_count():
    # The paper's 16,231,344 also counts spectral norm's 17,392 power-iteration vectors.
    model = Discriminator(image_size=224, num_classes=100)
    assert _trainable(model) == 16_231_344 - 17_392


def test_small_generator_output_is_an_image_and_saves(tmp_path):
    model = Generator(image_size=32, base_width=8, residual_blocks=1, label_width=16)
    rng = np.random.default_rng(0)
    images = rng.random((2, 32, 32, 3)).astype(np.float32)
    features = rng.standard_normal((2, 512)).astype(np.float32)
    out = model([images, features]).numpy()
    assert out.shape == (2, 32, 32, 3) and out.min() >= 0.0 and out.max() <= 1.0
    path = str(tmp_path / "generator.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded([images, features]), out, atol=1e-5)


def test_discriminator_outputs_label_and_real_fake_units():
    model = Discriminator(image_size=32, num_classes=10, base_width=8, layers_count=3)
    out = model(np.zeros((4, 32, 32, 3), np.float32))
    assert out.shape == (4, 11)
    clone = Discriminator.from_config(model.get_config())
    assert (clone.layers_count, clone.num_classes) == (3, 10)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="multiple of 16"):
        Generator(image_size=40)
    with pytest.raises(ValueError, match="not divisible by 2\\^5"):
        Discriminator(image_size=48, num_classes=10)


@pytest.mark.parametrize("budget", [20.0, 30.0, 40.0])
def test_budgeted_generator_meets_its_psnr_after_8_bit_rounding(budget):
    """Every output of a budgeted generator (here untrained, so far off the image) is within
    the budget, also after rounding to 8 bits, and the gradient reaches its weights."""
    from badhash_tf.attack.triggers import quantize
    from badhash_tf.eval.stealth import stealth_metrics
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((6, 32, 32, 3)), tf.float32)
    features = tf.constant(rng.standard_normal((6, 8)), tf.float32)
    free = Generator(32, 4, 1, 8, 16)
    assert stealth_metrics(images, free([images, features]))["psnr_min"] < budget
    budgeted = Generator(32, 4, 1, 8, 16, psnr_budget=budget)
    budgeted.set_weights(free.get_weights())
    with tf.GradientTape() as tape:
        out = budgeted([images, features], training=True)
        loss = tf.reduce_mean(out)
    from badhash_tf.models.generator import psnr_radius
    # projected onto the ball's surface: before rounding every image sits at its radius
    np.testing.assert_allclose(
        tf.image.psnr(images, out, max_val=1.0).numpy(),
        -20 * np.log10(psnr_radius(budget)), atol=0.02)
    assert stealth_metrics(images, quantize(out))["psnr_min"] >= budget
    grads = tape.gradient(loss, budgeted.trainable_variables)
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0
                                                      for g in grads)
    assert Generator.from_config(budgeted.get_config()).psnr_budget == budget


def test_psnr_budget_out_of_range_is_named():
    with pytest.raises(ValueError, match="--gan_psnr_budget=60"):
        Generator(32, 4, 1, 8, 16, psnr_budget=60.0)
