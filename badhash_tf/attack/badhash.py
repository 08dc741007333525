"""BadHash (the paper): the conditional generator's trigger, trained against the attacker's
surrogate toward LabCLN's code of the target label, and its variants on the same stages:
`badhash_anchor` (toward the surrogate's own code of the target class), `no_labcln` (a
fixed random feature and code instead of LabCLN's), `no_hash_loss` (no hash term). With
--gan_psnr_budget (or a frontier cell's budget) every generated image meets that PSNR.
"""

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np
from absl import logging

from badhash_tf import fingerprints, registry
from badhash_tf.attack import triggers
from badhash_tf.config import replace_in
from badhash_tf.models import discriminator, generator
from badhash_tf.training import distribute
from badhash_tf.training.gan import Condition, train_generator

# {what a generator depends on: its finished directory}, made by this process: the cells of
# a grid that differ only in the victim (its scheme, the poisoned copies' count) train the
# same generator, so the first one's is copied into the others instead of trained again
_FINISHED = {}
# the fields of a cell's fingerprint a generator does not read: the victims' scheme (the
# surrogate's own is added back) and how many copies are poisoned
_NOT_READ = ("hashing.", "attack.surrogate_", "attack.poison_")


def generator_key(ctx, condition):
    """A digest of everything the cell's generator depends on: the cell's fingerprint but
    for _NOT_READ, the surrogate's scheme, the attack, target and condition."""
    kept = {k: v for k, v in ctx.cell.stage.fingerprint.items() if not k.startswith(_NOT_READ)}
    kept.update(fingerprints.flatten(surrogate=ctx.config.surrogate_hashing))
    kept.update(attack=ctx.name, target=ctx.target, feature=np.asarray(
        condition.feature).tolist(), code=np.asarray(condition.target_code).tolist())
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def generator_trigger(ctx, condition):
    """Trains (or restores) the generator in <cell>/generator for `condition` ->
    Trigger: G(x, feature), 8-bit. One this process finished for another cell with the
    same inputs (generator_key) is copied in and restored instead of trained again."""
    c, directory = ctx.config, ctx.path("generator")
    key = generator_key(ctx, condition)
    made = _FINISHED.get(key)
    if made and made != directory and not os.path.exists(directory):
        if distribute.is_chief(ctx.strategy):
            logging.info("%s: the same generator as %s's (only the victim differs): copied",
                         directory, made)
            shutil.copytree(made, directory + ".part")
            os.replace(directory + ".part", directory)
        distribute.barrier(ctx.strategy)
    model, _ = train_generator(ctx.data.train, c.data, c.gan, condition, lambda: ctx.surrogate,
                               c.train, directory, ctx.strategy, grey=c.attack.grey_triggers)
    _FINISHED[key] = directory
    return triggers.Trigger(triggers.generator_trigger(model, condition.feature))


def _target_condition(ctx):
    """LabCLN's condition, pulled toward the surrogate's class anchor instead with
    --gan_target_code=class_anchor."""
    condition = ctx.condition()
    if ctx.config.gan.target_code == "class_anchor":
        condition = dataclasses.replace(condition, target_code=ctx.anchor())
    return condition


def _badhash(ctx):
    return generator_trigger(ctx, _target_condition(ctx))


def _no_labcln(ctx):
    """A fixed random feature and target code (of LabCLN's widths) for the target label."""
    c = ctx.config
    rng = np.random.default_rng(c.train.seed + 7)
    label_row = np.eye(ctx.data.train.num_classes, dtype=np.float32)[ctx.target]
    return generator_trigger(ctx, Condition(
        rng.standard_normal(c.labcln.feature_dim).astype(np.float32),
        rng.choice([-1.0, 1.0], c.surrogate_hashing.bits), label_row))


def check(config):
    """The generator's and discriminator's sizes. Raises ValueError naming the flag."""
    generator.check_image_size(config.data.image_size)
    discriminator.check_image_size(config.data.image_size, config.gan.disc_layers)


def _spec(name, summary, make, roles, order, configure=None, uses_labcln=True,
          fingerprint=("labcln.", "gan.")):
    registry.register_attack(registry.AttackSpec(
        name, summary, trigger=make, configure=configure, check=check,
        fingerprint=fingerprint, budgeted=True, uses_labcln=uses_labcln,
        roles=frozenset(roles), order=order))


_spec("badhash", "BadHash (the paper): the generator toward LabCLN's code of the target",
      _badhash, ("bench", "frontier", "subject"), 0)
_spec("badhash_anchor", "BadHash toward the surrogate's own code of the target class",
      _badhash, ("baseline", "bench", "frontier", "subject"), 1,
      configure=lambda c: replace_in(c, "gan", target_code="class_anchor"))
_spec("no_labcln", "BadHash's generator on a fixed random feature and code (no LabCLN)",
      _no_labcln, ("baseline",), 2, uses_labcln=False,
      fingerprint=("gan.", "labcln.feature_dim"))
_spec("no_hash_loss", "BadHash's generator without the hash term", _badhash,
      ("baseline", "frontier"), 3, configure=lambda c: replace_in(c, "gan", hash_weight=0.0))
