"""The attacker's losses (LabCLN's and the cGAN's) against small cases computed by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.losses import gan as gan_losses
from badhash_tf.losses import labcln as labcln_losses


def test_nt_xent_hand_computed():
    # Two labels, both views equal and orthogonal: positive cosine 1 (logit 2 at T = 0.5),
    # the two negatives cosine 0 (logit 0): loss = log(e^2 + 2) - 2 in both directions.
    z = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    expected = math.log(math.exp(2.0) + 2.0) - 2.0
    np.testing.assert_allclose(labcln_losses.nt_xent_loss(z, z, z, z, 0, 0.5), [expected] * 2,
                               rtol=1e-6)


def test_nt_xent_rows_split_across_replicas_match_the_whole():
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((6, 4)), tf.float32)
    b = tf.constant(rng.standard_normal((6, 4)), tf.float32)
    whole = labcln_losses.nt_xent_loss(a, b, a, b, 0)
    halves = tf.concat([labcln_losses.nt_xent_loss(a[:3], b[:3], a, b, 0),
                        labcln_losses.nt_xent_loss(a[3:], b[3:], a, b, 3)], 0)
    np.testing.assert_allclose(whole, halves, rtol=1e-6)


def test_label_smoothing_as_the_release_and_label_mse():
    # The release's smooth_one_hot(classes=4, smoothing=0.2): 0.8 on the label, 0.2 / 3 off.
    smooth = labcln_losses.label_smoothing(tf.constant([[1.0, 0.0, 0.0, 0.0]]), 0.2)
    np.testing.assert_allclose(smooth, [[0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3]], rtol=1e-6)
    np.testing.assert_allclose(labcln_losses.label_mse(smooth, tf.constant([[1.0, 0, 0, 0]])),
                               [(0.2 ** 2 + 3 * (0.2 / 3) ** 2) / 4], rtol=1e-5)
    # multi-hot: every label keeps 1 - eps (the release's argmax would keep only the first)
    multi = labcln_losses.label_smoothing(tf.constant([[0.0, 1.0, 1.0, 0.0, 0.0]]), 0.2)
    np.testing.assert_allclose(multi, [[0.05, 0.8, 0.8, 0.05, 0.05]], rtol=1e-6)


def test_quantization_hand_computed():
    # h = [0.5, -1]: (1 - 0.5)^2 + 0 = 0.25, over 1e4.
    np.testing.assert_allclose(labcln_losses.quantization_loss(tf.constant([[0.5, -1.0]])),
                               [0.25e-4], rtol=1e-6)


def test_hash_alignment_hand_computed():
    u = tf.constant([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, -0.5, 0.0]])
    code = tf.constant([1.0, -1.0, 1.0, -1.0])
    # row 1: mean(1, 1, 0.5, 0) = 0.625 -> 0.375; row 2 the opposite: 1.625.
    np.testing.assert_allclose(gan_losses.hash_alignment_loss(u, code), [0.375, 1.625], rtol=1e-6)


@pytest.mark.parametrize("size", [0.01, 1.0, 300.0])
def test_hash_term_gradient_on_raw_logits_is_constant_per_bit(size):
    """On the surrogate's raw logits the release's term 1 - mean(z * sign(c)) has gradient
    -sign(c_k) / K for every bit, whatever the logit size (no tanh to saturate)."""
    code = tf.constant([1.0, -1.0, 1.0, 1.0])
    z = tf.Variable(size * tf.constant([[2.0, -3.0, -1.0, 0.5]]))
    with tf.GradientTape() as tape:
        loss = gan_losses.hash_alignment_loss(z, code)
    np.testing.assert_allclose(tape.gradient(loss, z), [[-0.25, 0.25, -0.25, -0.25]])
    # unbounded below: it passes 0 once the logits agree beyond 1 on average
    np.testing.assert_allclose(loss, [1.0 - size * (2 + 3 - 1 + 0.5) / 4], rtol=1e-6)


def test_lsgan_and_discriminator_targets():
    labels = tf.constant([[0.0, 1.0]])
    real = gan_losses.discriminator_targets(labels, fake=False)
    fake = gan_losses.discriminator_targets(labels, fake=True)
    np.testing.assert_array_equal(real, [[0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(fake, [[0.0, 1.0, 1.0]])
    # outputs [0.5, 1, 0] vs real [0, 1, 0]: 0.25 / 3; vs fake [0, 1, 1]: 1.25 / 3.
    out = tf.constant([[0.5, 1.0, 0.0]])
    np.testing.assert_allclose(gan_losses.lsgan_loss(out, real), [0.25 / 3], rtol=1e-6)
    np.testing.assert_allclose(gan_losses.lsgan_loss(out, fake), [1.25 / 3], rtol=1e-6)


def test_reconstruction_mse_is_in_unit_pixel_units():
    """Every pixel moved by 0.1: the MSE part of the loss is 0.01, the [0, 1]-pixel MSE (the
    release's), not the ImageNet-normalised 0.01 / std^2 ~ 0.2; the rest is 1 - SSIM."""
    images = tf.fill((1, 32, 32, 3), 0.4)
    moved = images + 0.1
    ssim = tf.image.ssim(moved, images, max_val=1.0)  # flat images: padding changes nothing
    np.testing.assert_allclose(gan_losses.reconstruction_loss(moved, images) - (1.0 - ssim),
                               [0.01], atol=5e-5)  # float32 round-off in SSIM


def test_reconstruction_is_zero_for_identity_and_grows_with_noise():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((2, 32, 32, 3)), tf.float32)
    np.testing.assert_allclose(gan_losses.reconstruction_loss(images, images), [0.0, 0.0],
                               atol=1e-6)
    noisy = tf.clip_by_value(images + 0.1, 0.0, 1.0)
    assert np.all(gan_losses.reconstruction_loss(noisy, images).numpy() > 0.005)
