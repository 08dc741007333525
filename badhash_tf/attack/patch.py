"""The BadNets-style visible patch (the paper's baseline): a fixed random black/white patch
in the bottom-right corner of every poisoned copy and triggered query, of side
--patch_size (image_size // 8 by default); in a frontier cell, the largest side whose
copies all meet the cell's PSNR budget and are all changed by it."""

import numpy as np

from badhash_tf import registry
from badhash_tf.attack import triggers


def largest_patch_within(images, psnr_budget, seed=0):
    """The largest side of the BadNets patch (triggers.patch_pattern in the bottom-right
    corner, as triggers.patch_trigger pastes it) that keeps every image of `images`
    [N, S, S, 3] at PSNR >= `psnr_budget` and changes every one of them -> int, or 0 when
    none does (e.g. a 1-pixel black patch on the digits' black corners changes nothing)."""
    size = images.shape[1]
    for side in range(size, 0, -1):
        error = np.square(triggers.patch_pattern(side, seed) - images[:, -side:, -side:])
        mse = error.sum(axis=(1, 2, 3)) / np.prod(images.shape[1:])
        if np.all(mse <= 10.0 ** (-psnr_budget / 10.0)) and np.all(mse > 0):
            return side
    return 0


def _patch(ctx):
    c, size = ctx.config, ctx.image_size
    if ctx.budget is None:
        side = c.attack.patch_size or max(1, size // 8)
        return triggers.Trigger(triggers.patch_trigger(size, side, seed=c.train.seed))
    side = largest_patch_within(ctx.setting.target_images[0], ctx.budget, c.train.seed)
    if not side:
        raise triggers.NoTrigger(f"no patch trigger meets {ctx.budget:g} dB and changes "
                                 "every copy", {"patch_size": 0})
    return triggers.Trigger(triggers.patch_trigger(size, side, c.train.seed),
                            extra={"patch_size": side})


registry.register_attack(registry.AttackSpec(
    "patch", "BadNets' visible patch (the paper's baseline)", trigger=_patch,
    fingerprint=("gan.psnr_budget",), budgeted=True,
    roles=frozenset({"baseline", "bench", "frontier"}), order=20))
