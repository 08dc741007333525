"""A toy attack and a toy defense registered from outside the package, as a user's own
would be (BADHASH_TF_PLUGINS=tests.toy_plugin): every program must run them unchanged.

toy_shift: every poisoned copy brightened (or, --toy_sign=-1, darkened) uniformly to the
cell's PSNR budget, with its own config section (--toy_sign); toy_flip: every query
mirrored left-right before the victim hashes it."""

import dataclasses

import numpy as np

from badhash_tf import registry
from badhash_tf.attack import budgeted, triggers
from badhash_tf.config import setting


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """The toy attack's own section."""
    sign: float = setting(1.0, "direction of the brightness shift (+1 or -1).")


registry.register_section(registry.Section("toy", ToyConfig, "toy_", "Toy shift"))


def _shift(ctx):
    shape = (ctx.image_size, ctx.image_size, 3)
    a, _ = budgeted.radius_of(shape, budgeted.budget_of(ctx))
    return triggers.Trigger(budgeted.additive(np.full(shape, ctx.section("toy").sign * a,
                                                      np.float32)))


def _flip(defender, out):
    del out
    v = defender.variant
    return {"t_map": defender.t_map(v.victim, v.triggered[0][:, :, ::-1]),
            "clean_map": defender.clean_map(v.victim, defender.queries[0][:, :, ::-1])}


registry.register_attack(registry.AttackSpec(
    "toy_shift", "a uniform brightness shift (test plugin)", trigger=_shift,
    sections=("toy",), fingerprint=("gan.psnr_budget",), budgeted=True, order=90))
registry.register_defense(registry.DefenseSpec(
    "toy_flip", "every query mirrored (test plugin)", "transform", _flip, order=90))
