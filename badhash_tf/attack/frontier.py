"""The stealth-strength frontier: every attack at every PSNR budget, on shared stages.

Per seed the surrogate, LabCLN and reference victim are trained once (`seed_N/`); per
budget (`seed_N/psnr_B/`) each method poisons the target class within the budget and a
victim trains on it: BadHash with the budgeted generator (badhash: LabCLN's target code as
the paper; badhash_anchor: the surrogate's own code of the target class), its no_hash_loss
ablation, the BadNets patch with the largest side that keeps every copy within the budget
and changes it, fixed noise,
per-image PGD on the surrogate toward the target class's code (pgd_target) and away
toward a random code (pgd_away), SIG's sinusoid and Narcissus' inward-pointing universal
perturbation (attack/budgeted.py). Each (seed, budget, method) cell is written to
`cell.json` in its directory and skipped when a rerun finds it.
"""

import dataclasses
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from badhash_tf import choices, io_utils  # noqa: E402
from badhash_tf.attack import budgeted, experiment, triggers  # noqa: E402
from badhash_tf.attack.layout import RunLayout  # noqa: E402
from badhash_tf.eval import backdoor, codes  # noqa: E402
from badhash_tf.models.generator import MAX_PSNR_BUDGET  # noqa: E402
from badhash_tf.training import distribute  # noqa: E402

# badhash: the paper's target code (LabCLN's); badhash_anchor: the surrogate's own code of
# the target class (--gan_target_code=class_anchor).
METHODS = ("badhash", "badhash_anchor", "no_hash_loss", "patch", "noise", "pgd_target",
           "pgd_away", "sig", "narcissus")
BADHASH = ("badhash", "badhash_anchor")
TIE = 0.02  # "at least every baseline" within this
FIGURES = ("t_map", "t_map_best", "t_map_clean_victim", "backdoor_gain", "t_map_untriggered",
           "clean_map", "map_best", "clean_map_reference", "psnr", "psnr_min", "ssim",
           "ssim_min", "query_psnr", "query_psnr_min", "linf_255")
# per query amplification k beside the run's own (--extra_query_amplification): FIGURE_xK
AMPLIFIED = ("t_map", "t_map_clean_victim", "backdoor_gain")
COLUMNS = ("budget", "method", "seeds", "t_map", "t_map_range", "t_map_clean_victim",
           "backdoor_gain", "clean_map", "clean_map_reference", "psnr", "psnr_min", "ssim",
           "ssim_min", "query_psnr_min", "learned")


def check_methods(names):
    """Raises ValueError naming --methods when a name is not a frontier method."""
    choices.check_choices("--methods", names, METHODS)


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


def budget_layout(seed_layout, budget):
    """The run layout of one budget inside a seed's directory: seed_N/psnr_B."""
    return RunLayout(os.path.join(seed_layout.root, f"psnr_{budget:g}"))


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


def method_trigger(name, budget, config, context, generator_dir, strategy):
    """The trigger of `name` at `budget` dB -> (trigger function or None when the method
    cannot meet the budget, extra fields for the cell)."""
    c, setting = config, context["setting"]
    if name in BADHASH + ("no_hash_loss",):
        condition = context["anchor_condition" if name == "badhash_anchor" else "condition"]
        trigger, _ = experiment.make_trigger("badhash" if name in BADHASH else name,
                                             method_config(c, budget, name), condition,
                                             setting, generator_dir, strategy)
        return trigger, {}
    if name == "patch":
        side = largest_patch_within(setting.target_images[0], budget, c.train.seed)
        if not side:
            return None, {"patch_size": 0}
        return triggers.patch_trigger(c.data.image_size, side, c.train.seed), {"patch_size": side}
    images, labels = context["train_arrays"]
    return budgeted.make_probe(name, budget, setting.surrogate, images, labels, setting.target,
                             c.gan.relaxed_logit_scale, c.train.seed), {}


