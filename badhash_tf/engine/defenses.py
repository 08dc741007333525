"""Every registered defense against every finished attack of a run, each (attack, defense)
a cell: its result OUT/<attack>/<defense>/defense.json beside what it trains, its record
fingerprinting the defense's settings and, as input, the attack's result (an attack made
again makes its defense results stale: moved aside and run again).

A finished attack directory holds variant.json (its config, target label and figures),
its triggered non-target queries (triggered_queries.npz), its poisoned set (poison/) and
its victim's checkpoints and codes (victim/). The Defender is what a defense's `run`
receives: the attack's victim and queries, the clean data, a small clean subset.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from badhash_tf import choices, io_utils, registry
from badhash_tf.attack import poison
from badhash_tf.config import (DataConfig, HashingConfig, RetrievalConfig,
                               TrainConfig)
from badhash_tf.engine import cells
from badhash_tf.engine.layout import DEFENSE_JSON, TRIGGERED_QUERIES, VARIANT_JSON
from badhash_tf.engine.plan import DataView
from badhash_tf.eval import retrieval
from badhash_tf.eval.codes import encode_arrays
from badhash_tf.models.hashing import HashingModel
from badhash_tf.training import loop

NOT_APPLICABLE = ("the attack poisoned no training data (the defender's training set is "
                  "clean)")


def check_defenses(names):
    """Raises ValueError naming --defenses when a name is unknown or repeated."""
    choices.check_choices("--defenses", names, registry.defenses())


def find_variants(run_dir, skip=()):
    """Finished attack directories under `run_dir` (pipeline: <attack>/; seeds:
    seed_N/<attack>/; frontier: seed_N/psnr_B/<method>/; bench: <dataset>/seed_N/<attack>),
    sorted (a stage linked from another run, as a grid or the demo links them, included),
    `skip` not entered, nor hidden directories, stages moved aside by --overwrite
    (<dir>.replaced-<time>), or cells recorded as skipped (no trigger met their budget)."""
    found, skip, seen = [], {os.path.abspath(s) for s in skip}, set()
    for root, dirs, files in os.walk(run_dir, followlinks=True):  # linked stages too
        if os.path.realpath(root) in seen:  # (a directory reached twice through links)
            dirs[:] = []
            continue
        seen.add(os.path.realpath(root))
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(root, d)) not in skip
                         and not d.startswith(".") and ".replaced-" not in d)
        if VARIANT_JSON in files:
            if "skipped" not in io_utils.read_json(os.path.join(root, VARIANT_JSON)):
                found.append(root)
            dirs[:] = []
    return sorted(found)


def data_free(record):
    """Whether an attack (its variant.json record) poisoned no training data (DarkHash)."""
    return record.get("poison_count", 1) == 0


def check_run_dir(run_dir, names, output_dir, only=()):
    """The attack directories `defend` will read (those named in `only`, paths relative to
    `run_dir`, or all), each with what `names` need, before any work -> [directory].
    Raises ValueError naming --run_dir (or --variants) and the missing stage."""
    check_defenses(names)
    if not os.path.isdir(run_dir):
        raise ValueError(f"--run_dir={run_dir}: no such directory")
    variants = find_variants(run_dir, skip=[output_dir])
    if not variants:
        raise ValueError(f"--run_dir={run_dir}: no finished attack variant ({VARIANT_JSON}) "
                         "under it; run `badhash_tf.pipeline` or `badhash_tf.frontier` into "
                         "it first")
    if only:
        by_name = {os.path.relpath(d, run_dir): d for d in variants}
        choices.check_choices("--variants", only, tuple(by_name))
        variants = [by_name[name] for name in only]
    inspects = any(registry.defense(n).needs_poisoned_set for n in names)
    for directory in variants:
        needs = {"victim checkpoint": tf.train.latest_checkpoint(os.path.join(directory,
                                                                               "victim")),
                 "victim codes": _exists(os.path.join(directory, "victim", "codes.npz")),
                 "triggered queries": _exists(os.path.join(directory, TRIGGERED_QUERIES))}
        if inspects and not data_free(io_utils.read_json(os.path.join(directory, VARIANT_JSON))):
            needs["poisoned set"] = _exists(os.path.join(directory, "poison", poison.META))
        missing = [what for what, path in needs.items() if not path]
        if missing:
            raise ValueError(f"--run_dir={run_dir}: variant {os.path.relpath(directory, run_dir)}"
                             f" lacks its {', '.join(missing)} (stage not finished?)")
    return variants


def _exists(path):
    return path if os.path.exists(path) else None


def digest(record):
    """sha256 of an attack's figures (variant.json): which run of the attack a defense
    result is of."""
    text = json.dumps(record.get("figures", {}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Variant:
    """A finished attack loaded for defending: its record (variant.json), configs, victim,
    triggered queries (images, labels) and the victim's database codes."""
    name: str
    directory: str
    record: dict
    data: DataConfig
    hashing: HashingConfig
    train: TrainConfig
    retrieval: RetrievalConfig
    victim: HashingModel
    triggered: tuple
    database: tuple

    @property
    def target(self):
        return self.record["target_label"]

    @property
    def k(self):
        return min(self.retrieval.map_top_k, len(self.database[0]))


