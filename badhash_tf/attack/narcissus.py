"""Narcissus (Zeng et al., CCS 2023): one perturbation optimised on the *target-class*
training images to pull them deeper into the target class's code through the surrogate
(its "inward-pointing" trigger; the hashing port of its cross-entropy toward the target
class), within the cell's PSNR budget (25 dB without one)."""

from badhash_tf.attack import budgeted


def make(psnr, surrogate, images, labels, target, logit_scale, seed, steps, anchor,
         grey=False):
    """Narcissus' trigger at `psnr` dB: a universal perturbation of the target class's own
    images toward `anchor`, the surrogate's code of that class."""
    _, radius = budgeted.radius_of(images.shape[1:], psnr)
    inside = images[labels[:, target] > 0]
    return budgeted.additive(budgeted.universal_perturbation(
        surrogate, inside, anchor, radius, logit_scale, steps, seed=seed, grey=grey))


budgeted.register("narcissus", "Narcissus (Zeng et al., CCS 2023): an inward-pointing "
                  "universal perturbation", make, ("baseline", "bench", "frontier", "probe"),
                  31)
