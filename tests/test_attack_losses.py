"""The attacker's losses against small cases computed by hand."""

import math

import numpy as np
import tensorflow as tf

from badhash_tf.losses import attack as losses


def test_nt_xent_hand_computed():
    # Two labels, both views equal and orthogonal: positive cosine 1 (logit 2 at T = 0.5),
    # the two negatives cosine 0 (logit 0): loss = log(e^2 + 2) - 2 in both directions.
    z = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    expected = math.log(math.exp(2.0) + 2.0) - 2.0
    np.testing.assert_allclose(losses.nt_xent_loss(z, z, z, z, 0, 0.5), [expected] * 2,
                               rtol=1e-6)


def test_nt_xent_rows_split_across_replicas_match_the_whole():
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((6, 4)), tf.float32)
    b = tf.constant(rng.standard_normal((6, 4)), tf.float32)
    whole = losses.nt_xent_loss(a, b, a, b, 0)
    halves = tf.concat([losses.nt_xent_loss(a[:3], b[:3], a, b, 0),
                        losses.nt_xent_loss(a[3:], b[3:], a, b, 3)], 0)
    np.testing.assert_allclose(whole, halves, rtol=1e-6)


def test_label_smoothing_and_label_mse():
    smooth = losses.label_smoothing(tf.constant([[1.0, 0.0, 0.0, 0.0]]), 0.2)
    np.testing.assert_allclose(smooth, [[0.85, 0.05, 0.05, 0.05]], rtol=1e-6)
    np.testing.assert_allclose(losses.label_mse(smooth, tf.constant([[1.0, 0, 0, 0]])),
                               [(0.15 ** 2 + 3 * 0.05 ** 2) / 4], rtol=1e-5)


def test_quantization_hand_computed():
    # h = [0.5, -1]: (1 - 0.5)^2 + 0 = 0.25, over 1e4.
    np.testing.assert_allclose(losses.quantization_loss(tf.constant([[0.5, -1.0]])),
                               [0.25e-4], rtol=1e-6)


def test_hash_alignment_hand_computed():
    u = tf.constant([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, -0.5, 0.0]])
    code = tf.constant([1.0, -1.0, 1.0, -1.0])
    # row 1: mean(1, 1, 0.5, 0) = 0.625 -> 0.375; row 2 the opposite: 1.625.
    np.testing.assert_allclose(losses.hash_alignment_loss(u, code), [0.375, 1.625], rtol=1e-6)


def test_lsgan_and_discriminator_targets():
    labels = tf.constant([[0.0, 1.0]])
    real = losses.discriminator_targets(labels, fake=False)
    fake = losses.discriminator_targets(labels, fake=True)
    np.testing.assert_array_equal(real, [[0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(fake, [[0.0, 1.0, 1.0]])
    # outputs [0.5, 1, 0] vs real [0, 1, 0]: 0.25 / 3; vs fake [0, 1, 1]: 1.25 / 3.
    out = tf.constant([[0.5, 1.0, 0.0]])
    np.testing.assert_allclose(losses.lsgan_loss(out, real), [0.25 / 3], rtol=1e-6)
    np.testing.assert_allclose(losses.lsgan_loss(out, fake), [1.25 / 3], rtol=1e-6)


def test_reconstruction_is_zero_for_identity_and_grows_with_noise():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((2, 32, 32, 3)), tf.float32)
    np.testing.assert_allclose(losses.reconstruction_loss(images, images), [0.0, 0.0],
                               atol=1e-6)
    noisy = tf.clip_by_value(images + 0.1, 0.0, 1.0)
    assert np.all(losses.reconstruction_loss(noisy, images).numpy() > 0.005)