def run_cell(name, budget, config, context, layout, strategy):
    """One (budget, method) cell in the budget's `layout`: its cell.json if finished, else
    trigger, poison, victim, figures (written to cell.json by the chief) -> the cell."""
    cell_json = os.path.join(layout.variant(name), "cell.json")
    if os.path.exists(cell_json):
        logging.info("psnr %g / %s: finished earlier, skipped (%s)", budget, name, cell_json)
        with open(cell_json, encoding="utf-8") as f:
            return json.load(f)
    tick = time.time()
    trigger, extra = method_trigger(name, budget, config, context, layout.generator(name),
                                    strategy)
    setting = context["setting"]
    cell = {"method": name, "budget": float(budget), "seed": config.train.seed,
            "target_label": setting.target, "poison_count": setting.count,
            "clean_map_reference": setting.reference_metrics["map_at_k"], **extra}
    if trigger is None:
        cell["skipped"] = f"no {name} trigger meets {budget:g} dB and changes every copy"
    else:
        figures, _ = experiment.attack_variant(name, config, trigger, setting, layout,
                                               strategy)
        cell.update({k: v for k, v in figures.items() if k in FIGURES or any(
            k.startswith(f + "_x") for f in AMPLIFIED)})
    cell["seconds"] = round(time.time() - tick, 2)
    if distribute.is_chief(strategy):
        io_utils.write_json(cell_json, cell)
    logging.info("psnr %g / %s: t-MAP %s, PSNR %s (min %s) in %.0f s", budget, name,
                 _fmt(cell.get("t_map")), _fmt(cell.get("psnr"), 2),
                 _fmt(cell.get("psnr_min"), 2), cell["seconds"])
    return cell


def _fmt(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}"


def method_config(config, budget, method):
    """The config of one cell: the generator projects onto `budget` dB (and pulls toward
    the class anchor for badhash_anchor)."""
    gan = dataclasses.replace(config.gan, psnr_budget=float(budget))
    if method == "badhash_anchor":
        gan = dataclasses.replace(gan, target_code="class_anchor")
    return dataclasses.replace(config, gan=gan)


def check_seed(config, budgets, methods, seed_dir, strategy):
    """No stage or cell of this seed was made with other flags (before any work)."""
    layout = RunLayout(seed_dir)
    stages = experiment.stage_fingerprints(config, layout, ())
    for budget in budgets:
        for method in methods:
            stages.update(experiment.stage_fingerprints(
                method_config(config, budget, method), budget_layout(layout, budget),
                [method], shared=False))
    experiment.check_stages(seed_dir, stages, config, strategy)


def check_all(configs, budgets, methods, output_dir, strategy):
    """Every seed's directory (check_seed), before any work."""
    for seed, config in configs.items():
        check_seed(config, budgets, methods, RunLayout(output_dir).seed(seed).root, strategy)


def run_seed(config, budgets, methods, seed_dir, strategy):
    """Every (budget, method) cell of one seed, on the stages shared in `seed_dir` ->
    list of cells."""
    layout, clock = RunLayout(seed_dir), experiment.StageClock()
    setting = experiment.prepare(config, layout, strategy, clock)
    context = {"setting": setting, "train_arrays": experiment.split_arrays(setting.train_split)}
    if {"badhash", "badhash_anchor", "no_hash_loss"} & set(methods):
        condition = experiment.target_condition(config, setting, layout, strategy, clock)
        anchor = codes.class_anchor(setting.surrogate, *context["train_arrays"],
                                    setting.target)
        context["condition"] = condition
        context["anchor_condition"] = dataclasses.replace(condition, target_code=anchor)
    return [run_cell(name, budget, config, context, budget_layout(layout, budget), strategy)
            for budget in budgets for name in methods]


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
    """Cells of every seed -> {rows: per (budget, method) means with min/max over seeds,
    and per BadHash method its verdicts (where learned, where at least every baseline by
    t-MAP and by backdoor_gain), also as "NAME_xK" at each extra query amplification}."""
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
                    row[key] = float(np.min(values) if key.endswith("_min")
                                     else np.mean(values))
                    row[key + "_lo"], row[key + "_hi"] = map(float, (np.min(values),
                                                                     np.max(values)))
            row["t_map_range"] = f"{row['t_map_lo']:.3f}-{row['t_map_hi']:.3f}"
            rows.append(row)
    by = {(r["budget"], r["method"]): r for r in rows}
    verdicts = {name + x: _verdict(name, cells, budgets, methods, by, x)
                for name in BADHASH if name in methods for x in ("",) + tuple(suffixes)}
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
                      if n not in BADHASH and key in by.get((budget, n), {})
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


