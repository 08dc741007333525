"""frontier.json -> frontier.md and frontier.png: the stealth-strength frontier for people,
each figure a mean over seeds with its 95% interval (error bars in the picture)."""

import os

from badhash_tf import io_utils, stats
from badhash_tf.eval import backdoor
from badhash_tf.grids import stealth_frontier
from badhash_tf.grids.stealth_frontier import AMPLIFIED, TIE, ranking, subjects
from badhash_tf.render.figures import plt, save_png

COLUMNS = ("budget", "method", "seeds", "t_map", "t_map_range", "t_map_clean_victim",
           "backdoor_gain", "clean_map", "clean_map_reference", "psnr", "psnr_min", "ssim",
           "ssim_min", "query_psnr_min", "learned")
WITH_INTERVAL = ("t_map", "t_map_clean_victim", "backdoor_gain", "clean_map", "psnr", "ssim")


def _shown(row, suffixes=()):
    """A summary row for a table: the figures with an interval as "mean ± half-width"."""
    keys = WITH_INTERVAL + tuple(k + x for x in suffixes for k in AMPLIFIED)
    return {**row, "budget": f"{row['budget']:g}",
            **{k: stats.format_interval(row[k], row.get(k + "_ci"), 4)
               for k in keys if isinstance(row.get(k), float)}}


def markdown(result):
    """frontier.json -> frontier.md."""
    summary = result["summary"]
    amplification = result.get("query_amplification", 1.0)
    lines = [
        f"# Stealth-strength frontier: {result['dataset']}", "",
        f"Seeds {', '.join(map(str, result['seeds']))}; budgets "
        f"{', '.join(f'{b:g}' for b in result['budgets'])} dB (every poisoned copy at PSNR >= "
        "the budget); figures are means over the `seeds` that ran the method, ± the half-width "
        f"of their {result.get('interval', '95% interval')} (none with one seed; a patch that "
        "cannot both meet a budget and change every copy is skipped), `t_map_range` "
        "min-max; `psnr_min`, `ssim_min`, `query_psnr_min`: the worst image of any seed. "
        "`badhash`: the paper's target code (LabCLN's); `badhash_anchor`: the surrogate's "
        "own code of the target class. `backdoor_gain` = t-MAP minus the clean victim's on "
        "the same triggered queries: the backdoor's own share (a trigger the clean victim "
        "follows too is an adversarial example, not a backdoor).", ""]
    if result.get("backbone"):
        lines += [f"Backbone: {result['backbone']}.", ""]
    lines += _verdict_lines(result, "", amplification)
    rows = [_shown(r, summary.get("amplifications", [])) for r in summary["rows"]]
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
    if result.get("missing_cells"):
        lines += ["", f"**{result['missing_cells']} cells are not finished** (a sharded run "
                  "not gathered yet, or one still running): the figures above leave them out."]
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
        for figure in here[key].get("compare", {}):
            row[f"{figure} inside"] = stats.mark(here[key], figure).strip()
        for x in suffixes:
            for figure in ("t_map", "backdoor_gain"):
                for label, side in zip(("here", "there"), (here[key], there[key])):
                    if figure + x in side:
                        row[f"{figure}{x} ({label})"] = side[figure + x]
        rows.append(row)
    columns = ["budget", "method"] + [f"{f}{x} ({label})" for x in suffixes
                                      for f in ("t_map", "backdoor_gain")
                                      for label in ("here", "there")]
    columns += [f"{f} inside" for f in stealth_frontier.COMPARED if any(
        f"{f} inside" in r for r in rows)]
    marks = ""
    if "inside" in other:
        marks = (f" {other['inside']} figures here lie inside the 95% interval there (✓), "
                 f"{other['outside']} outside (✗), of {', '.join(stealth_frontier.COMPARED)}.")
    return [f"## Beside {other['dir']} ({names[1]})", "",
            f"`here`: {result.get('backbone') or 'from scratch'}; `there`: {names[1]} "
            f"(queries x{other.get('query_amplification', 1.0):g} there, figures without a "
            f"suffix; `_xK` at amplification K).{marks}", "",
            io_utils.markdown_table(rows, columns)]


def _verdict_lines(result, suffix, amplification):
    """The verdict paragraph of each BadHash method at one query amplification."""
    fmt = lambda bs: ", ".join(f"{b:g} dB" for b in bs) or "none"
    lines = []
    for name in subjects():
        v = result["summary"].get(name + suffix)
        if v is None:
            continue
        ranking_text = (
            f"Its mean t-MAP is at least every baseline's (within {TIE}) at: "
            f"{fmt(v['beats_baselines_at'])}; its mean backdoor_gain at: "
            f"{fmt(v.get('gain_beats_baselines_at', []))}."
            if set(result["methods"]) - set(subjects()) else "No baselines were run.")
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
    """Against poison PSNR, one line per method (mean over seeds, error bars: its 95%
    interval; band: min-max): t-MAP at
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
                errors = [r.get(key + "_ci") or 0.0 for r in mine]
                ax.errorbar(x, [r[key] for r in mine], yerr=errors, fmt="o-", color=colour,
                            capsize=3, label=name)
                ax.fill_between(x, [r[key + "_lo"] for r in mine],
                                [r[key + "_hi"] for r in mine], color=colour, alpha=0.15)
                if figure == "t_map" and name in subjects():
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
    save_png(fig, path, dpi=90)


def write_all(output_dir, result, compare=None):
    """frontier.md and frontier.png into `output_dir` (frontier.json is the caller's)."""
    io_utils.write_text(os.path.join(output_dir, "frontier.md"), markdown(result))
    frontier_png(os.path.join(output_dir, "frontier.png"), result, compare)
