"""Deep-hashing training losses (the victims' and the surrogate's).

Every function returns a per-example loss [B] whose mean over the global batch is the
method's loss, so `tf.nn.compute_average_loss(per_example, global_batch_size)` summed over
replicas equals the single-replica loss. Pairwise losses pair this replica's rows `u` with
every code of the global batch `u_all` (all-gathered, gradient stopped), the release's
memory-bank formulation restricted to the global batch.
"""

import numpy as np
import scipy.linalg
import tensorflow as tf


def _pair_log_likelihood(theta, similar):
    """log(1 + exp(theta)) - s * theta, computed stably. [B, M] -> [B, M]."""
    return tf.nn.softplus(-tf.abs(theta)) + tf.maximum(theta, 0.0) - similar * theta


def _similarity(labels, labels_all):
    """Multi-hot [B, C], [M, C] -> [B, M] float 1 where the two share a label."""
    return tf.cast(tf.matmul(labels, labels_all, transpose_b=True) > 0, tf.float32)


def hashnet_loss(u, labels, u_all, labels_all, alpha=0.1):
    """HashNet (Cao et al. 2017), weighted pairwise likelihood. -> [B].

    L = sum_ij w_ij [log(1 + exp(a <u_i, u_j>)) - s_ij a <u_i, u_j>] / M^2 over the M x M
    pairs of the global batch, w_ij = M^2 / S1 for similar pairs and M^2 / S0 for dissimilar
    ones (S1, S0 their counts), so both kinds weigh the same. Per example i: sum_j w_ij l_ij / M.
    """
    m = tf.cast(tf.shape(u_all)[0], tf.float32)
    s_all = _similarity(labels_all, labels_all)
    s1 = tf.maximum(tf.reduce_sum(s_all), 1.0)
    s0 = tf.maximum(m * m - tf.reduce_sum(s_all), 1.0)
    similar = _similarity(labels, labels_all)
    weights = similar * (m * m / s1) + (1.0 - similar) * (m * m / s0)
    theta = alpha * tf.matmul(u, u_all, transpose_b=True)
    return tf.reduce_sum(weights * _pair_log_likelihood(theta, similar), axis=1) / m


def dpsh_loss(u, labels, u_all, labels_all, quantization_weight=0.1):
    """DPSH (Li et al. 2016): mean_j [log(1 + exp(t_ij)) - s_ij t_ij], t_ij = <u_i, u_j> / 2,
    plus `quantization_weight * mean_k (u_ik - sign(u_ik))^2`. -> [B]."""
    theta = 0.5 * tf.matmul(u, u_all, transpose_b=True)
    likelihood = tf.reduce_mean(_pair_log_likelihood(theta, _similarity(labels, labels_all)), 1)
    return likelihood + quantization_weight * tf.reduce_mean(tf.square(u - tf.sign(u)), axis=1)


def hash_centers(num_classes, bits, seed=0, attempts=1000):
    """CSQ hash centres [num_classes, bits] of +-1, as the release builds them: the rows of
    [H; -H] (Hadamard H) when `bits` is a power of two, and random balanced rows (bits/2 of
    each sign) for the classes beyond them (all rows when `bits` is not a power of two).
    The release redraws the random rows up to 20 times until the minimum pairwise Hamming
    distance exceeds bits/4 and the mean reaches bits/2; here each random row is redrawn
    (seeded, up to `attempts` times) until it is more than bits/4 from every row before it,
    which guarantees the release's minimum where it draws blindly."""
    rows = []
    if bits & (bits - 1) == 0:
        hadamard = scipy.linalg.hadamard(bits).astype(np.float32)
        rows = list(np.concatenate([hadamard, -hadamard])[:num_classes])
    rng = np.random.default_rng(seed)
    while len(rows) < num_classes:
        for _ in range(attempts):
            row = np.ones(bits, np.float32)
            row[rng.choice(bits, bits // 2, replace=False)] = -1.0
            if not rows or np.min(np.sum(np.array(rows) != row, axis=1)) > bits / 4:
                break
        else:
            raise ValueError(f"no CSQ centre for class {len(rows)} of {num_classes} lies more "
                             f"than {bits / 4:g} bits from the others after {attempts} draws: "
                             f"use more --bits")
        rows.append(row)
    return np.stack(rows).astype(np.float32)


def center_targets(labels, centers, tie_center):
    """Multi-hot [B, C] -> [B, K] +-1 centre by vote: sign(labels @ centers), with a bit whose
    vote ties taking the fixed random `tie_center` [K] bit (CSQ's multi-label rule)."""
    votes = tf.matmul(labels, centers)
    votes = tf.where(votes == 0, tie_center[None, :], votes)
    return tf.sign(votes)


def csq_loss(u, targets, quantization_weight=1e-4):
    """CSQ (Yuan et al. 2020): mean_k BCE((u_k + 1)/2, (c_k + 1)/2) + w * mean_k (|u_k| - 1)^2,
    with c the +-1 centre targets [B, K]. -> [B]."""
    p = tf.clip_by_value((u + 1.0) / 2.0, 1e-7, 1.0 - 1e-7)
    t = (targets + 1.0) / 2.0
    bce = -tf.reduce_mean(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p), axis=1)
    return bce + quantization_weight * tf.reduce_mean(tf.square(tf.abs(u) - 1.0), axis=1)
