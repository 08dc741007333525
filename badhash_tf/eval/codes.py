"""Encoding images into binary hash codes with a trained hashing model."""

import numpy as np
import tensorflow as tf


def encode(model, dataset):
    """Binary codes of an ordered batched dataset of (images, labels) -> (codes int8 [N, K]
    of +-1, labels [N, C])."""
    # model.predict, which distributes correctly; a one-pass predict_on_batch loop returns
    # each row once per replica under Mirrored/MultiWorker strategies (scale-out tests).
    u = model.predict(dataset.map(lambda images, labels: images), verbose=0)
    labels = np.concatenate([y.numpy() for _, y in dataset])
    return np.where(u >= 0, 1, -1).astype(np.int8), labels


def encode_arrays(model, images, labels, batch_size=256):
    """Images [N, S, S, 3] and labels [N, C] held in memory -> encode(...)."""
    return encode(model, tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size))


def class_anchor(model, images, labels, label):
    """The sign of `model`'s mean output over the images [N, S, S, 3] carrying `label`
    (labels [N, C]) -> [K] of +-1: where that class sits in the model's code space."""
    u = model.predict(images[labels[:, label] > 0], verbose=0)
    return np.where(u.mean(0) >= 0, 1.0, -1.0).astype(np.float32)


def code_alignment(surrogate, images, code, logit_scale):
    """Mean of tanh(s z) * code over bits [B]: the relaxed agreement of the surrogate's code
    of `images` with `code` [K] (the hash term of the generator is 1 minus this)."""
    z = surrogate.hash_logits(tf.clip_by_value(images, 0.0, 1.0), training=False)
    return tf.reduce_mean(tf.tanh(logit_scale * z) * code, axis=-1)