def markdown(result):
    """frontier.json -> frontier.md."""
    summary = result["summary"]
    amplification = result.get("query_amplification", 1.0)
    lines = [
        f"# Stealth-strength frontier: {result['dataset']}", "",
        f"Seeds {', '.join(map(str, result['seeds']))}; budgets "
        f"{', '.join(f'{b:g}' for b in result['budgets'])} dB (every poisoned copy at PSNR >= "
        "the budget); figures are means over the `seeds` that ran the method (a patch that "
        "cannot both meet a budget and change every copy is skipped), `t_map_range` "
        "min-max; `psnr_min`, `ssim_min`, `query_psnr_min`: the worst image of any seed. "
        "`badhash`: the paper's target code (LabCLN's); `badhash_anchor`: the surrogate's "
        "own code of the target class. `backdoor_gain` = t-MAP minus the clean victim's on "
        "the same triggered queries: the backdoor's own share (a trigger the clean victim "
        "follows too is an adversarial example, not a backdoor).", ""]
    if result.get("backbone"):
        lines += [f"Backbone: {result['backbone']}.", ""]
    lines += _verdict_lines(result, "", amplification)
    rows = [{**r, "budget": f"{r['budget']:g}"} for r in summary["rows"]]
    lines += [f"## Queries x{amplification:g}", "", io_utils.markdown_table(rows, COLUMNS)]
    lines += [f"Ranked by t-MAP at {b:g} dB: {ranking(summary['rows'], b, 't_map')}; by "
              f"backdoor_gain: {ranking(summary['rows'], b, 'backdoor_gain')}."
              for b in result["budgets"]]
    for x in summary.get("amplifications", []):
        columns = ("budget", "method", "seeds") + tuple(k + x for k in AMPLIFIED) + (
            "clean_map", "psnr_min", "learned" + x)
        lines += ["", f"## Queries {x[1:]} (the same victims)", ""]
        lines += _verdict_lines(result, x, float(x[2:]))
        lines += [io_utils.markdown_table(rows, columns)]
        lines += [f"Ranked by t-MAP{x} at {b:g} dB: {ranking(summary['rows'], b, 't_map' + x)}"
                  f"; by backdoor_gain{x}: {ranking(summary['rows'], b, 'backdoor_gain' + x)}."
                  for b in result["budgets"]]
    lines += ["", "`t_map_clean_victim`: the reference victim (trained on the clean set) on "
              "the same triggered queries: what the trigger does without any backdoor. "
              f"The run's queries carry x{amplification:g} the trigger's perturbation "
              "(`query_psnr_min`)."]
    if result.get("compare"):
        lines += ["", *_comparison(result, result["compare"])]
    return "\n".join(lines) + "\n"


