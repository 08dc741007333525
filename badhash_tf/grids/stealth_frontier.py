"""The stealth-strength frontier as a grid of cells: per seed the surrogate, LabCLN and
reference victim are made once (seed_N/), per budget (seed_N/psnr_B/) each method poisons
the target class within the budget and a victim trains on it (engine/variants.py). A cell
is (seed, budget, method); `--shard=i/N` runs every N-th and a run without it gathers what
is finished. The summary gives every figure as its mean over seeds with a 95% interval
(Student's t) and n, and states per method under study (registry role "subject": BadHash
and badhash_anchor) where its backdoor is learned and where it is at least every other
method (its baselines).
"""

import os

import numpy as np

from badhash_tf import io_utils, registry, stats
from badhash_tf.engine import cells as cells_module
from badhash_tf.engine.experiment import run_seed
from badhash_tf.engine.layout import RunLayout, VARIANT_JSON
from badhash_tf.engine.plan import check_attacks, make_plan
from badhash_tf.engine.variants import load_variant
from badhash_tf.eval import backdoor
from badhash_tf.config import MAX_PSNR_BUDGET

TIE = 0.02  # "at least every baseline" within this
COMPARED = ("t_map", "backdoor_gain", "clean_map")  # marked against --compare_with
FIGURES = ("t_map", "t_map_best", "t_map_clean_victim", "backdoor_gain", "t_map_untriggered",
           "clean_map", "map_best", "clean_map_reference", "psnr", "psnr_min", "ssim",
           "ssim_min", "query_psnr", "query_psnr_min", "linf_255")
# per query amplification k beside the run's own (--extra_query_amplification): FIGURE_xK
AMPLIFIED = ("t_map", "t_map_clean_victim", "backdoor_gain")


def subjects():
    """The methods under study (verdicts are stated for them; not baselines of each other)."""
    return registry.attacks(role="subject")


def check_methods(names):
    """Raises ValueError naming --methods for an unknown or repeated method, or one that
    cannot be made to meet a budget."""
    if not names:
        raise ValueError("--methods: give at least one name")
    check_attacks("--methods", names, role="budgeted")


def check_budgets(budgets):
    """Raises ValueError naming --psnr_budgets unless every budget is a usable PSNR."""
    if not budgets:
        raise ValueError("--psnr_budgets: give at least one budget in dB")
    for b in budgets:
        if not 0 < b < MAX_PSNR_BUDGET:
            raise ValueError(f"--psnr_budgets: {b:g} dB is not in (0, {MAX_PSNR_BUDGET:.1f})")
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"--psnr_budgets: {','.join(f'{b:g}' for b in budgets)} repeats a "
                         "budget")


def make_plans(configs, budgets, methods, output_dir, data=None, overwrite=None):
    """configs {seed: ExperimentConfig} -> {seed: Plan} of every (budget, method) cell in
    output_dir/seed_N/psnr_B/<method>, checked before any work (each seed may draw another
    target; `data`, a DataView, is shared by every seed)."""
    check_budgets(budgets)
    check_methods(methods)
    plans = {}
    for seed, config in configs.items():
        plans[seed] = make_plan(config, RunLayout(output_dir).seed(seed).root, methods,
                                data=data, budgets=budgets, overwrite=overwrite,
                                flag="--methods")
        data = plans[seed].data
    return plans


def grid(plans):
    """Every cell of the frontier in its fixed order (seed, budget, method) -> [(seed,
    AttackCell)] (what --shard deals out)."""
    return [(seed, cell) for seed, plan in plans.items() for cell in plan.attacks]


def run(plans, runner, shard=None):
    """This shard's cells (every cell without one), each seed's shared stages made when a
    cell of it runs -> {cell directory: record}."""
    mine = cells_module.shard_of(grid(plans), shard)
    records = {}
    for seed, plan in plans.items():
        records.update(run_seed(plan, runner, [c for s, c in mine if s == seed])[1])
    return records


