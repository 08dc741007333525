"""The pretraining classifier's objective and accuracy (plain tensor functions).

Per-example functions return [B] so `tf.nn.compute_average_loss` over the global batch,
summed over replicas, equals the single-device loss.
"""

import tensorflow as tf


def softmax_cross_entropy(logits, labels):
    """Logits [B, C], multi-hot labels [B, C] -> [B]: softmax cross-entropy against the
    labels normalised to sum 1 (exactly the usual loss for one-hot rows; for multi-hot rows
    the standard softmax target of multi-label pretraining)."""
    targets = labels / tf.maximum(tf.reduce_sum(labels, axis=-1, keepdims=True), 1.0)
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)


def top1_correct(logits, labels):
    """Logits [B, C], multi-hot labels [B, C] -> [B] float32: 1 where the highest logit is
    one of the item's labels."""
    best = tf.argmax(logits, axis=-1)
    return tf.gather(labels, best, axis=1, batch_dims=1)
