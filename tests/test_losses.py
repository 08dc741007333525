"""Each hashing loss against a small case computed by hand."""

import math

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from badhash_tf.losses import hashing as losses

# Two examples of different classes with codes u1 = [1, 1], u2 = [1, -1]:
# <u1,u1> = <u2,u2> = 2, <u1,u2> = 0.
U = tf.constant([[1.0, 1.0], [1.0, -1.0]])
Y = tf.constant([[1.0, 0.0], [0.0, 1.0]])


def test_hashnet_hand_computed():
    # alpha = 1: similar pairs (diagonal) theta = 2 -> log(1 + e^2) - 2; dissimilar theta = 0
    # -> log 2. S1 = S0 = 2 of M^2 = 4 pairs, so every weight is 2; per example / M = 2.
    similar, dissimilar = math.log1p(math.exp(2.0)) - 2.0, math.log(2.0)
    expected = (2 * similar + 2 * dissimilar) / 2
    np.testing.assert_allclose(losses.hashnet_loss(U, Y, U, Y, alpha=1.0), [expected] * 2,
                               rtol=1e-6)


def test_hashnet_rows_split_across_replicas_sum_to_the_whole():
    rng = np.random.default_rng(1)
    u = tf.constant(rng.uniform(-1, 1, (6, 8)), tf.float32)
    y = tf.constant(rng.integers(0, 2, (6, 3)), tf.float32)
    whole = losses.hashnet_loss(u, y, u, y)
    halves = tf.concat([losses.hashnet_loss(u[:3], y[:3], u, y),
                        losses.hashnet_loss(u[3:], y[3:], u, y)], 0)
    np.testing.assert_allclose(whole, halves, rtol=1e-6)


def test_dpsh_hand_computed():
    # theta = <u_i,u_j>/2: 1 on the diagonal (similar) -> log(1 + e) - 1; 0 off it -> log 2.
    # Codes are exactly +-1, so the quantization term is 0.
    expected = (math.log1p(math.e) - 1.0 + math.log(2.0)) / 2
    np.testing.assert_allclose(losses.dpsh_loss(U, Y, U, Y), [expected] * 2, rtol=1e-6)
    # u = 0.5 * codes: theta = 0.25 / 0; quantization (0.5)^2 = 0.25 per bit, weighted 0.1.
    half = (math.log1p(math.exp(0.25)) - 0.25 + math.log(2.0)) / 2 + 0.1 * 0.25
    np.testing.assert_allclose(losses.dpsh_loss(0.5 * U, Y, 0.5 * U, Y), [half] * 2, rtol=1e-6)


def test_csq_hand_computed():
    # u = [0.5, -0.5] toward centre [1, -1]: p = [0.75, 0.25], BCE = -log 0.75 per bit;
    # quantization (|u| - 1)^2 = 0.25 per bit, weighted 1e-4.
    u = tf.constant([[0.5, -0.5]])
    expected = -math.log(0.75) + 1e-4 * 0.25
    np.testing.assert_allclose(losses.csq_loss(u, tf.constant([[1.0, -1.0]])), [expected],
                               rtol=1e-6)


def test_hash_centers_hadamard_and_random():
    centers = losses.hash_centers(10, 16)
    assert centers.shape == (10, 16) and set(np.unique(centers)) == {-1.0, 1.0}
    # Hadamard rows are orthogonal: every pair of centres is K/2 apart.
    np.testing.assert_array_equal(centers @ centers.T, 16 * np.eye(10))
    more = losses.hash_centers(20, 16)  # 2K >= classes: rows 16.. are -H
    np.testing.assert_array_equal(more[16], -more[0])
    balanced = losses.hash_centers(100, 48, seed=3)  # 48 is not a power of two
    assert balanced.shape == (100, 48) and (balanced.sum(1) == 0).all()


def _pairwise_hamming(centers):
    distances = (centers.shape[1] - centers @ centers.T) / 2
    return distances[np.triu_indices(len(centers), 1)]


def test_hash_centers_beyond_hadamard_keep_its_rows_and_pass_the_release_check():
    """100 classes at 32 bits (2K = 64 < 100): the release keeps [H; -H] and fills the other
    36 rows at random, accepting them when min distance > K/4 and mean >= K/2."""
    centers = losses.hash_centers(100, 32, seed=0)
    hadamard = scipy.linalg.hadamard(32)
    np.testing.assert_array_equal(centers[:64], np.concatenate([hadamard, -hadamard]))
    assert (centers[64:].sum(1) == 0).all()  # balanced random rows
    distances = _pairwise_hamming(centers)
    assert distances.min() > 32 / 4 and distances.mean() >= 32 / 2
    np.testing.assert_array_equal(losses.hash_centers(100, 32, seed=0), centers)  # seeded
    assert _pairwise_hamming(losses.hash_centers(100, 48, seed=3)).min() > 48 / 4


def test_hash_centers_name_the_flag_when_no_far_centre_exists():
    with pytest.raises(ValueError, match="--bits"):
        losses.hash_centers(40, 4, attempts=50)


def test_center_targets_vote_and_tie():
    centers = tf.constant([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, 1.0]])
    tie = tf.constant([-1.0, -1.0, 1.0])
    labels = tf.constant([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(losses.center_targets(labels, centers, tie), [
        [1, 1, -1],     # one label: its own centre
        [1, -1, -1],    # votes [2, 0, -2]: the tied bit takes the tie centre's -1
        [1, 1, -1]])    # votes [1, 1, -1]
