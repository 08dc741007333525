"""The stealth-strength frontier: every attack at every PSNR budget, on shared stages.

Per seed the surrogate, LabCLN and reference victim are trained once (`seed_N/`); per
budget (`seed_N/psnr_B/`) each method poisons the target class within the budget and a
victim trains on it: BadHash with the budgeted generator (badhash: LabCLN's target code as
the paper; badhash_anchor: the surrogate's own code of the target class), its no_hash_loss
ablation, the BadNets patch with the largest side that keeps every copy within the budget
and changes it, fixed noise,
and per-image PGD on the surrogate toward the target class's code (pgd_target) and away
toward a random code (pgd_away). Each (seed, budget, method) cell is written to
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
from badhash_tf.attack import experiment, probes, triggers  # noqa: E402
from badhash_tf.attack.layout import RunLayout  # noqa: E402
from badhash_tf.eval import backdoor, codes  # noqa: E402
from badhash_tf.models.generator import MAX_PSNR_BUDGET  # noqa: E402
from badhash_tf.training import distribute  # noqa: E402

# badhash: the paper's target code (LabCLN's); badhash_anchor: the surrogate's own code of
# the target class (--gan_target_code=class_anchor).
METHODS = ("badhash", "badhash_anchor", "no_hash_loss", "patch", "noise", "pgd_target",
           "pgd_away")
BADHASH = ("badhash", "badhash_anchor")
TIE = 0.02  # "at least every baseline" within this
FIGURES = ("t_map", "t_map_best", "t_map_clean_victim", "t_map_untriggered", "clean_map",
           "map_best", "clean_map_reference", "psnr", "psnr_min", "ssim", "ssim_min",
           "query_psnr", "query_psnr_min", "linf_255")
COLUMNS = ("budget", "method", "seeds", "t_map", "t_map_range", "t_map_clean_victim", "clean_map",
           "clean_map_reference", "psnr", "psnr_min", "ssim", "ssim_min", "query_psnr_min",
           "learned")


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
    return probes.make_probe(name, budget, setting.surrogate, images, labels, setting.target,
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
        cell.update({k: figures[k] for k in FIGURES if k in figures})
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


def learned(cell):
    """Whether a cell's backdoor is learned (backdoor.LEARNED)."""
    return "t_map" in cell and backdoor.learned(cell, cell["clean_map_reference"])


def summarise(cells, budgets, methods):
    """Cells of every seed -> {rows: per (budget, method) means with min/max over seeds,
    badhash_learned_at, badhash_not_learned_at, badhash_beats_baselines_at, ...}."""
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
            for key in FIGURES:
                values = [c[key] for c in mine if key in c]
                if values:  # *_min figures (the worst image): the worst over seeds
                    row[key] = float(np.min(values) if key.endswith("_min")
                                     else np.mean(values))
                    row[key + "_lo"], row[key + "_hi"] = map(float, (np.min(values),
                                                                     np.max(values)))
            row["t_map_range"] = f"{row['t_map_lo']:.3f}-{row['t_map_hi']:.3f}"
            rows.append(row)
    by = {(r["budget"], r["method"]): r for r in rows}
    verdicts = {name: _verdict(name, cells, budgets, methods, by) for name in BADHASH
                if name in methods}
    return {"rows": rows, **verdicts}


def _verdict(name, cells, budgets, methods, by):
    """Where BadHash method `name` is learned (every seed) and where its mean t-MAP is at
    least every baseline's (the other BadHash variant is not a baseline)."""
    verdict = {"learned_at": [], "not_learned_at": [], "beats_baselines_at": [],
               "beaten_at": {}}
    for budget in budgets:
        own = by.get((budget, name), {})
        if "t_map" not in own:
            continue
        mine = [c for c in cells if c["budget"] == budget and c["method"] == name]
        (verdict["learned_at"] if mine and all(map(learned, mine))
         else verdict["not_learned_at"]).append(budget)
        beaten = {n: by[(budget, n)]["t_map"] for n in methods
                  if n not in BADHASH and "t_map" in by.get((budget, n), {})
                  and by[(budget, n)]["t_map"] > own["t_map"] + TIE}
        if beaten:
            verdict["beaten_at"][f"{budget:g}"] = beaten
        else:
            verdict["beats_baselines_at"].append(budget)
    return verdict


