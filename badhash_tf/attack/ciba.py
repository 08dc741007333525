"""CIBA (Gao et al., BMVC 2023: clean-label backdoor on deep hashing) and its ablations, as
peer attacks on the pipeline's shared stages.

The trigger is a patch pasted into the bottom-right corner, optimised on the attacker's
surrogate so that any image carrying it hashes to the target class's anchor code (the
sign of the surrogate's mean code of that class). Each poisoned copy of a target-class
image also carries an L-inf "confusing" perturbation (8/255 by default) that pushes its
code away from the anchor and disperses the copies' codes from one another, so the victim
cannot fit the copies by their natural features and must rely on the patch. Queries
carry the patch only. Variants (`VARIANTS`):
`ciba_tri` the patch alone; `ciba_tri_noise` patch + uniform noise of the same L-inf;
`ciba_tri_adv` patch + an adversarial perturbation away from each image's own code (no
anchor); `ciba` patch + the confusing perturbation (the full attack).
"""

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import registry
from badhash_tf.attack import triggers
from badhash_tf.config import CIBAConfig
from badhash_tf.eval import codes

VARIANTS = ("ciba_tri", "ciba_tri_noise", "ciba_tri_adv", "ciba")
PAPER_PATCH = (24, 224)  # the paper's patch side at its image size


def patch_side(image_size, patch_size=0):
    """The patch side in pixels: `patch_size`, or the paper's 24/224 of the image side."""
    side = patch_size or max(1, round(image_size * PAPER_PATCH[0] / PAPER_PATCH[1]))
    if not 0 < side <= image_size:
        raise ValueError(f"--ciba_patch_size={side} must be in 1..{image_size}")
    return side


def paste(images, patch):
    """Images [B, S, S, 3] with `patch` [s, s, 3] in their bottom-right corner."""
    size, side = tf.shape(images)[1], tf.shape(patch)[0]
    padded = tf.pad(patch, [[size - side, 0], [size - side, 0], [0, 0]])
    mask = tf.pad(tf.ones_like(patch[..., :1]), [[size - side, 0], [size - side, 0], [0, 0]])
    return images * (1.0 - mask) + padded * mask


def optimise_patch(surrogate, images, anchor, side, steps, learning_rate, logit_scale, seed=0,
                   batch_size=64, grey=False):
    """The targeted adversarial patch [side, side, 3] in [0, 1] (8-bit levels): `steps` of
    Adam on sigmoid-parametrised pixels (`grey`: one value per pixel for R, G and B),
    maximising the surrogate's relaxed agreement tanh(logit_scale z) with `anchor` [K] over
    batches of `images` [N, S, S, 3] carrying it (CIBA's patch, and DarkHash's trigger)."""
    rng = np.random.default_rng(seed)
    logits = tf.Variable(tf.random.stateless_normal((side, side, 1 if grey else 3),
                                                    (seed, 17)) * 0.1)
    pixels = lambda: tf.broadcast_to(tf.sigmoid(logits), (side, side, 3))
    optimizer = keras.optimizers.Adam(learning_rate)
    anchor = tf.constant(anchor, tf.float32)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            patched = paste(batch, pixels())
            loss = -tf.reduce_mean(codes.code_alignment(surrogate, patched, anchor,
                                                         logit_scale))
        optimizer.apply_gradients([(tape.gradient(loss, logits), logits)])

    for _ in range(steps):
        step(tf.constant(images[rng.integers(0, len(images), min(batch_size, len(images)))]))
    return triggers.quantize(pixels()).numpy()


def confusing_perturbation(surrogate, patch, epsilon, steps, logit_scale, away=None,
                           grey=False):
    """images [B, S, S, 3] -> images + delta (8-bit levels), |delta| <= epsilon (in [0, 1]
    units; `grey`: the same in R, G and B, stepping along the gradient's channel mean), by
    sign-gradient steps of epsilon / 4 on the surrogate's relaxed codes t of the *patched*
    images. With `away` [K] (CIBA's anchor), the confusing objective: lower each
    copy's agreement with the anchor and the copies' mutual agreement (the paper's
    intra-class dispersion; the batch is dispersed together). With `away` None (the
    ablation without the anchor), an untargeted adversarial push: lower each copy's
    agreement with its own clean code."""
    fixed = None if away is None else tf.constant(away, tf.float32)

    def objective(relaxed, own):
        if fixed is None:
            return tf.reduce_sum(tf.reduce_mean(relaxed * own, axis=-1))
        n, bits = tf.cast(tf.shape(relaxed)[0], tf.float32), tf.cast(tf.shape(relaxed)[1],
                                                                    tf.float32)
        gram = tf.matmul(relaxed, relaxed, transpose_b=True) / bits
        mutual = (tf.reduce_sum(gram) - tf.linalg.trace(gram)) / tf.maximum(n - 1.0, 1.0)
        return tf.reduce_sum(tf.reduce_mean(relaxed * fixed, axis=-1)) + mutual

    @triggers.trigger_function
    def perturb(images):
        own = tf.sign(surrogate.hash_logits(images, training=False))
        delta = tf.zeros_like(images)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                x = tf.clip_by_value(images + delta, 0.0, 1.0)
                relaxed = tf.tanh(logit_scale * surrogate.hash_logits(paste(x, patch),
                                                                      training=False))
                loss = objective(relaxed, own)
            grad = tape.gradient(loss, delta)
            if grey:
                grad = triggers.grey_perturbation(grad)
            delta = tf.clip_by_value(delta - 0.25 * epsilon * tf.sign(grad), -epsilon, epsilon)
        return triggers.quantize(images + delta)

    return perturb