def _comparison(result, other):
    """The "beside another regime" section: per (budget, method) t-MAP and backdoor_gain
    here and in `other` ({"dir", "backbone", "rows"}), at every amplification both have."""
    here = {(r["budget"], r["method"]): r for r in result["summary"]["rows"]}
    there = {(r["budget"], r["method"]): r for r in other["rows"]}
    names = ("this run", other.get("backbone") or "from scratch")
    suffixes = [""] + [x for x in result["summary"].get("amplifications", [])
                       if any(f"t_map{x}" in r for r in other["rows"])]
    rows = []
    for key in sorted(set(here) & set(there), key=lambda k: (-k[0], k[1])):
        row = {"budget": f"{key[0]:g}", "method": key[1]}
        for x in suffixes:
            for figure in ("t_map", "backdoor_gain"):
                for label, side in zip(("here", "there"), (here[key], there[key])):
                    if figure + x in side:
                        row[f"{figure}{x} ({label})"] = side[figure + x]
        rows.append(row)
    columns = ["budget", "method"] + [f"{f}{x} ({label})" for x in suffixes
                                      for f in ("t_map", "backdoor_gain")
                                      for label in ("here", "there")]
    return [f"## Beside {other['dir']} ({names[1]})", "",
            f"`here`: {result.get('backbone') or 'from scratch'}; `there`: {names[1]} "
            f"(queries x{other.get('query_amplification', 1.0):g} there, figures without a "
            "suffix; `_xK` at amplification K).", "", io_utils.markdown_table(rows, columns)]


def load_comparison(directory):
    """Another frontier's DIR/frontier.json -> {"dir", "backbone", "query_amplification",
    "rows", "result"} with its summary recomputed (so cells from before backdoor_gain
    have it). Raises ValueError naming --compare_with."""
    path = os.path.join(directory, "frontier.json")
    try:
        with open(path, encoding="utf-8") as f:
            other = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--compare_with={directory}: {path} does not read back "
                         f"({e})") from None
    other["summary"] = summarise(other["cells"], other["budgets"], other["methods"])
    return {"dir": directory, "backbone": other.get("backbone"),
            "query_amplification": other.get("query_amplification", 1.0),
            "rows": other["summary"]["rows"], "result": other}


def _verdict_lines(result, suffix, amplification):
    """The verdict paragraph of each BadHash method at one query amplification."""
    fmt = lambda bs: ", ".join(f"{b:g} dB" for b in bs) or "none"
    lines = []
    for name in BADHASH:
        v = result["summary"].get(name + suffix)
        if v is None:
            continue
        ranking_text = (
            f"Its mean t-MAP is at least every baseline's (within {TIE}) at: "
            f"{fmt(v['beats_baselines_at'])}; its mean backdoor_gain at: "
            f"{fmt(v.get('gain_beats_baselines_at', []))}."
            if set(result["methods"]) - set(BADHASH) else "No baselines were run.")
        lines += [f"**{name}'s backdoor (queries x{amplification:g}) is learned** (every "
                  f"seed: {backdoor.learned_rule()}) **at: {fmt(v['learned_at'])}**; **not "
                  f"learned at: {fmt(v['not_learned_at'])}**. {ranking_text}"]
        for key, what in (("beaten_at", "t-MAP"), ("gain_beaten_at", "backdoor_gain")):
            lines += [f"At {budget} dB {name}'s {what} is beaten by " + ", ".join(
                f"{n} ({t:.4f})" for n, t in beaten.items()) + "."
                for budget, beaten in v.get(key, {}).items()]
        lines.append("")
    return lines