def load_variant(directory, run_dir):
    """An attack directory -> Variant (its victim restored from its latest checkpoint)."""
    record = io_utils.read_json(os.path.join(directory, VARIANT_JSON))
    c = record["config"]
    data, hashing = DataConfig(**c["data"]), HashingConfig(**c["hashing"])
    train, r = TrainConfig(**c["train"]), RetrievalConfig(**c["retrieval"])
    victim = HashingModel(hashing.bits, hashing.backbone, data.image_size,
                          hashing.backbone_weights)
    loop.restore_latest_intact(tf.train.Checkpoint(model=victim),
                               os.path.join(directory, "victim"))
    with np.load(os.path.join(directory, TRIGGERED_QUERIES)) as q:
        triggered = (q["images"].astype(np.float32) / 255.0, q["labels"])
    with np.load(os.path.join(directory, "victim", "codes.npz")) as codes:
        database = (codes["db_codes"], codes["db_labels"])
    return Variant(os.path.relpath(directory, run_dir), directory, record, data, hashing,
                   train, r, victim, triggered, database)


def data_view(views, data, retrieval):
    """The DataView (engine/plan.py) of a defended attack's data and splits, made once per
    run in `views` {(data, train, query, database spec): DataView}, which may hold the
    attacks' own: every defender and every victim a defense retrains share its splits (and
    so the decoded arrays and the database's cached evaluation batches)."""
    key = _view_key(data, retrieval)
    if key not in views:
        views[key] = DataView(data, retrieval)
    return views[key]


def _view_key(data, retrieval):
    return data, retrieval.train_split, retrieval.query_split, retrieval.database_split


class Defender:
    """What the defender holds for one attack: its victim and triggered queries
    (`variant`), the clean query split, the clean training split, a small clean subset
    (--clean_fraction of it), the splits a retrained victim is evaluated on, the defense
    settings and the strategy."""

    def __init__(self, variant, config, strategy, view):
        """`view`: the DataView of the variant's data and splits (data_view)."""
        v, self.variant, self.config, self.strategy = variant, variant, config, strategy
        self.eval_splits = {f: view.splits[f] for f in ("--query_split", "--database_split")}
        self.queries = view.arrays("--query_split")
        clean = view.arrays("--train_split")
        self.clean_train = clean
        rng = np.random.default_rng(config.seed)
        size = max(2, round(config.clean_fraction * len(clean[0])))
        picks = np.sort(rng.choice(len(clean[0]), size, replace=False))
        self.clean_subset = (clean[0][picks], clean[1][picks])
        non_target = self.queries[1][:, v.target] == 0
        self.clean_non_target = self.queries[0][non_target]

    def t_map(self, model, images, database=None):
        """t-MAP of `model` for query images [N, S, S, 3] against `database` (codes,
        labels; default the attacked victim's)."""
        v = self.variant
        database = database or v.database
        query_codes = encode_arrays(model, images, v.triggered[1])[0]
        return retrieval.targeted_map(query_codes, database[0], database[1], v.target, v.k)

    def clean_map(self, model, query_images, database=None):
        """MAP@k of `model` for the clean queries' images (as given, e.g. transformed)."""
        database = database or self.variant.database
        query_codes = encode_arrays(model, query_images, self.queries[1])[0]
        return retrieval.mean_average_precision(query_codes, database[0], self.queries[1],
                                                database[1], self.variant.k)

    def final_only(self):
        """The attack's retrieval settings without periodic evaluations (retraining)."""
        return dataclasses.replace(self.variant.retrieval, eval_every_epochs=0)


def defense_stage(config, name, directory, record):
    """The Stage of one (attack, defense) cell: the defense's settings, and the attack's
    result as its input."""
    spec = registry.defense(name)
    fingerprint = {f"defense.{f}": getattr(config, f) for f in spec.fields + ("seed",)}
    return cells.Stage(directory, fingerprint, DEFENSE_JSON,
                       inputs={"attack result": digest(record)})


