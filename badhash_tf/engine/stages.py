"""The stages every attack of a seed builds on, run from a plan: the attacker's surrogate,
the clean reference victim and the evaluation against it, LabCLN's condition and the
surrogate's class anchor (each made or restored once, when first needed), and the
context an attack's trigger factory receives.
"""

import contextlib
import dataclasses
import os
import time

import numpy as np
from absl import logging

from badhash_tf import registry
from badhash_tf.attack import poison
from badhash_tf.engine import cells
from badhash_tf.eval import codes
from badhash_tf.eval.backdoor import BackdoorEvaluation
from badhash_tf.training import distribute
from badhash_tf.training.gan import Condition
from badhash_tf.training.hashing import train_hashing_model
from badhash_tf.training.labcln import train_labcln
from badhash_tf.training.victim import load_finished, train_and_evaluate


class StageClock:
    """Wall seconds per stage run by this process, for report.json."""

    def __init__(self):
        self.seconds = {}

    def run(self, name, fn, *args, **kwargs):
        tick = time.time()
        logging.info("stage %s ...", name)
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.time() - tick, 2)
        logging.info("stage %s done in %.1f s", name, self.seconds[name])
        return out


@dataclasses.dataclass
class Runner:
    """How this process runs stages: its strategy, whether it writes (the chief), whether
    stages of other flags are moved aside (--overwrite), the program named in records,
    and the clock."""
    strategy: object
    overwrite: bool = False
    program: str = ""
    clock: StageClock = dataclasses.field(default_factory=StageClock)

    @property
    def chief(self):
        return distribute.is_chief(self.strategy)

    @contextlib.contextmanager
    def claim(self, stage):
        """cells.claim for this process; the other workers go on once the chief decided."""
        with cells.claim(stage, self.overwrite, self.chief, self.program) as decision:
            distribute.barrier(self.strategy)
            yield decision

    def timed(self, name, stage, fn):
        """Runs `fn()` as stage `name` (a cells.Stage) under its claim -> fn's value. The
        seconds it took when it ran are kept in its record (cells.finish); a rerun that
        only restores it keeps them."""
        with self.claim(stage) as decision:
            out = self.clock.run(name, fn)
            if self.chief and decision.state != cells.FINISHED:
                cells.finish(stage, self.clock.seconds[name])
        return out


class Setting:
    """What every attack cell of one seed shares: the plan, the surrogate, the reference
    victim (model, metrics, codes) and the BackdoorEvaluation of its non-target queries,
    the target-class training images the poisoned copies come from; LabCLN's condition,
    the class anchor and what attacks share (`memo`) made on first use."""

    def __init__(self, plan, runner, surrogate, reference, reference_metrics,
                 reference_codes):
        self.plan, self.runner = plan, runner
        self.surrogate, self.reference = surrogate, reference
        self.reference_metrics, self.reference_codes = reference_metrics, reference_codes
        query_images, query_labels = plan.data.arrays("--query_split")
        non_target = query_labels[:, plan.target] == 0
        k = min(plan.config.retrieval.map_top_k, len(reference_codes["database"][0]))
        self.evaluation = BackdoorEvaluation(plan.target, k, (query_images[non_target],
                                                              query_labels[non_target]),
                                             reference, reference_codes)
        self.target_images = poison.target_class_images(plan.data.train, plan.target,
                                                        plan.count)
        self._memo = {}

    @property
    def target(self):
        return self.plan.target

    def figures(self):
        """What a seed's report says beside its attacks: the reference victim's figures and
        the evaluation's sizes (every attack's record carries them)."""
        return {"clean_map_reference": self.reference_metrics["map_at_k"],
                "clean_map_reference_full_database": self.reference_metrics["map"],
                "t_map_untriggered_reference": self.evaluation.untriggered_reference,
                "triggered_queries": len(self.evaluation.queries[0]),
                "k": self.evaluation.k, "num_classes": self.plan.data.train.num_classes}

    def memo(self, key, make):
        """make() once per seed under `key` (e.g. CIBA's patch, shared by its variants)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def train_arrays(self):
        return self.plan.data.arrays("--train_split")

    def anchor(self):
        """The surrogate's code of the target class: the sign of its mean output over the
        target-class training images [K]."""
        return self.memo("class_anchor", lambda: codes.class_anchor(
            self.surrogate, *self.train_arrays(), self.target))

    def condition(self):
        """LabCLN (trained or restored in its stage) -> its Condition for the target label:
        the feature [F] and the sign of its code [K] of the target's label row."""
        return self.memo("labcln_condition", self._labcln_condition)

    def _labcln_condition(self):
        plan, c = self.plan, self.plan.config
        rows = plan.data.labels("--train_split")
        model, _ = self.runner.timed("labcln", plan.shared["labcln"], lambda: train_labcln(
            rows, c.surrogate_hashing.bits, c.labcln, c.train, plan.layout.labcln,
            self.runner.strategy))
        target_row = np.eye(plan.data.train.num_classes, dtype=np.float32)[self.target]
        feature, code = model.condition(target_row)
        return Condition(feature, code, target_row)