def frontier_png(path, result, compare=None):
    """Against poison PSNR, one line per method (mean over seeds, band: min-max): t-MAP at
    the run's query amplification and at each extra one (the clean victim under BadHash's
    trigger dashed), backdoor_gain, and SSIM. `compare` (another frontier.json, e.g. the
    other backbone regime) is drawn in a second column on the same axes."""
    results = [result] + ([compare] if compare else [])
    panels = [("t_map", "")] + [("t_map", x) for x in result["summary"].get(
        "amplifications", [])] + [("backdoor_gain", ""), ("ssim", "")]
    fig, axes = plt.subplots(len(panels), len(results), figsize=(7 * len(results),
                                                                 3.2 * len(panels)),
                             sharex=True, sharey="row", squeeze=False)
    cmap = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(m for r in results for m in r["methods"]))
    for column, res in enumerate(results):
        rows = [r for r in res["summary"]["rows"] if "t_map" in r]
        amplification = res.get("query_amplification", 1.0)
        for (figure, suffix), ax in zip(panels, axes[:, column]):
            key = figure + suffix
            for name in res["methods"]:
                mine = sorted((r for r in rows if r["method"] == name and key in r),
                              key=lambda r: r["psnr"])
                if not mine:
                    continue
                colour = cmap(methods.index(name) % 10)
                x = [r["psnr"] for r in mine]
                ax.plot(x, [r[key] for r in mine], "o-", color=colour, label=name)
                ax.fill_between(x, [r[key + "_lo"] for r in mine],
                                [r[key + "_hi"] for r in mine], color=colour, alpha=0.15)
                if figure == "t_map" and name in BADHASH:
                    ax.plot(x, [r["t_map_clean_victim" + suffix] for r in mine], "--",
                            color=colour, label=f"clean victim ({name}'s trigger)")
            queries = suffix[2:] if suffix else f"{amplification:g}"
            ax.set_ylabel({"t_map": f"t-MAP, queries x{queries}",
                           "backdoor_gain": f"backdoor gain (x{amplification:g})",
                           "ssim": "SSIM of the copies"}[figure])
            if figure == "t_map":
                ax.axhline(backdoor.LEARNED["t_map"], color="grey", lw=0.6, ls=":")
                ax.set_ylim(-0.02, 1.02)
            if figure == "backdoor_gain":
                ax.axhline(backdoor.LEARNED["over_clean_victim"], color="grey", lw=0.6,
                           ls=":")
            ax.grid(alpha=0.3)
        seeds = len(res["seeds"])
        axes[0, column].set_title(
            f"{res['dataset']}, {res.get('backbone') or 'backbone from scratch'} ({seeds} "
            f"seed{'s' if seeds > 1 else ''})", fontsize=9)
        axes[-1, column].set_xlabel("poisoned copies' mean PSNR (dB); higher = less visible")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def backbone_label(config):
    """Where a frontier's victims and surrogate start: "pretrained: DIR" or None."""
    weights = config.hashing.backbone_weights
    surrogate = config.attack.surrogate_backbone_weights
    if not weights:
        return None
    text = f"pretrained: {os.path.dirname(weights) or weights}"
    return text + (f" (surrogate: {os.path.dirname(surrogate)})" if surrogate else "")


def run_frontier(configs, budgets, methods, output_dir, strategy, record=None, compare=None):
    """configs: {seed: ExperimentConfig}. Every cell of every seed into output_dir/seed_N;
    writes frontier.json, frontier.md, frontier.png (chief; `compare`, another frontier
    from load_comparison, is tabulated and drawn beside it) -> the result dict."""
    check_budgets(budgets)
    check_methods(methods)
    start, cells = time.time(), []
    check_all(configs, budgets, methods, output_dir, strategy)
    for seed, config in configs.items():
        cells += run_seed(config, budgets, methods, RunLayout(output_dir).seed(seed).root,
                          strategy)
    first = next(iter(configs.values()))
    result = {"dataset": first.data.dataset, "seeds": list(configs), "budgets": list(budgets),
              "methods": list(methods), "cells": cells,
              "query_amplification": first.attack.query_amplification,
              "backbone": backbone_label(first),
              "summary": summarise(cells, budgets, methods),
              "seconds": round(time.time() - start, 2), **(record or {})}
    if compare:
        result["compare"] = {k: v for k, v in compare.items() if k != "result"}
    if distribute.is_chief(strategy):
        io_utils.write_json(os.path.join(output_dir, "frontier.json"), result)
        io_utils.write_text(os.path.join(output_dir, "frontier.md"), markdown(result))
        frontier_png(os.path.join(output_dir, "frontier.png"), result,
                     compare and compare["result"])
    return result
