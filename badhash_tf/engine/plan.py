"""Check once, then run: a run's configuration turned into a plan before any work.

`DataView` loads and checks every split a run reads once (and decodes a split to arrays
once, when an attack needs them); `make_plan` checks the attacks' names and own settings,
the sizes that depend on the data (batches, the target label, the poisoned copies, the
queries), computes every stage's fingerprint (its flags and the data's identity) and
decides every stage against its record on disk (engine/cells.py): a stage made with other
flags or data stops the run here, naming it. Every program runs from the plan.
"""

import dataclasses
import os

import numpy as np
from absl import logging

from badhash_tf import choices, fingerprints, registry
from badhash_tf.attack import poison
from badhash_tf.config import replace_in
from badhash_tf.data import identity, inputs
from badhash_tf.engine import cells
from badhash_tf.engine.layout import BADHASH, VARIANT_JSON, RunLayout

SPLIT_FLAGS = ("--train_split", "--query_split", "--database_split")


class DataView:
    """The splits of one DataConfig and RetrievalConfig, loaded and checked once: the
    Split objects, their labels and (on first use) their decoded arrays, the data's
    identity per split, and any other dataset's split an attack reads (`other`)."""

    def __init__(self, data, retrieval):
        self.config, self.retrieval = data, retrieval
        self.specs = dict(zip(SPLIT_FLAGS, (retrieval.train_split, retrieval.query_split,
                                            retrieval.database_split)))
        self.splits = inputs.check_splits(data, self.specs)
        self._arrays, self._labels, self._identity, self._other = {}, {}, {}, {}
        self._grey = None

    @property
    def train(self):
        return self.splits["--train_split"]

    @property
    def query(self):
        return self.splits["--query_split"]

    @property
    def database(self):
        return self.splits["--database_split"]

    def arrays(self, flag):
        """A split's images [N, S, S, 3] float32 and labels [N, C], decoded once (never the
        database: at the paper's scale it does not fit in memory)."""
        if flag == "--database_split":
            raise ValueError("the database split is streamed, never held as arrays")
        if flag not in self._arrays:
            self._arrays[flag] = inputs.split_arrays(self.splits[flag])
            self._labels[flag] = self._arrays[flag][1]
        return self._arrays[flag]

    def labels(self, flag):
        """A split's labels [N, C]: read with the split (list files), from its arrays if
        decoded, else by one pass over it."""
        if flag not in self._labels:
            split = self.splits[flag]
            self._labels[flag] = split.labels if split.labels is not None else np.concatenate(
                [y.numpy() for y in split.dataset.map(lambda x, y: y).batch(1024)])
        return self._labels[flag]

    def identity(self, flag):
        """{part: digest} of what the split reads (data/identity.py), computed once."""
        if flag not in self._identity:
            self._identity[flag] = identity.split_identity(self.config, self.specs[flag])
        return self._identity[flag]

    def grey(self):
        """Whether the training split's images are grey (inputs.is_grey), read once."""
        if self._grey is None:
            self._grey = inputs.is_grey(self.train)
        return self._grey

    def other(self, data, spec, flag):
        """Another dataset's split an attack reads (e.g. DarkHash's surrogate data), loaded
        and checked once -> (Split, its identity). Raises naming `flag`."""
        key = (data, spec)
        if key not in self._other:
            split = inputs.check_splits(data, {flag: spec})[flag]
            self._other[key] = (split, identity.split_identity(data, spec))
        return self._other[key]


@dataclasses.dataclass(frozen=True)
class AttackCell:
    """One attack of a run: its attack's name, the ExperimentConfig its stages run with
    (the attack's own changes made), the PSNR budget of a frontier cell (None: the run's
    own), and its Stage (directory, fingerprint, result variant.json)."""
    name: str
    config: object
    budget: object
    stage: cells.Stage

    @property
    def directory(self):
        return self.stage.directory


@dataclasses.dataclass
class Plan:
    """What one seed's run does, checked: its config and layout, the data, the target label
    with its training images and poisoned copies, the shared stages and the attack cells,
    and each stage's decision on disk."""
    config: object
    layout: RunLayout
    data: DataView
    target: int
    available: int
    count: int
    shared: dict  # {"surrogate" | "reference_victim" | "labcln": cells.Stage}
    attacks: list  # [AttackCell]
    decisions: dict  # {directory: cells.Decision}

    @property
    def stages(self):
        return list(self.shared.values()) + [cell.stage for cell in self.attacks]

    @property
    def uses_labcln(self):
        return any(registry.attack(c.name).uses_labcln for c in self.attacks)