def uniform_noise(epsilon, seed=0, grey=False):
    """images -> images + U(-epsilon, epsilon) noise (8-bit levels; `grey`: one draw per
    pixel for R, G and B), seeded per call."""

    @triggers.trigger_function
    def noisy(images):
        shape = tf.shape(images)
        if grey:
            shape = tf.concat([shape[:-1], [1]], 0)
        noise = tf.random.stateless_uniform(shape, (seed, 29), -epsilon, epsilon)
        return triggers.quantize(images + noise)

    return noisy


def target_patch(config, surrogate, train_images, train_labels, target, image_size, seed=0,
                 anchor=None, grey=False):
    """The patch every CIBA variant of a run shares -> (patch [s, s, 3], anchor [K]):
    optimised on the non-target training images [N, S, S, 3] (labels [N, C]) toward the
    target class's anchor (computed here unless given); `grey`: R = G = B."""
    if anchor is None:
        anchor = codes.class_anchor(surrogate, train_images, train_labels, target)
    side = patch_side(image_size, config.patch_size)
    non_target = train_images[train_labels[:, target] == 0]
    return optimise_patch(surrogate, non_target, anchor, side, config.patch_steps,
                          config.patch_learning_rate, config.logit_scale, seed,
                          grey=grey), anchor


def make_triggers(variant, config, surrogate, patch, anchor, seed=0, grey=False):
    """CIBA variant `variant` with the run's `patch` and `anchor` (target_patch) ->
    (poison trigger, query trigger): the poisoned copies get the variant's perturbation
    (`grey`: the same in R, G and B), then the patch; queries the patch alone."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown CIBA variant {variant!r}; choose from {', '.join(VARIANTS)}")
    patch, epsilon = tf.constant(patch), config.epsilon / 255.0
    query = triggers.trigger_function(lambda images: paste(images, patch))
    if variant == "ciba_tri":
        return query, query
    if variant == "ciba_tri_noise":
        perturb = uniform_noise(epsilon, seed, grey)
    else:  # ciba: away from the anchor and dispersed; ciba_tri_adv: away from own codes
        perturb = confusing_perturbation(surrogate, patch, epsilon, config.perturbation_steps,
                                         config.logit_scale,
                                         away=anchor if variant == "ciba" else None, grey=grey)
    return triggers.trigger_function(lambda images: paste(perturb(images), patch)), query


SECTION = registry.register_section(registry.Section("ciba", CIBAConfig, "ciba_", "CIBA"))


def _trigger(variant):
    """The trigger factory of one CIBA variant: the run's shared patch (made once per seed
    for every variant), the variant's perturbation on the copies, the patch alone on the
    queries."""
    def make(ctx):
        config, grey = ctx.section("ciba"), ctx.config.attack.grey_triggers
        patch, anchor = ctx.memo("ciba_patch", lambda: target_patch(
            config, ctx.surrogate, *ctx.train_arrays(), ctx.target, ctx.image_size, ctx.seed,
            anchor=ctx.anchor(), grey=grey))
        return triggers.Trigger(*make_triggers(variant, config, ctx.surrogate, patch, anchor,
                                               ctx.seed, grey))
    return make


def _check(config):
    patch_side(config.data.image_size, (config.sections.get("ciba") or CIBAConfig()).patch_size)


_SUMMARIES = {"ciba_tri": "CIBA's optimised patch alone", "ciba_tri_noise": "CIBA's patch "
              "+ uniform noise of the same L-inf", "ciba_tri_adv": "CIBA's patch + an "
              "adversarial push away from each copy's own code", "ciba": "CIBA (Gao et al., "
              "BMVC 2023): the patch + the confusing perturbation"}
for _order, _variant in enumerate(VARIANTS):
    registry.register_attack(registry.AttackSpec(
        _variant, _SUMMARIES[_variant], trigger=_trigger(_variant), check=_check,
        sections=("ciba",), amplified=False, roles=frozenset({"baseline", "bench"}),
        order=10 + _order))
