"""A seed's attacks end to end from its plan, and its report: the shared stages, then each
attack cell (engine/variants.py), then report.json assembled from what the cells
recorded, so a report can be made again from disk (after sharded runs, or for the bench's
gathering) without running anything.
"""

import dataclasses
import os
import time

from absl import logging

from badhash_tf import io_utils
from badhash_tf.engine import cells
from badhash_tf.engine.layout import BADHASH, REPORTS, VARIANT_JSON
from badhash_tf.engine.stages import prepare
from badhash_tf.engine.variants import load_variant, run_attack
from badhash_tf.training import distribute


def run_seed(plan, runner, attack_cells=None, measure=None):
    """The shared stages and the attack cells (default every one of the plan) of one seed
    -> (its stages.Setting, {cell directory: variant record}); (None, {}) when no cell is
    to run (nothing is prepared). `measure`: see variants.run_attack."""
    todo = plan.attacks if attack_cells is None else attack_cells
    if not todo:
        return None, {}
    setting = prepare(plan, runner)
    return setting, {cell.directory: run_attack(cell, setting, measure) for cell in todo}


def report(plan, this_run=None, total=None):
    """report.json of a pipeline-like run from its cells' records on disk: BadHash's
    figures at the top, every other attack under "baselines"; `seconds` the time each stage
    took when it ran and their sum (`total`: the same on a rerun), `this_run` what this
    process spent per stage (a rerun restores, it does not retrain) and in all (`total`,
    its wall time)."""
    records = {c.name: load_variant(c.directory) for c in plan.attacks}
    main = records[BADHASH]
    seconds = {name: cells.recorded_seconds(stage.directory)
               for name, stage in plan.shared.items()}
    for record in records.values():
        seconds.update({k: v for k, v in record.get("seconds", {}).items() if k != "total"})
    seconds = {k: v for k, v in seconds.items() if v is not None}
    seconds["total"] = round(sum(seconds.values()), 2)
    this_run = {**(this_run or {}), **({} if total is None else {"total": total})}
    train_size = main["train_size"]
    return {
        **main["figures"], **main["seed_figures"],
        "target_label": plan.target, "poison_count": plan.count,
        "poison_rate": plan.count / (train_size + plan.count), "train_size": train_size,
        "seed": plan.config.train.seed,
        "surrogate": _scheme(plan.config.surrogate_hashing), "victim": _scheme(
            plan.config.hashing),
        "baselines": {name: r.get("figures", {"skipped": r.get("skipped")})
                      for name, r in records.items() if name != BADHASH},
        "seconds": seconds, "this_run": this_run,
        "config": dataclasses.asdict(plan.config)}


def _scheme(hashing):
    """A hashing config's scheme, as reports name it."""
    return {"method": hashing.method, "backbone": hashing.backbone, "bits": hashing.bits}


def finished(plan):
    """Whether every attack cell of the plan has its record on disk."""
    return all(os.path.exists(os.path.join(c.directory, VARIANT_JSON)) for c in plan.attacks)


def run_pipeline(plan, runner):
    """A pipeline run (one seed) from its plan: every stage, then report.json -> the
    report (the chief writes it; rendering is the caller's)."""
    start = time.time()
    run_seed(plan, runner)
    distribute.barrier(runner.strategy)  # every worker reads the records the chief wrote
    result = report(plan, runner.clock.seconds, round(time.time() - start, 2))
    if runner.chief:
        io_utils.write_json(plan.layout.report_json, result)
    return result


def move_reports_aside(layout):
    """--overwrite with stages made again: the run's previous reports and pictures (made
    from the stages being replaced) go to <root>/reports.replaced-<time>/, never deleted
    -> that directory, or None when there were none."""
    present = [name for name in REPORTS if os.path.exists(os.path.join(layout.root, name))]
    if not present:
        return None
    aside = cells.aside_path(os.path.join(layout.root, "reports"))
    os.makedirs(aside)
    for name in present:
        os.replace(os.path.join(layout.root, name), os.path.join(aside, name))
    logging.warning("--overwrite: the previous reports (%s) moved aside to %s",
                    ", ".join(present), aside)
    return aside
