"""Neural Cleanse (Wang et al., S&P 2019) adapted to hashing. A classifier's candidate
targets are its classes; a hashing model has codes, so the candidates are the class
anchors of its database (the sign of the mean database code of each label, which the
defender holds once the database is indexed). Per candidate, the smallest trigger
(mask m [S, S, 1] and pattern p [S, S, 3], x' = (1 - m) x + m p) that sends clean images of
other labels to that anchor is reverse-engineered; a backdoor target needs a far smaller
mask than the others, so the anomaly index of each candidate's mask L1 norm, by the
median absolute deviation (MAD) over the candidates, flags the targets below
-`threshold` (2 in the paper).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import registry

MAD_CONSISTENCY = 1.4826  # MAD of a normal distribution -> its standard deviation


@dataclasses.dataclass(frozen=True)
class CleanseConfig:
    """steps of Adam (all candidates at once); l1_weight: the cost of the mask's mean
    against the mean code agreement (measured: 0.5 separates a planted 3x3 patch from
    the other labels of a digits victim, 0.05 leaves every mask large); batch_size: clean
    images per candidate and step; success: the bit agreement recorded as `reached`."""
    steps: int = 300
    learning_rate: float = 0.1
    l1_weight: float = 0.5
    batch_size: int = 8
    success: float = 0.9
    threshold: float = 2.0
    seed: int = 0


def database_anchors(codes, labels):
    """Database codes [N, K] of +-1 and labels [N, C] -> anchors [C, K] of +-1 (the sign of
    each label's mean code) and the labels that have items [C] bool."""
    present = labels.sum(0) > 0
    means = labels.T @ codes.astype(np.float32) / np.maximum(labels.sum(0), 1)[:, None]
    return np.where(means >= 0, 1.0, -1.0).astype(np.float32), present


def reverse_triggers(model, images, labels, anchors, config):
    """The smallest mask+pattern per candidate c sending the `images` [N, S, S, 3] not of
    label c (labels [N, C]) to `anchors[c]` [K], all candidates optimised together in one
    tf.function (each step hashes a batch stamped with every candidate's trigger) ->
    {mask_l1 [C] (pixels, at the end), reached [C] bool (some batch's bit agreement was at
    least `config.success`), masks [C, S, S]}."""
    count, size = len(anchors), images.shape[1:3]
    mask_logit = tf.Variable(tf.fill((count,) + tuple(size) + (1,), -3.0))
    pattern_logit = tf.Variable(tf.random.stateless_normal((count,) + tuple(size) + (3,),
                                                           (config.seed, 5)))
    reached = tf.Variable(tf.zeros((count,), tf.bool))
    optimizer = keras.optimizers.Adam(config.learning_rate)
    variables = [mask_logit, pattern_logit]
    data, labels = tf.constant(images), tf.constant(labels, tf.float32)
    anchors = tf.constant(anchors, tf.float32)
    batch = min(config.batch_size, len(images))

    @tf.function
    def run():
        for step in tf.range(config.steps):
            picks = tf.random.stateless_uniform((batch,), (config.seed, step), 0,
                                                len(images), tf.int32)
            x, others = tf.gather(data, picks), 1.0 - tf.transpose(tf.gather(labels, picks))
            with tf.GradientTape() as tape:
                mask, pattern = tf.sigmoid(mask_logit), tf.sigmoid(pattern_logit)
                stamped = (1.0 - mask[:, None]) * x[None] + (mask * pattern)[:, None]
                u = tf.reshape(model(tf.reshape(stamped, (-1,) + tuple(x.shape[1:])),
                                     training=False), (count, batch, -1))
                weight = others / tf.maximum(tf.reduce_sum(others, 1, keepdims=True), 1.0)
                agreement = tf.reduce_sum(tf.reduce_mean(u * anchors[:, None], -1) * weight, 1)
                loss = tf.reduce_sum(1.0 - agreement + config.l1_weight *
                                     tf.reduce_mean(mask, axis=[1, 2, 3]))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            bits = tf.reduce_sum(tf.reduce_mean(tf.cast(
                tf.sign(u) == anchors[:, None], tf.float32), -1) * weight, 1)
            reached.assign(reached | (bits >= config.success))
        return tf.reduce_sum(tf.sigmoid(mask_logit), axis=[1, 2, 3])

    return {"mask_l1": run().numpy(), "reached": reached.numpy(),
            "masks": tf.sigmoid(mask_logit).numpy()[..., 0]}


def anomaly_indices(norms):
    """Mask norms [C] -> anomaly indices [C]: (norm - median) / (1.4826 MAD); a backdoor
    target's is strongly negative."""
    norms = np.asarray(norms, np.float64)
    median = np.median(norms)
    mad = MAD_CONSISTENCY * np.median(np.abs(norms - median))
    return (norms - median) / max(mad, 1e-12)


def neural_cleanse(model, images, labels, db_codes, db_labels, config, true_target=None):
    """Neural Cleanse over every label's database anchor: clean `images` [N, S, S, 3] with
    `labels` [N, C] (each candidate is reversed on the images not of it) -> {norms,
    anomaly_index per label, flagged labels (index < -threshold), most_anomalous, and,
    with `true_target`, whether it is flagged}."""
    anchors, present = database_anchors(db_codes, db_labels)
    candidates = [c for c in range(len(anchors)) if present[c]]
    reversed_ = reverse_triggers(model, images, labels[:, candidates], anchors[candidates],
                                 config)
    norms = [float(v) for v in reversed_["mask_l1"]]
    index = anomaly_indices(norms)
    flagged = [c for c, a in zip(candidates, index) if a < -config.threshold]
    result = {"candidates": candidates, "mask_l1": dict(zip(map(str, candidates), norms)),
              "anomaly_index": dict(zip(map(str, candidates), map(float, index))),
              "reached": dict(zip(map(str, candidates), map(bool, reversed_["reached"]))),
              "flagged": flagged, "most_anomalous": int(candidates[int(np.argmin(index))]),
              "threshold": config.threshold}
    if true_target is not None:
        result.update(target_flagged=true_target in flagged,
                      target_anomaly_index=float(index[candidates.index(true_target)])
                      if true_target in candidates else None,
                      flags_other=sorted(set(flagged) - {true_target}))
    return result, dict(zip(candidates, reversed_["masks"]))


def run(defender, out):
    """Neural Cleanse over the database's class anchors on the defender's clean subset:
    which labels it flags, and the true target's anomaly index."""
    del out  # (nothing is trained)
    v, c = defender.variant, defender.config
    config = CleanseConfig(steps=c.cleanse_steps, l1_weight=c.cleanse_l1_weight, seed=c.seed)
    result, _ = neural_cleanse(v.victim, *defender.clean_subset, *v.database, config, v.target)
    return {**result, "steps": c.cleanse_steps, "l1_weight": c.cleanse_l1_weight}


registry.register_defense(registry.DefenseSpec(
    "neural_cleanse", "Neural Cleanse (Wang et al., 2019) over the database's class anchors",
    "detector", run, fields=("clean_fraction", "cleanse_steps", "cleanse_l1_weight"),
    order=31))
