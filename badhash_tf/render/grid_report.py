"""grid.json -> grid.md and grid.png for people: the transfer grid as a heatmap of backdoor
gain (surrogate rows, victim columns), the other grids as bars per cell; every figure a
mean over seeds with its 95% interval, and, with a reference, each marked inside or
outside the reference's interval."""

import os

import numpy as np

from badhash_tf import io_utils, stats
from badhash_tf.render.figures import plt, save_png

SHOWN = ("t_map", "t_map_clean_victim", "backdoor_gain", "clean_map", "psnr", "ssim")
COMPARED = ("t_map", "backdoor_gain", "clean_map")
TITLES = {"transfer": "Transferability: the surrogate's scheme (rows) against the victim's "
                      "(columns)",
          "bits": "Code length", "poison": "Poisoned copies", "ablation": "Ablations"}


def _cell(row, key, digits=3):
    text = stats.format_interval(row.get(key), row.get(key + "_ci"), digits)
    return text + stats.mark(row, key) if text else text


def markdown(result):
    """grid.json -> grid.md."""
    axes = [k for k in ("surrogate", "victim", "bits", "poison") if any(
        k in r for r in result["rows"])]
    columns = ("cell",) + tuple(axes) + ("attack", "seeds", "poison_count") + SHOWN
    rows = [{**r, **{k: _cell(r, k) for k in SHOWN},
             "poison_count": f"{r['poison_count']:g}" if "poison_count" in r else ""}
            for r in result["rows"]]
    s = result["scheme"]
    lines = [f"# {TITLES.get(result['grid'], result['grid'])}: {result['dataset']}", "",
             f"Seeds {', '.join(map(str, result['seeds']))}; figures are means over the seeds "
             f"± the half-width of their {result['interval']} (none with one seed). "
             "`backdoor_gain` = t-MAP minus the clean victim's t-MAP on the same triggered "
             "queries (the backdoor's own share); `clean_map_reference` is the clean victim's "
             f"MAP. Scheme otherwise: {_scheme(s, axes)}; "
             f"triggers {'grey (R = G = B)' if result.get('grey_triggers') else 'per channel'}."
             + (f" Missing cells: {result['missing_cells']}." if result["missing_cells"]
                else ""), ""]
    if result["grid"] == "transfer":
        lines += ["## Backdoor gain, surrogate (rows) x victim (columns)", "",
                  io_utils.markdown_table(*_matrix(result["rows"], "backdoor_gain")), ""]
    compare = result.get("compare")
    if compare:
        lines += [f"Against the reference {compare['source']} (seeds "
                  f"{', '.join(map(str, compare['seeds']))}): {compare['inside']} figures "
                  f"inside its 95% interval (✓), {compare['outside']} outside (✗), of "
                  f"{', '.join(COMPARED)}.", ""]
    lines += ["## Every cell", "", io_utils.markdown_table(rows, columns)]
    if "seconds" in result:
        lines += ["", f"Wall time of this run: {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _scheme(scheme, axes):
    """The first cell's scheme without what the grid varies ("hashnet, small_cnn, 32
    bits"; a bits grid leaves its bits out, a transfer grid its methods)."""
    methods_vary = "surrogate" in axes or "victim" in axes
    return ", ".join(([] if methods_vary else [scheme["method"]]) + [scheme["backbone"]]
                     + ([] if "bits" in axes else [f"{scheme['bits']} bits"]))


def _matrix(rows, key):
    """Transfer rows -> (table rows, columns): surrogate per row, victim per column."""
    surrogates = list(dict.fromkeys(r["surrogate"] for r in rows))
    victims = list(dict.fromkeys(r["victim"] for r in rows))
    by = {(r["surrogate"], r["victim"]): r for r in rows}
    table = [{"surrogate \\ victim": s, **{v: _cell(by[(s, v)], key) for v in victims
                                           if (s, v) in by}} for s in surrogates]
    return table, ("surrogate \\ victim",) + tuple(victims)


def plot(result, path):
    """grid.png: the transfer heatmap, or bars with error bars per cell."""
    rows = [r for r in result["rows"] if "t_map" in r]
    if result["grid"] == "transfer":
        surrogates = list(dict.fromkeys(r["surrogate"] for r in rows))
        victims = list(dict.fromkeys(r["victim"] for r in rows))
        by = {(r["surrogate"], r["victim"]): r for r in rows}
        gain = np.full((len(surrogates), len(victims)), np.nan)
        for i, s in enumerate(surrogates):
            for j, v in enumerate(victims):
                if (s, v) in by:
                    gain[i, j] = by[(s, v)]["backdoor_gain"]
        fig, ax = plt.subplots(figsize=(1.9 * len(victims) + 2.4, 1.3 * len(surrogates) + 1.6))
        image = ax.imshow(gain, cmap="coolwarm", vmin=-1.0, vmax=1.0)  # 0: no backdoor
        for i, s in enumerate(surrogates):
            for j, v in enumerate(victims):
                if (s, v) in by:
                    text = stats.format_interval(by[(s, v)]["backdoor_gain"],
                                                 by[(s, v)].get("backdoor_gain_ci"), 2)
                    ax.text(j, i, text.replace(" ± ", "\n± "), ha="center", va="center",
                            color="black", fontsize=9)
        ax.set_xticks(range(len(victims)), victims)
        ax.set_yticks(range(len(surrogates)), surrogates)
        ax.set_xlabel("victim's hashing scheme")
        ax.set_ylabel("attacker's surrogate")
        fig.colorbar(image, ax=ax, label="backdoor gain (t-MAP - clean victim's)")
    else:
        labels = [r["cell"] if r["attack"] == "badhash" else r["attack"] for r in rows]
        x = np.arange(len(rows))
        fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(rows) + 2), 3.8))
        for k, (key, name) in enumerate((("t_map", "t-MAP"), ("t_map_clean_victim",
                                                                "clean victim's t-MAP"),
                                         ("backdoor_gain", "backdoor gain"))):
            ax.bar(x + (k - 1) * 0.27, [r.get(key, np.nan) for r in rows], 0.27,
                   yerr=[r.get(key + "_ci") or 0.0 for r in rows], capsize=3, label=name)
        ax.set_xticks(x, labels)
        ax.set_ylim(min(0.0, *[r.get("backdoor_gain", 0.0) for r in rows]) - 0.05, 1.05)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(fontsize=8)
    ax.set_title(f"{TITLES.get(result['grid'], result['grid'])}\n{result['dataset']}, seeds "
                 f"{','.join(map(str, result['seeds']))} (95% intervals)", fontsize=9)
    save_png(fig, path, dpi=90)


def write_all(output_dir, result):
    """grid.md and grid.png beside grid.json."""
    io_utils.write_text(os.path.join(output_dir, "grid.md"), markdown(result))
    plot(result, os.path.join(output_dir, "grid.png"))