def check_attacks(flag, names, role=None):
    """Raises ValueError naming `flag` for an unknown or repeated attack name."""
    choices.check_choices(flag, names, registry.attacks(), allow_empty=True, unique=True)
    if role == "budgeted":
        unable = [n for n in names if not registry.attack(n).budgeted]
        if unable:
            raise ValueError(f"{flag}: {', '.join(unable)} cannot be made to meet a PSNR "
                             f"budget; choose from {', '.join(registry.attacks(budgeted=True))}")


def resolve_trigger_colour(config, data):
    """The config with attack.grey_triggers set from --trigger_colour (auto: whether the
    training split's images are grey)."""
    colour = config.attack.trigger_colour
    grey = data.grey() if colour == "auto" else colour == "grey"
    return replace_in(config, "attack", grey_triggers=grey)


def cell_config(config, name, budget=None):
    """The config attack `name` runs with: at `budget` dB (a frontier cell: its generator
    projects onto it), then the attack's own changes (registry.AttackSpec.configure)."""
    if budget is not None:
        config = replace_in(config, "gan", psnr_budget=float(budget))
    spec = registry.attack(name)
    return spec.configure(config) if spec.configure else config


def choose_target(config, num_classes, seed):
    """The target label: the configured one, or one drawn from the seed."""
    if config.target_label >= num_classes:
        raise ValueError(f"--target_label={config.target_label}: the dataset has "
                         f"{num_classes} classes (0..{num_classes - 1})")
    if config.target_label >= 0:
        return config.target_label
    return int(np.random.default_rng(seed).integers(num_classes))


def check_sizes(config, data):
    """The sizes that depend on the splits, checked before the first stage (else they fail
    after hours of earlier stages): the victims' and the GAN's batches against the training
    items, the target label and the poisoned copies against its training images, some
    query not of the target class, every query relevant to some database item -> (target
    label, its training images, poisoned copies). Raises ValueError naming the flag."""
    c, train = config, data.train
    check_batch("--global_batch_size", c.train.global_batch_size, train, c.retrieval)
    if c.gan.batch_size:
        check_batch("--gan_batch_size", c.gan.batch_size, train, c.retrieval)
    target, available = target_images(c, data)
    count = poison.poison_count_for(train.size, available, c.attack.poison_count,
                                    c.attack.poison_rate)
    query = data.labels("--query_split")
    if (query[:, target] > 0).all():
        raise ValueError(f"--query_split={c.retrieval.query_split}: every query carries the "
                         f"target label {target}, so none can be triggered toward it")
    check_relevance(c.retrieval, query, data.labels("--database_split"))
    return target, available, count


def target_images(config, data):
    """-> (the seed's target label, how many training images carry it): what a grid needs
    to size its cells before their plans (which check everything) exist."""
    target = choose_target(config.attack, data.train.num_classes, config.train.seed)
    return target, int((data.labels("--train_split")[:, target] > 0).sum())


def check_batch(flag, batch, train, retrieval):
    """A training batch must fit in the training split. Raises ValueError naming `flag`."""
    if batch > train.size:
        raise ValueError(f"{flag}={batch} exceeds the {train.size} items of "
                         f"--train_split={retrieval.train_split}")


def check_relevance(retrieval, query_labels, database_labels):
    """Queries whose labels no database item carries score 0 in MAP whatever the model
    does: refused (naming how many and their labels) unless --allow_unrelated_queries,
    then counted in a warning. (A query is relevant to an item sharing any label.)"""
    present = database_labels.max(axis=0) > 0
    unrelated = ~(query_labels[:, present] > 0).any(axis=1)
    if not unrelated.any():
        return 0
    labels = sorted({int(i) for row in query_labels[unrelated] for i in np.flatnonzero(row)})
    text = (f"--query_split={retrieval.query_split}: {int(unrelated.sum())} of "
            f"{len(query_labels)} queries carry only labels ({', '.join(map(str, labels))}) "
            f"that no item of --database_split={retrieval.database_split} has, so each "
            "scores 0 in MAP whatever the model does")
    if not retrieval.allow_unrelated_queries:
        raise ValueError(text + ": give a database holding them, or "
                                "--allow_unrelated_queries to count them as zeros")
    logging.warning("%s (--allow_unrelated_queries: counted as zeros)", text)
    return int(unrelated.sum())


VICTIM_KEYS = ("data.", "hashing.", "train.", "retrieval.")