def cell_view(record, cell, seed):
    """A finished cell's record (variant.json) -> its row of frontier.json's cells."""
    view = {"method": cell.name, "budget": float(cell.budget), "seed": seed,
            "target_label": record["target_label"], "poison_count": record["poison_count"],
            "clean_map_reference": record["clean_map_reference"], **record.get("extra", {})}
    if "skipped" in record:
        view["skipped"] = record["skipped"]
    else:
        view.update({k: v for k, v in record["figures"].items() if k in FIGURES or any(
            k.startswith(f + "_x") for f in AMPLIFIED)})
    view["seconds"] = record.get("seconds", {}).get("total")
    return view


def gather(plans, budgets, methods, record=None, compare=None):
    """frontier.json's content from the finished cells on disk (a missing cell is left
    out: `missing` counts them)."""
    cells, missing = [], 0
    for seed, plan in plans.items():
        for cell in plan.attacks:
            if os.path.exists(os.path.join(cell.directory, VARIANT_JSON)):
                cells.append(cell_view(load_variant(cell.directory), cell, seed))
            else:
                missing += 1
    first = next(iter(plans.values())).config
    result = {"dataset": first.data.dataset, "seeds": list(plans), "budgets": list(budgets),
              "methods": list(methods), "cells": cells, "missing_cells": missing,
              "query_amplification": first.attack.query_amplification,
              "backbone": backbone_label(first),
              "summary": summarise(cells, budgets, methods),
              "interval": f"95% interval, {stats.METHOD}", **(record or {})}
    if compare:
        inside, outside = stats.compare_rows(result["summary"]["rows"], compare["rows"],
                                             ("budget", "method"), COMPARED)
        result["compare"] = {**{k: v for k, v in compare.items() if k != "result"},
                             "inside": inside, "outside": outside}
    return result


def backbone_label(config):
    """Where a frontier's victims and surrogate start: "pretrained: DIR" or None."""
    weights = config.hashing.backbone_weights
    surrogate = config.attack.surrogate_backbone_weights
    if not weights:
        return None
    text = f"pretrained: {os.path.dirname(weights) or weights}"
    return text + (f" (surrogate: {os.path.dirname(surrogate)})" if surrogate else "")


def with_gain(cell):
    """A cell with backdoor_gain (t-MAP minus the clean victim's on the same queries) filled
    in where it predates that figure."""
    if "t_map" in cell and "backdoor_gain" not in cell:
        return {**cell, "backdoor_gain": cell["t_map"] - cell["t_map_clean_victim"]}
    return cell


def at_amplification(cell, suffix):
    """A cell's figures as scored at another query amplification (suffix "_xK"): its
    t_map, t_map_clean_victim, backdoor_gain replaced by their _xK values; {} if it has
    none."""
    if not suffix:
        return cell
    if f"t_map{suffix}" not in cell:
        return {}
    return {**cell, **{key: cell[key + suffix] for key in AMPLIFIED}}


def learned(cell, suffix=""):
    """Whether a cell's backdoor is learned (backdoor.LEARNED), at the run's query
    amplification or, with suffix "_xK", at amplification K."""
    cell = at_amplification(cell, suffix)
    return "t_map" in cell and backdoor.learned(cell, cell["clean_map_reference"])


def amplification_suffixes(cells):
    """The "_xK" suffixes of the extra query amplifications the cells were scored at."""
    return sorted({k[len("t_map"):] for c in cells for k in c
                   if k.startswith("t_map_x")}, key=lambda x: float(x[2:]))


