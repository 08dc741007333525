"""LabCLN's objective: NT-Xent between a label-smoothed view and the plain label, the label
head's MSE and the hash head's quantization term.

Per-example functions return [B] so `tf.nn.compute_average_loss` over the global batch,
summed over replicas, equals the single-device loss.
"""

import tensorflow as tf


def label_smoothing(labels, epsilon=0.2):
    """Multi-hot [B, C] -> LabCLN's smoothed view: 1 - eps on a label's classes, eps / (C - 1)
    elsewhere. For a one-hot row this is the release's `smooth_one_hot`; the release takes
    the argmax (dropping all but the first label of a multi-hot row), we keep every label."""
    num_classes = tf.cast(tf.shape(labels)[-1], labels.dtype)
    return labels * (1.0 - epsilon) + (1.0 - labels) * epsilon / (num_classes - 1.0)


def nt_xent_loss(z_a, z_b, z_a_all, z_b_all, offset, temperature=0.5):
    """NT-Xent (SimCLR) for this replica's pairs (z_a[i], z_b[i]) -> [B].

    z_a, z_b: [B, F] local views; z_*_all: [M, F] the global batch's views (all-gathered);
    `offset`: index of this replica's first row in the global batch. Each anchor's positive
    is its other view; its negatives are the other 2M - 2 features, by cosine similarity over
    `temperature`. The loss of pair i averages its two directions (a->b, b->a)."""
    a, b = tf.math.l2_normalize(z_a, -1), tf.math.l2_normalize(z_b, -1)
    everything = tf.math.l2_normalize(tf.concat([z_a_all, z_b_all], 0), -1)  # [2M, F]
    m = tf.shape(z_a_all)[0]
    rows = offset + tf.range(tf.shape(z_a)[0])
    self_mask = tf.one_hot(rows, 2 * m) + tf.one_hot(rows + m, 2 * m)

    def direction(anchor, positive):
        logits = tf.matmul(anchor, everything, transpose_b=True) / temperature  # [B, 2M]
        logits = logits - 1e9 * self_mask  # drop both views of the anchor's own label ...
        positive_logit = tf.reduce_sum(anchor * positive, -1) / temperature
        logits = tf.concat([positive_logit[:, None], logits], 1)  # ... then add the positive
        return tf.reduce_logsumexp(logits, 1) - positive_logit

    return 0.5 * (direction(a, b) + direction(b, a))


def quantization_loss(h, scale=1e4):
    """LabCLN's quantization term, per example: sum_k (sign(h_k) - h_k)^2 / scale -> [B]
    (the release divides the batch sum by 1e4 * batch)."""
    return tf.reduce_sum(tf.square(tf.sign(h) - h), -1) / scale


def label_mse(predicted, labels):
    """Mean squared error of the label head per example -> [B]."""
    return tf.reduce_mean(tf.square(predicted - labels), -1)
