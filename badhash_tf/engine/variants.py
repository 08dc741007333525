"""One attack cell end to end, for every attack: its trigger (or, data-free, its implanted
victim) from the registry, the poisoned copies and the backdoored victim trained on them,
and one scorer for all: the backdoor figures against the clean reference victim, the
stealth of the copies (or of the queries, data-free) and the query-side figures. A
finished cell leaves variant.json (its record for later stages, `defend` and the grids),
its triggered queries, and what samples.png and hash_space.png show.
"""

import dataclasses
import json
import os
import time

import numpy as np
from absl import logging

from badhash_tf import io_utils, registry
from badhash_tf.attack import poison, triggers
from badhash_tf.attack.triggers import NoTrigger
from badhash_tf.engine import cells
from badhash_tf.engine.layout import HASH_SPACE, SAMPLES, TRIGGERED_QUERIES, VARIANT_JSON
from badhash_tf.engine.stages import AttackContext
from badhash_tf.eval import stealth
from badhash_tf.data.inputs import split_arrays
from badhash_tf.training.victim import train_and_evaluate


def amplification_suffix(k):
    """The figure-name suffix of queries amplified k times: 1 -> "_x1", 1.5 -> "_x1.5"."""
    return f"_x{k:g}"


def load_variant(directory):
    """A finished cell's record (variant.json)."""
    with open(os.path.join(directory, VARIANT_JSON), encoding="utf-8") as f:
        return json.load(f)


def run_attack(cell, setting, measure=None):
    """The attack cell `cell` (plan.AttackCell) on the seed's `setting`: its variant.json
    record when finished, else trigger, poisoned copies, victim, figures (written by the
    chief) -> the record. `measure(ctx, trigger)` -> more figures of a poisoning attack's
    trigger (e.g. the probes' surrogate alignment)."""
    runner = setting.runner
    with runner.claim(cell.stage) as decision:
        if decision.state == cells.FINISHED:
            logging.info("%s: finished earlier, reused (%s)", cell.directory, VARIANT_JSON)
            return load_variant(cell.directory)
        spec, ctx = registry.attack(cell.name), AttackContext(cell, setting)
        name = os.path.basename(cell.directory)
        tick, clock = time.time(), runner.clock
        record = {"variant": name, "attack": cell.name, "budget": cell.budget,
                  "seed": ctx.seed, "target_label": setting.target,
                  "clean_map_reference": setting.reference_metrics["map_at_k"],
                  "train_size": setting.plan.data.train.size,
                  "seed_figures": setting.figures(),
                  "config": dataclasses.asdict(cell.config)}
        try:
            if spec.control:
                figures, artifacts = clock.run(name, spec.control, ctx)
                record.update(poison_count=setting.plan.count, extra={})
            elif spec.implant:
                implant = clock.run(name, spec.implant, ctx)
                figures, artifacts = score_implant(ctx, implant)
                record.update(poison_count=0, extra={})
            else:
                trigger = clock.run(f"{name}/trigger", spec.trigger, ctx)
                figures, artifacts = clock.run(f"{name}/poison_and_victim", poison_and_score,
                                               ctx, spec, trigger)
                figures.update(measure(ctx, trigger) if measure else {})
                record.update(poison_count=setting.plan.count, extra=trigger.extra)
            record["figures"] = figures
        except NoTrigger as e:
            logging.warning("%s: skipped (%s)", cell.directory, e)
            record.update(poison_count=setting.plan.count, skipped=str(e), extra=e.extra)
            artifacts = None
        record["seconds"] = {k: v for k, v in clock.seconds.items()
                             if k == name or k.startswith(name + "/")}
        record["seconds"]["total"] = round(time.time() - tick, 2)
        if runner.chief:
            write_variant(cell.directory, record, artifacts)
        return record


def poison_and_score(ctx, spec, trigger):
    """Poisons the target-class images with `trigger.poison` into <cell>/poison, trains the
    victim on the clean split plus the copies in <cell>/victim, scores it ->
    (figures, artifacts)."""
    setting, c = ctx.setting, ctx.config
    originals = setting.target_images[0]
    poisoned_split = poison.load_poison_set(ctx.write_copies(
        lambda: triggers.apply(trigger.poison, originals)))
    poisoned, _ = split_arrays(poisoned_split)
    evaluation, data = setting.evaluation, setting.plan.data
    amplification = c.attack.query_amplification if spec.amplified else 1.0
    query = (triggers.amplified(trigger.poison, amplification) if spec.amplified
             else trigger.query or trigger.poison)
    triggered = triggers.apply(query, evaluation.queries[0])
    victim, metrics, codes = train_and_evaluate(
        c.data, c.hashing, c.train, c.retrieval, ctx.path("victim"), ctx.strategy,
        train_split=poison.with_poison(data.train, poisoned_split), splits=data.splits,
        backdoor=lambda model, database: {"t_map": evaluation.t_map_of(model, triggered,
                                                                       database)})
    figures, space = evaluation.figures(triggered, victim, codes, metrics)
    for k in c.attack.extra_query_amplifications if spec.amplified else ():
        figures.update(evaluation.gain(
            victim, triggers.apply(triggers.amplified(trigger.poison, k),
                                   evaluation.queries[0]),
            codes["database"], amplification_suffix(k)))
    copies = stealth.stealth_metrics(originals, poisoned)
    figures = {**figures, **copies, **_query_figures(evaluation.queries[0], triggered),
               "query_amplification": amplification}
    samples = (originals[:c.attack.samples], poisoned[:c.attack.samples])
    return figures, {"samples": samples, "space": space, "triggered": triggered,
                     "query_labels": evaluation.queries[1]}


def score_implant(ctx, implant):
    """A data-free attack's victim scored like a poisoned one; its stealth figures are its
    triggered queries' (it poisons no data) -> (figures, artifacts)."""
    evaluation, c = ctx.setting.evaluation, ctx.config
    triggered = triggers.apply(implant.query, evaluation.queries[0])
    figures, space = evaluation.figures(triggered, implant.model, implant.codes,
                                        implant.metrics)
    queries = stealth.stealth_metrics(evaluation.queries[0], triggered)
    figures = {**figures, **queries, **_query_figures(evaluation.queries[0], triggered),
               "query_amplification": 1.0, "data_free": True, **implant.extra}
    samples = (evaluation.queries[0][:c.attack.samples], triggered[:c.attack.samples])
    return figures, {"samples": samples, "space": space, "triggered": triggered,
                     "query_labels": evaluation.queries[1]}


def _query_figures(queries, triggered):
    measured = stealth.stealth_metrics(queries, triggered)
    return {f"query_{k}": measured[k] for k in ("psnr", "psnr_min", "ssim", "ssim_min")}


def write_variant(directory, record, artifacts):
    """A finished cell's files: its triggered non-target queries as 8-bit images with their
    labels, the samples and hash-space codes of its pictures, then variant.json (its
    result: written last)."""
    if artifacts:
        io_utils.save_npz(os.path.join(directory, TRIGGERED_QUERIES),
                          images=np.round(artifacts["triggered"] * 255.0).astype(np.uint8),
                          labels=artifacts["query_labels"])
        io_utils.save_npz(os.path.join(directory, SAMPLES), originals=artifacts["samples"][0],
                          poisoned=artifacts["samples"][1])
        io_utils.save_npz(os.path.join(directory, HASH_SPACE), **artifacts["space"])
    io_utils.write_json(os.path.join(directory, VARIANT_JSON), record)
