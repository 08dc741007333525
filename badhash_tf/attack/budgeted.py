"""Fixed clean-label triggers under a PSNR budget: functions images [B, S, S, 3] in [0, 1]
-> the same, quantised to 8 bits, whose perturbation has RMSE at most
10^(-psnr/20) - 0.5/255 per image before the rounding, so every rounded image meets the
budget (the frontier's rule for every method):

- noise: a fixed random +-a pattern; tint: +a red, -a blue (a colour cast, absent from
  grey-level data); universal: one perturbation optimised on the surrogate to pull
  non-target training images to the target class's code; pgd_target / pgd_away: per-image
  L2 PGD on the surrogate toward the target class's code / toward a random code (the
  "confusing" push BadHash's LabCLN code makes);
- sig (Barni et al., ICIP 2019): a horizontal sinusoid added to every image;
- narcissus (Zeng et al., CCS 2023): one perturbation optimised on the *target-class*
  images to pull them deeper into the target class's code (the "inward-pointing" trigger;
  the hashing port of its cross-entropy toward the target class).
"""

import keras
import numpy as np
import tensorflow as tf

from badhash_tf.attack import triggers
from badhash_tf.eval import codes
from badhash_tf.eval.codes import code_alignment
from badhash_tf.models.generator import psnr_radius

PROBES = ("noise", "tint", "universal", "pgd_target", "pgd_away", "sig", "narcissus")
SIG_FREQUENCY = 6  # periods over the image width (Barni et al.'s f)
# sig and narcissus in a pipeline run without --gan_psnr_budget: about their papers' own
# strengths (SIG's sinusoid of amplitude 20/255 has RMSE 14.1/255, 25.1 dB; Narcissus'
# 16/255 L-inf ball holds RMSEs up to 16/255, 24 dB)
DEFAULT_PSNR = 25.0


def sig_pattern(shape, rmse, frequency=SIG_FREQUENCY):
    """SIG's signal [S, S, C]: a sinusoid sin(2 pi j f / S) along the columns j, the same in
    every row and channel, scaled to RMSE `rmse` exactly for any width (over whole periods
    its amplitude is sqrt(2) * rmse; clipping to [0, 1] only lowers it)."""
    columns = np.arange(shape[1], dtype=np.float64)
    wave = np.sin(2.0 * np.pi * columns * frequency / shape[1])
    rms = np.sqrt(np.mean(np.square(wave)))
    wave *= rmse / rms if rms > 0 else 0.0
    return np.broadcast_to(wave[None, :, None], shape).astype(np.float32)


def _project_l2(delta, radius):
    """Scales each perturbation [B, ...] back into the L2 ball of `radius`."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=[1, 2, 3], keepdims=True))
    return delta * tf.minimum(1.0, radius / (norm + 1e-12))


def _additive(delta):
    delta = tf.constant(delta, tf.float32)
    return triggers.trigger_function(lambda images: triggers.quantize(images + delta))


def universal_perturbation(surrogate, images, code, radius, logit_scale, steps=300,
                           batch_size=64, learning_rate=0.01, seed=0):
    """One perturbation [S, S, 3] in the L2 ball of `radius` maximising the surrogate's
    agreement with `code` over batches of `images` [N, S, S, 3] (Adam, projected)."""
    rng = np.random.default_rng(seed)
    delta = tf.Variable(tf.zeros((1,) + images.shape[1:]))
    optimizer = keras.optimizers.Adam(learning_rate)
    code = tf.constant(code, tf.float32)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(code_alignment(surrogate, batch + delta, code, logit_scale))
        optimizer.apply_gradients([(tape.gradient(loss, delta), delta)])
        delta.assign(_project_l2(delta, radius))

    for _ in range(steps):
        step(tf.constant(images[rng.integers(0, len(images), batch_size)]))
    return delta.numpy()[0]


def pgd_trigger(surrogate, code, radius, logit_scale, steps=100):
    """Per-image L2 PGD (normalised gradient steps of radius / 5) pulling the surrogate's
    code of each image toward `code` [K], within an L2 ball of `radius`."""
    code = tf.constant(code, tf.float32)

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
            delta = _project_l2(delta - 0.2 * radius * grad, radius)
        return triggers.quantize(images + delta)

    return trigger


def make_probe(name, psnr, surrogate, train_images, train_labels, target, logit_scale=0.1,
               seed=0, steps=300):
    """The trigger of probe `name` at `psnr` dB, built against the frozen `surrogate` from
    the training images [N, S, S, 3] / labels [N, C] (universal, Narcissus and PGD probes;
    `steps`: the universal and Narcissus optimisations')."""
    shape = train_images.shape[1:]
    a = psnr_radius(psnr)  # per-pixel RMSE that still meets `psnr` after 8-bit rounding
    radius = a * float(np.sqrt(np.prod(shape)))
    rng = np.random.default_rng(seed)
    if name == "noise":
        return _additive(rng.choice([-a, a], shape))
    if name == "sig":
        return _additive(sig_pattern(shape, a))
    if name == "tint":
        return _additive(np.broadcast_to(np.array([a, 0.0, -a], np.float32), shape))
    code = codes.class_anchor(surrogate, train_images, train_labels, target)
    if name == "universal":
        non_target = train_images[train_labels[:, target] == 0]
        return _additive(universal_perturbation(surrogate, non_target, code, radius,
                                                logit_scale, steps, seed=seed))
    if name == "pgd_target":
        return pgd_trigger(surrogate, code, radius, logit_scale)
    if name == "pgd_away":
        return pgd_trigger(surrogate, rng.choice([-1.0, 1.0], len(code)).astype(np.float32),
                           radius, logit_scale)
    if name == "narcissus":  # inward: the target class's own images, deeper into its code
        inside = train_images[train_labels[:, target] > 0]
        return _additive(universal_perturbation(surrogate, inside, code, radius, logit_scale,
                                                steps, seed=seed))
    raise ValueError(f"--probes: unknown probe {name!r}; choose from {', '.join(PROBES)}")
