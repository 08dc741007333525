"""defenses.json -> defenses.md (attack x defense tables) and defenses.png: each defense's
result beside the undefended one."""

import os

import numpy as np

from badhash_tf import io_utils, registry
from badhash_tf.render.figures import plt, save_png


def _kind(name):
    return registry.defense(name).kind if name in registry.defenses() else ""


def _with(result, key):
    """The defenses of `result` some of whose figures hold `key`."""
    return [d for d in result["defenses"]
            if any(key in figures.get(d, {}) for figures in result["variants"].values())]


def _table(result, defenses, key, first=("undefended",)):
    columns = ("attack",) + tuple(first) + tuple(defenses)
    rows = [{"attack": name, **{d: figures[d][key] for d in columns[1:]
                                if key in figures.get(d, {})}}
            for name, figures in result["variants"].items()]
    return io_utils.markdown_table(rows, columns)


def markdown(result):
    """defenses.json -> defenses.md: t-MAP and clean MAP per attack and defense, the
    detectors' AUROCs and the labels they flag."""
    c, names = result["config"], result["defenses"]
    mapped = [d for d in names if _kind(d) != "detector"]
    detectors = _with(result, "auroc")
    lines = [f"# Defenses against the attacks of {result['run_dir']}", ""]
    for name in names:
        spec = registry.defense(name) if name in registry.defenses() else None
        if spec:
            settings = ", ".join(f"{f} {c[f]:g}" if isinstance(c[f], float) else f"{f} {c[f]}"
                                 for f in spec.fields)
            lines.append(f"- `{name}` ({spec.kind}): {spec.summary}" +
                         (f" ({settings})" if settings else ""))
    lines.append("")
    if mapped:
        lines += ["## t-MAP (backdoored victim, triggered queries; lower = defended)", "",
                  _table(result, mapped, "t_map"),
                  "## Clean MAP (utility kept; higher = better)", "",
                  _table(result, mapped, "clean_map")]
    if detectors:
        lines += ["## Detection AUROC (poisoned copies among the training items; STRIP: "
                  "triggered against clean queries; 0.5 = chance)", "",
                  _table(result, detectors, "auroc", first=())]
    recalled = _with(result, "recall")
    if recalled:
        lines += ["## Recall of the poisoned copies at the removal budget", "",
                  _table(result, recalled, "recall", first=())]
    for name in _with(result, "flagged"):
        lines += [f"## {name} (flagged labels; the target's anomaly index)", "",
                  io_utils.markdown_table(flagged_rows(result, name), FLAGGED_COLUMNS)]
    return "\n".join(lines)


FLAGGED_COLUMNS = ("attack", "target", "flagged", "target_flagged", "target_anomaly_index",
                   "most_anomalous")


def flagged_rows(result, defense):
    """One row per attack of a detector's flagged labels (defenses.json -> table rows)."""
    rows = []
    for name, figures in result["variants"].items():
        found = figures.get(defense, {})
        if "flagged" in found:
            rows.append({"attack": name, "target": figures["target_label"],
                         "flagged": ",".join(map(str, found["flagged"])) or "none",
                         **{k: found[k] for k in FLAGGED_COLUMNS[3:] if k in found}})
    return rows


def defenses_png(path, result):
    """t-MAP per attack undefended and after each defense (top), detection AUROCs (bottom)."""
    attacks = list(result["variants"])
    mapped = ["undefended"] + [d for d in result["defenses"] if _kind(d) != "detector"]
    detectors = _with(result, "auroc")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 1.6 * len(attacks) + 3), 8))
    cmap, x = plt.get_cmap("tab10"), np.arange(len(attacks))
    for ax, names, key, title in ((top, mapped, "t_map", "t-MAP of triggered queries"),
                                  (bottom, detectors, "auroc", "detection AUROC")):
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            values = [result["variants"][a].get(name, {}).get(key, np.nan) for a in attacks]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name,
                   color=cmap(i % 10))
        ax.set_xticks(x, attacks, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
        if names:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    bottom.axhline(0.5, color="grey", lw=0.6, ls=":")
    top.set_title("Defenses against each attack")
    save_png(fig, path)


def write_all(output_dir, result):
    """defenses.md and defenses.png into `output_dir` (defenses.json is the caller's)."""
    io_utils.write_text(os.path.join(output_dir, "defenses.md"), markdown(result))
    defenses_png(os.path.join(output_dir, "defenses.png"), result)