def prepare(plan, runner):
    """The surrogate (trained or restored) and the reference victim (trained, or loaded
    when finished) of the plan's seed -> Setting."""
    c = plan.config
    logging.info("target label %d: %d poisoned copies of %d target-class training images",
                 plan.target, plan.count, plan.available)
    surrogate_train = dataclasses.replace(
        c.train, seed=c.train.seed + c.attack.surrogate_seed_offset)
    surrogate, _ = runner.timed("surrogate", plan.shared["surrogate"], lambda: (
        train_hashing_model(plan.data.train, c.data, c.surrogate_hashing, surrogate_train,
                            plan.layout.surrogate, runner.strategy)))
    stage = plan.shared["reference_victim"]
    if cells.decide(stage).state == cells.FINISHED:
        reference = load_finished(stage.directory, c.hashing, c.data.image_size)
    else:
        reference = runner.timed("reference_victim", stage, lambda: train_and_evaluate(
            c.data, c.hashing, c.train, c.retrieval, stage.directory, runner.strategy,
            splits=plan.data.splits))
    return Setting(plan, runner, surrogate, *reference)


class AttackContext:
    """What an attack's trigger factory or implant gets: the cell's config (the attack's
    own changes made) and budget (a frontier cell's PSNR, else None), the seed's Setting,
    where its generator or victim goes, and the strategy."""

    def __init__(self, cell, setting):
        self.cell, self.setting = cell, setting
        self.config, self.budget, self.name = cell.config, cell.budget, cell.name
        self.directory = cell.directory
        self.strategy = setting.runner.strategy

    @property
    def surrogate(self):
        return self.setting.surrogate

    @property
    def target(self):
        return self.setting.target

    @property
    def seed(self):
        return self.config.train.seed

    @property
    def data(self):
        return self.setting.plan.data

    @property
    def image_size(self):
        return self.config.data.image_size

    def path(self, *parts):
        return os.path.join(self.directory, *parts)

    def train_arrays(self):
        return self.setting.train_arrays()

    def anchor(self):
        return self.setting.anchor()

    def condition(self):
        return self.setting.condition()

    def memo(self, key, make):
        return self.setting.memo(key, make)

    def write_copies(self, make):
        """The cell's copies in <cell>/poison: `make()` -> images [N, S, S, 3] of the
        seed's target-class images (setting.target_images), written by the chief unless
        already there (never overwritten), then read by every worker -> the directory."""
        directory = self.path("poison")
        if not os.path.exists(directory) and distribute.is_chief(self.strategy):
            _, labels, positions = self.setting.target_images
            poison.write_poison_set(directory, make(), labels, positions,
                                    {"variant": self.name, "target_label": self.target})
        distribute.barrier(self.strategy)  # other workers read what the chief wrote
        return directory

    def section(self, name):
        """The config of one of the attack's own sections (its defaults when unset)."""
        return self.config.sections.get(name) or registry.sections()[name].config_class()
