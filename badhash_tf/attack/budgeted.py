"""What the fixed clean-label triggers under a PSNR budget share (attack/sig.py,
narcissus.py, probes.py): functions images [B, S, S, 3] in [0, 1] -> the same, quantised
to 8 bits, whose perturbation has RMSE at most 10^(-psnr/20) - 0.5/255 per image before
the rounding, so every rounded image meets the budget (the frontier's rule for every
method); the universal perturbation and per-image PGD against the surrogate; and their
registration as budgeted attacks.
"""

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import registry
from badhash_tf.attack import triggers
from badhash_tf.eval import codes
from badhash_tf.eval.codes import code_alignment
from badhash_tf.models.generator import psnr_radius

# sig and narcissus in a pipeline run without --gan_psnr_budget: about their papers' own
# strengths (SIG's sinusoid of amplitude 20/255 has RMSE 14.1/255, 25.1 dB; Narcissus'
# 16/255 L-inf ball holds RMSEs up to 16/255, 24 dB)
DEFAULT_PSNR = 25.0


def _project_l2(delta, radius):
    """Scales each perturbation [B, ...] back into the L2 ball of `radius`."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=[1, 2, 3], keepdims=True))
    return delta * tf.minimum(1.0, radius / (norm + 1e-12))


def additive(delta, grey=False):
    """The trigger adding one fixed perturbation [S, S, 3] to every image, 8-bit (`grey`:
    made the same in R, G and B first)."""
    delta = tf.constant(delta, tf.float32)
    if grey:
        delta = triggers.grey_perturbation(delta)
    return triggers.trigger_function(lambda images: triggers.quantize(images + delta))


def _projector(radius, grey):
    """delta -> delta in the L2 ball of `radius` (and, `grey`, the same in R, G and B:
    projections onto that subspace and the ball commute)."""
    if grey:
        return lambda delta: _project_l2(triggers.grey_perturbation(delta), radius)
    return lambda delta: _project_l2(delta, radius)


def universal_perturbation(surrogate, images, code, radius, logit_scale, steps=300,
                           batch_size=64, learning_rate=0.01, seed=0, grey=False):
    """One perturbation [S, S, 3] in the L2 ball of `radius` (`grey`: the same in R, G and
    B) maximising the surrogate's agreement with `code` over batches of `images`
    [N, S, S, 3] (Adam, projected)."""
    rng = np.random.default_rng(seed)
    delta = tf.Variable(tf.zeros((1,) + images.shape[1:]))
    optimizer = keras.optimizers.Adam(learning_rate)
    code = tf.constant(code, tf.float32)
    project = _projector(radius, grey)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(code_alignment(surrogate, batch + delta, code, logit_scale))
        optimizer.apply_gradients([(tape.gradient(loss, delta), delta)])
        delta.assign(project(delta))

    for _ in range(steps):
        step(tf.constant(images[rng.integers(0, len(images), batch_size)]))
    return delta.numpy()[0]


def pgd_trigger(surrogate, code, radius, logit_scale, steps=100, grey=False):
    """Per-image L2 PGD (normalised gradient steps of radius / 5) pulling the surrogate's
    code of each image toward `code` [K], within an L2 ball of `radius` (`grey`: and the
    same in R, G and B)."""
    code = tf.constant(code, tf.float32)
    project = _projector(radius, grey)

    @triggers.trigger_function
    def trigger(images):
        delta = tf.zeros_like(images)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                loss = -tf.reduce_sum(code_alignment(surrogate, images + delta, code,
                                                     logit_scale))
            grad = tape.gradient(loss, delta)
            grad = grad / (tf.sqrt(tf.reduce_sum(tf.square(grad), [1, 2, 3], keepdims=True))
                           + 1e-12)
            delta = project(delta - 0.2 * radius * grad)
        return triggers.quantize(images + delta)

    return trigger


def budget_of(ctx):
    """The PSNR a fixed trigger meets in an attack cell: the frontier cell's budget, else the
    run's --gan_psnr_budget, else DEFAULT_PSNR."""
    return ctx.budget or ctx.config.gan.psnr_budget or DEFAULT_PSNR


def radius_of(shape, psnr):
    """(per-pixel RMSE, L2 radius) a perturbation of images of `shape` [S, S, C] may have
    and still meet `psnr` dB after 8-bit rounding."""
    a = psnr_radius(psnr)
    return a, a * float(np.sqrt(np.prod(shape)))


_MAKERS = {}


def register(name, summary, make, roles, order, uses_anchor=True):
    """Registers a fixed clean-label trigger under a PSNR budget: `make(psnr, surrogate,
    train images [N, S, S, 3], labels [N, C], target, logit_scale, seed, steps, anchor,
    grey)` -> trigger function (anchor: the surrogate's code of the target class, or None
    when `uses_anchor` is False; grey: its perturbation the same in R, G and B)."""
    _MAKERS[name] = (make, uses_anchor)

    def trigger(ctx):
        images, labels = ctx.train_arrays()
        return triggers.Trigger(make(budget_of(ctx), ctx.surrogate, images, labels,
                                     ctx.target, ctx.config.gan.relaxed_logit_scale, ctx.seed,
                                     300, ctx.anchor() if uses_anchor else None,
                                     ctx.config.attack.grey_triggers))

    registry.register_attack(registry.AttackSpec(
        name, summary, trigger=trigger, fingerprint=("gan.psnr_budget",
                                                     "gan.relaxed_logit_scale"),
        budgeted=True, roles=frozenset(roles), order=order))


def make_probe(name, psnr, surrogate, train_images, train_labels, target, logit_scale=0.1,
               seed=0, steps=300, grey=False):
    """The trigger of the budgeted attack `name` at `psnr` dB, built against the frozen
    `surrogate` from the training images [N, S, S, 3] / labels [N, C] (universal, Narcissus
    and PGD: `steps` their optimisations'; `grey`: the same in R, G and B)."""
    registry.load()
    if name not in _MAKERS:
        raise ValueError(f"--probes: unknown probe {name!r}; choose from "
                         f"{', '.join(registry.attacks(role='probe'))}")
    make, uses_anchor = _MAKERS[name]
    anchor = (codes.class_anchor(surrogate, train_images, train_labels, target)
              if uses_anchor else None)
    return make(psnr, surrogate, train_images, train_labels, target, logit_scale, seed,
                steps, anchor, grey)