def markdown(result):
    """frontier.json -> frontier.md."""
    fmt = lambda bs: ", ".join(f"{b:g} dB" for b in bs) or "none"
    lines = [
        f"# Stealth-strength frontier: {result['dataset']}", "",
        f"Seeds {', '.join(map(str, result['seeds']))}; budgets "
        f"{', '.join(f'{b:g}' for b in result['budgets'])} dB (every poisoned copy at PSNR >= "
        "the budget); figures are means over the `seeds` that ran the method (a patch that "
        "cannot both meet a budget and change every copy is skipped), `t_map_range` "
        "min-max; `psnr_min`, `ssim_min`, `query_psnr_min`: the worst image of any seed. "
        "`badhash`: the paper's target code (LabCLN's); `badhash_anchor`: the surrogate's "
        "own code of the target class.", ""]
    for name in BADHASH:
        v = result["summary"].get(name)
        if v is None:
            continue
        ranking = (f"Its mean t-MAP is at least every baseline's (within {TIE}) at: "
                   f"{fmt(v['beats_baselines_at'])}." if set(result["methods"]) - set(BADHASH)
                   else "No baselines were run.")
        lines += [f"**{name}'s backdoor is learned** (every seed: {backdoor.learned_rule()}) "
                  f"**at: {fmt(v['learned_at'])}**; **not learned at: "
                  f"{fmt(v['not_learned_at'])}**. {ranking}"]
        lines += [f"At {budget} dB {name} is beaten by " + ", ".join(
            f"{n} ({t:.4f})" for n, t in beaten.items()) + "."
            for budget, beaten in v["beaten_at"].items()]
        lines.append("")
    rows = [{**r, "budget": f"{r['budget']:g}"} for r in result["summary"]["rows"]]
    lines += [io_utils.markdown_table(rows, COLUMNS),
              "`t_map_clean_victim`: the reference victim (trained on the clean set) on the "
              "same triggered queries: what the trigger does without any backdoor. "
              "Query amplification x"
              f"{result.get('query_amplification', 1.0):g} (queries' perturbation; "
              "`query_psnr_min`)."]
    return "\n".join(lines) + "\n"


def frontier_png(path, result):
    """t-MAP (top) and SSIM (bottom) against poison PSNR, one line per method: mean over
    seeds with the min-max band; the clean victim's t-MAP under BadHash's trigger dashed."""
    rows = [r for r in result["summary"]["rows"] if "t_map" in r]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 8), sharex=True)
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(result["methods"]):
        mine = sorted((r for r in rows if r["method"] == name), key=lambda r: r["psnr"])
        if not mine:
            continue
        x = [r["psnr"] for r in mine]
        top.plot(x, [r["t_map"] for r in mine], "o-", color=cmap(i), label=name)
        top.fill_between(x, [r["t_map_lo"] for r in mine], [r["t_map_hi"] for r in mine],
                         color=cmap(i), alpha=0.15)
        bottom.plot(x, [r["ssim"] for r in mine], "o-", color=cmap(i), label=name)
        bottom.fill_between(x, [r["ssim_lo"] for r in mine], [r["ssim_hi"] for r in mine],
                            color=cmap(i), alpha=0.15)
        if name in BADHASH:
            top.plot(x, [r["t_map_clean_victim"] for r in mine], "--", color=cmap(i),
                     label=f"clean victim ({name}'s trigger)")
    top.axhline(backdoor.LEARNED["t_map"], color="grey", lw=0.6, ls=":")
    top.set_ylabel("t-MAP")
    top.set_ylim(-0.02, 1.02)
    top.legend(fontsize=8)
    seeds = len(result["seeds"])
    top.set_title(f"{result['dataset']}: t-MAP against poison PSNR ({seeds} seed"
                  f"{'s' if seeds > 1 else ''}, queries x{result['query_amplification']:g})")
    bottom.set_ylabel("SSIM (mean over copies; band: seeds' min-max)")
    bottom.set_xlabel("poisoned copies' mean PSNR (dB); higher = less visible")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_frontier(configs, budgets, methods, output_dir, strategy, record=None):
    """configs: {seed: ExperimentConfig}. Every cell of every seed into output_dir/seed_N;
    writes frontier.json, frontier.md, frontier.png (chief) -> the result dict."""
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
              "summary": summarise(cells, budgets, methods),
              "seconds": round(time.time() - start, 2), **(record or {})}
    if distribute.is_chief(strategy):
        io_utils.write_json(os.path.join(output_dir, "frontier.json"), result)
        io_utils.write_text(os.path.join(output_dir, "frontier.md"), markdown(result))
        frontier_png(os.path.join(output_dir, "frontier.png"), result)
    return result