@dataclasses.dataclass
class DefensePlan:
    """What `defend` (or a bench seed) runs, checked: the attack directories, the
    defenses, where results go, and every cell's Stage."""
    run_dir: str
    names: tuple
    config: object
    output_dir: str
    variants: list
    stages: dict  # {(variant directory, defense): cells.Stage}

    @property
    def cells(self):
        return list(self.stages)


def plan_defenses(run_dir, names, config, output_dir, only=(), overwrite=False):
    """The defense cells of a run, checked before any work -> DefensePlan. Raises
    ValueError naming the flag or the missing stage, cells.StageMismatchError for results
    made with other defense settings (unless `overwrite`)."""
    variants = check_run_dir(run_dir, names, output_dir, only)
    stages = {}
    for directory in variants:
        record = io_utils.read_json(os.path.join(directory, VARIANT_JSON))
        for name in names:
            out = os.path.join(output_dir, os.path.relpath(directory, run_dir), name)
            stages[(directory, name)] = defense_stage(config, name, out, record)
    cells.check(stages.values(), output_dir, overwrite)
    return DefensePlan(run_dir, tuple(names), config, output_dir, variants, stages)


def run_defenses(plan, runner, cell_keys=None, data=None):
    """Every (or the given) (attack directory, defense) cell of `plan`, each finished one
    read back -> {(directory, defense): figures}. `data`: the attacks' DataView, when they
    ran in this process (their splits are loaded again otherwise, once per run)."""
    views = {} if data is None else {_view_key(data.config, data.retrieval): data}
    keys = plan.cells if cell_keys is None else cell_keys
    defenders, results = {}, {}
    for i, (directory, name) in enumerate(keys):
        stage = plan.stages[(directory, name)]
        with runner.claim(stage) as decision:
            if decision.state == cells.FINISHED:
                logging.info("%s / %s: finished earlier, skipped (%s)",
                             os.path.relpath(directory, plan.run_dir), name, stage.result_path)
                results[(directory, name)] = io_utils.read_json(stage.result_path)
                continue
            if directory not in defenders:
                variant = load_variant(directory, plan.run_dir)
                logging.info("attack %s (target %d): defenses %s", variant.name,
                             variant.target, ", ".join(plan.names))
                defenders[directory] = Defender(variant, plan.config, runner.strategy, data_view(
                    views, variant.data, variant.retrieval))
            results[(directory, name)] = _defend(defenders[directory], name, stage, runner)
    return results


def _defend(defender, name, stage, runner):
    spec, label = registry.defense(name), f"defenses/{defender.variant.name}/{name}"
    run = spec.run
    if spec.needs_poisoned_set and data_free(defender.variant.record):
        run = lambda *_: {"not_applicable": NOT_APPLICABLE}  # noqa: E731
    figures = runner.clock.run(label, run, defender, stage.directory)  # a stage, profiled
    figures["seconds"] = runner.clock.seconds[label]
    if runner.chief:
        cells.finish(stage, figures["seconds"])
        io_utils.write_json(stage.result_path, figures)
    logging.info("%s / %s: %s in %.0f s", defender.variant.name, name, summary(figures),
                 figures["seconds"])
    return figures


def summary(figures):
    """A defense's figures in a log line: its t-MAP, clean MAP, AUROC, recall and the
    labels it flags (detectors such as Neural Cleanse), whichever it has."""
    shown = [f"{k} {figures[k]:.4f}" for k in ("t_map", "clean_map", "auroc", "recall")
             if k in figures]
    if "flagged" in figures:
        shown.append(f"flags {','.join(map(str, figures['flagged'])) or 'no label'}")
    return ", ".join(shown) or "n/a"


def gather(plan, results=None):
    """defenses.json's content: per attack its undefended figures and every defense's
    (read from the cells' results when not given)."""
    results = results or {}
    variants = {}
    for directory in plan.variants:
        record = io_utils.read_json(os.path.join(directory, VARIANT_JSON))
        name = os.path.relpath(directory, plan.run_dir)
        entry = {"variant": record["variant"], "target_label": record["target_label"],
                 "undefended": {k: record["figures"][k] for k in ("t_map", "clean_map")}}
        for defense in plan.names:
            stage = plan.stages[(directory, defense)]
            figures = results.get((directory, defense))
            if figures is None and os.path.exists(stage.result_path):
                figures = io_utils.read_json(stage.result_path)
            if figures is not None:
                entry[defense] = figures
        variants[name] = entry
    return {"run_dir": os.path.abspath(plan.run_dir), "defenses": list(plan.names),
            "config": dataclasses.asdict(plan.config), "variants": variants}