def summarise(cells, budgets, methods):
    """Cells of every seed -> {rows: per (budget, method) each figure's mean over seeds with
    its 95% interval's half-width (FIGURE_ci, None for one seed), n (FIGURE_n) and min/max
    (FIGURE_lo/_hi; the *_min figures, the worst image, are the worst over seeds), and per
    method under study its verdicts (where learned, where at least every baseline by t-MAP
    and by backdoor_gain), also as "NAME_xK" at each extra query amplification}."""
    cells = [with_gain(c) for c in cells]
    suffixes = amplification_suffixes(cells)
    figures = FIGURES + tuple(k + x for x in suffixes for k in AMPLIFIED)
    rows = []
    for budget in budgets:
        for name in methods:
            mine = [c for c in cells if c["budget"] == budget and c["method"] == name
                    and "t_map" in c]
            if not mine:
                rows.append({"budget": budget, "method": name, "seeds": 0})
                continue
            row = {"budget": budget, "method": name, "seeds": len(mine),
                   "learned": f"{sum(map(learned, mine))}/{len(mine)}"}
            for x in suffixes:
                scored = [c for c in mine if f"t_map{x}" in c]
                row["learned" + x] = (f"{sum(learned(c, x) for c in scored)}/{len(scored)}")
            for key in figures:
                values = [c[key] for c in mine if key in c]
                if values:  # *_min figures (the worst image): the worst over seeds
                    spread = stats.interval(values)
                    row[key] = float(np.min(values)) if key.endswith("_min") else \
                        spread["mean"]
                    row[key + "_ci"] = None if key.endswith("_min") else spread["half_width"]
                    row[key + "_n"] = len(values)
                    row[key + "_lo"], row[key + "_hi"] = map(float, (np.min(values),
                                                                     np.max(values)))
            row["t_map_range"] = f"{row['t_map_lo']:.3f}-{row['t_map_hi']:.3f}"
            rows.append(row)
    by = {(r["budget"], r["method"]): r for r in rows}
    verdicts = {name + x: _verdict(name, cells, budgets, methods, by, x)
                for name in subjects() if name in methods for x in ("",) + tuple(suffixes)}
    return {"rows": rows, "amplifications": suffixes, **verdicts}


def _verdict(name, cells, budgets, methods, by, suffix=""):
    """Where BadHash method `name` is learned (every seed) and where its mean t-MAP, and its
    mean backdoor_gain, are at least every baseline's within TIE (the other BadHash variant
    is not a baseline); with suffix "_xK", at query amplification K."""
    verdict = {"learned_at": [], "not_learned_at": [], "beats_baselines_at": [],
               "beaten_at": {}, "gain_beats_baselines_at": [], "gain_beaten_at": {}}
    for budget in budgets:
        own = by.get((budget, name), {})
        if "t_map" + suffix not in own:
            continue
        mine = [c for c in cells if c["budget"] == budget and c["method"] == name]
        (verdict["learned_at"] if mine and all(learned(c, suffix) for c in mine)
         else verdict["not_learned_at"]).append(budget)
        for figure, won, lost in (("t_map", "beats_baselines_at", "beaten_at"),
                                  ("backdoor_gain", "gain_beats_baselines_at",
                                   "gain_beaten_at")):
            key = figure + suffix
            beaten = {n: by[(budget, n)][key] for n in methods
                      if n not in subjects() and key in by.get((budget, n), {})
                      and by[(budget, n)][key] > own[key] + TIE}
            if beaten:
                verdict[lost][f"{budget:g}"] = beaten
            else:
                verdict[won].append(budget)
    return verdict


def ranking(rows, budget, figure):
    """The methods at `budget` by mean `figure`, highest first -> "a 0.91 > b 0.40"."""
    ranked = sorted((r for r in rows if r["budget"] == budget and figure in r),
                    key=lambda r: -r[figure])
    return " > ".join(f"{r['method']} {r[figure]:.3f}" for r in ranked)


def load_comparison(directory):
    """Another frontier's DIR/frontier.json (or that file, e.g. a reference in results/)
    -> {"dir", "backbone", "query_amplification", "rows", "result"} with its summary
    recomputed (so cells from before backdoor_gain have it). Raises ValueError naming
    --compare_with."""
    other, _ = io_utils.read_result(directory, "frontier.json", "cells", "budgets", "methods")
    other["summary"] = summarise(other["cells"], other["budgets"], other["methods"])
    return {"dir": directory, "backbone": other.get("backbone"),
            "query_amplification": other.get("query_amplification", 1.0),
            "rows": other["summary"]["rows"], "result": other}
