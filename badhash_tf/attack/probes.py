"""The trigger probes: fixed clean-label triggers under a PSNR budget that ask whether a
victim can learn *any* trigger that invisible, independently of how well the generator
trains (probe_triggers; the PGD ones are frontier baselines too):

- noise: a fixed random +-a pattern (the same in R, G and B with grey triggers); tint: +a
  red, -a blue (a colour cast, absent from grey-level data: the one probe that stays
  coloured with grey triggers, since colour is what it asks about); universal: one
  perturbation optimised on the surrogate to pull
  non-target training images to the target class's code; pgd_target / pgd_away: per-image
  L2 PGD on the surrogate toward the target class's code / toward a random code (the
  "confusing" push BadHash's LabCLN code makes).
"""

import numpy as np

from badhash_tf.attack import budgeted


def noise(psnr, surrogate, images, labels, target, logit_scale, seed, steps, anchor,
          grey=False):
    a, _ = budgeted.radius_of(images.shape[1:], psnr)
    shape = images.shape[1:-1] + (1,) if grey else images.shape[1:]
    return budgeted.additive(np.broadcast_to(np.random.default_rng(seed).choice(
        [-a, a], shape), images.shape[1:]))


def tint(psnr, surrogate, images, labels, target, logit_scale, seed, steps, anchor,
         grey=False):
    del grey  # (a colour cast by design)
    a, _ = budgeted.radius_of(images.shape[1:], psnr)
    return budgeted.additive(np.broadcast_to(np.array([a, 0.0, -a], np.float32),
                                             images.shape[1:]))


def universal(psnr, surrogate, images, labels, target, logit_scale, seed, steps, anchor,
              grey=False):
    _, radius = budgeted.radius_of(images.shape[1:], psnr)
    non_target = images[labels[:, target] == 0]
    return budgeted.additive(budgeted.universal_perturbation(
        surrogate, non_target, anchor, radius, logit_scale, steps, seed=seed, grey=grey))


def pgd_target(psnr, surrogate, images, labels, target, logit_scale, seed, steps, anchor,
               grey=False):
    _, radius = budgeted.radius_of(images.shape[1:], psnr)
    return budgeted.pgd_trigger(surrogate, anchor, radius, logit_scale, grey=grey)


def pgd_away(psnr, surrogate, images, labels, target, logit_scale, seed, steps, anchor,
             grey=False):
    _, radius = budgeted.radius_of(images.shape[1:], psnr)
    away = np.random.default_rng(seed).choice([-1.0, 1.0], surrogate.bits).astype(np.float32)
    return budgeted.pgd_trigger(surrogate, away, radius, logit_scale, grey=grey)


budgeted.register("noise", "a fixed random +-a pattern (probe)", noise,
                  ("frontier", "probe"), 40, uses_anchor=False)
budgeted.register("tint", "a colour cast: +a red, -a blue (probe)", tint, ("probe",), 41,
                  uses_anchor=False)
budgeted.register("universal", "one perturbation pulling non-target images to the target "
                  "class's code (probe)", universal, ("probe",), 42)
budgeted.register("pgd_target", "per-image PGD on the surrogate toward the target class's "
                  "code (probe)", pgd_target, ("frontier", "probe"), 43)
budgeted.register("pgd_away", "per-image PGD on the surrogate toward a random code "
                  "(probe)", pgd_away, ("frontier", "probe"), 44, uses_anchor=False)