def shared_stages(config, layout, data, labcln=True):
    """The Stages every attack of a seed builds on: the attacker's surrogate, the clean
    reference victim (result metrics.json) and, when an attack is conditioned on it,
    LabCLN. The surrogate and LabCLN read the training split alone."""
    c, flat = config, _flat(config, data)
    default = fingerprints.experiment_defaults(c)
    shared = {
        "surrogate": cells.Stage(layout.surrogate, _only_train(fingerprints.select(
            flat, "data.", "train.", "retrieval.train_split", "attack.surrogate_seed_offset"))
            | fingerprints.flatten(hashing=c.surrogate_hashing), cells.DONE, default=default),
        "reference_victim": cells.Stage(layout.reference_victim, fingerprints.select(
            flat, *VICTIM_KEYS), "metrics.json", default=default)}
    if labcln:
        shared["labcln"] = cells.Stage(layout.labcln, _only_train(fingerprints.select(
            flat, "data.", "train.", "retrieval.train_split", "labcln.")) | {
            "hashing.bits": c.surrogate_hashing.bits},  # its codes are the surrogate's
            cells.DONE, default=default)
    return shared


def _only_train(fingerprint):
    """A fingerprint without the identity of the splits other than the training one."""
    return {k: v for k, v in fingerprint.items()
            if not k.startswith(fingerprints.DATA_IDENTITY) or k.endswith(".train")}


def _flat(config, data):
    """The config's fingerprint fields and the identity of each split it reads."""
    flat = fingerprints.flatten_experiment(config)
    for flag in SPLIT_FLAGS:
        flat[f"{fingerprints.DATA_IDENTITY}.{flag[2:].split('_')[0]}"] = data.identity(flag)
    return flat


def attack_stage(config, name, directory, data):
    """The Stage of one attack cell (result variant.json): the victim's fields, the
    attack's, and the identity of every split (and other data) it reads."""
    spec = registry.attack(name)
    keys = VICTIM_KEYS + ("attack.",) + tuple(spec.fingerprint) + tuple(
        f"{s}." for s in spec.sections)
    fingerprint = fingerprints.select(_flat(config, data), *keys)
    for key, (other, split_spec, flag) in (spec.reads(config) if spec.reads else {}).items():
        fingerprint[f"{fingerprints.DATA_IDENTITY}.{key}"] = data.other(other, split_spec,
                                                                        flag)[1]
    return cells.Stage(directory, fingerprint, VARIANT_JSON,
                       default=fingerprints.experiment_defaults(config))


def make_plan(config, output_dir, attacks, data=None, budgets=None, overwrite=None,
              place=None, flag="--baselines"):
    """One seed's run checked, before any work -> Plan. `attacks`: the attack names run in
    `output_dir`/<name>; with `budgets` (a frontier seed), each (budget, name) in
    `output_dir`/psnr_B/<name> instead. `data`: a DataView of the config's data to reuse
    (several seeds read the same). Raises ValueError / FileNotFoundError naming the flag,
    file and line, or cells.StageMismatchError naming the stages made with other flags or
    data (unless `overwrite`, default --overwrite). `place(name, budget)`: a cell's
    directory relative to `output_dir` instead. `flag`: the flag that named the attacks."""
    c, layout = config, RunLayout(output_dir)
    check_attacks(flag, [n for n in attacks if n != BADHASH])
    if data is None:
        data = DataView(c.data, c.retrieval)
    c = resolve_trigger_colour(c, data)
    target, available, count = check_sizes(c, data)
    cells_ = []
    for budget in budgets or [None]:
        where = layout.budget(budget) if budget is not None else layout
        for name in attacks:
            directory = (os.path.join(output_dir, place(name, budget)) if place
                         else where.variant(name))
            cfg = cell_config(c, name, budget)
            spec = registry.attack(name)
            if spec.check:
                spec.check(cfg)
            cells_.append(AttackCell(name, cfg, budget,
                                     attack_stage(cfg, name, directory, data)))
    plan = Plan(c, layout, data, target, available, count,
                shared_stages(c, layout, data, labcln=any(
                    registry.attack(n).uses_labcln for n in attacks)), cells_, {})
    plan.decisions = cells.check(plan.stages, layout.root,
                                 c.train.overwrite if overwrite is None else overwrite)
    return plan


def pipeline_attacks(config):
    """The attacks of a pipeline run: BadHash, then --baselines."""
    return (BADHASH,) + tuple(n for n in config.attack.baselines if n != BADHASH)


def stage_directories(plan):
    """Every stage directory of a plan, relative to its root (for messages and tests)."""
    return sorted(os.path.relpath(s.directory, plan.layout.root) for s in plan.stages)
