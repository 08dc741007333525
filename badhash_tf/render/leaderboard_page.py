"""bench.json -> bench.md, bench.html (one static page, heatmaps embedded) and the heatmap
PNGs: the leaderboard for people, each figure a mean over seeds ± its 95% interval, the
attacks ranked by backdoor_gain and grouped in tiers of overlapping intervals."""

import base64
import html
import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from badhash_tf import io_utils, stats  # noqa: E402
from badhash_tf.grids.leaderboard import MEANS  # noqa: E402

COLUMNS = ("rank", "tier", "attack", "threat", "seeds") + MEANS


def _shown(rows):
    """Rows for a table: every figure with an interval as "mean ± half-width"."""
    return [{k: ("" if v is None else stats.format_interval(v, r.get(k + "_ci"), 4)
                 if isinstance(v, float) and k + "_ci" in r else v)
             for k, v in r.items()} for r in rows]


def _defense_columns(board, prefix):
    return [f"{prefix}{d}" for d in board["defenses"]
            if any(f"{prefix}{d}" in r for r in board["rows"])]


def markdown(result):
    """bench.json -> bench.md: per dataset the attacks ranked by backdoor_gain, then t-MAP
    and detection after each defense."""
    lines = ["# Backdoor bench", "",
             "Per dataset, each attack's mean over seeds: t-MAP of its triggered non-target "
             "queries on its victim, the clean victim's on the same queries, `backdoor_gain` "
             "(their difference: a trigger the clean victim follows too is an adversarial "
             "example, not a backdoor; ranked by it), clean MAP, the poisoned copies' PSNR and "
             "SSIM (DarkHash poisons no data: its queries'), then t-MAP after each defense "
             "(lower = defended), detection AUROC (0.5 = chance) and each detector's "
             "verdict (target flagged in k of n seeds). Every figure is a mean over the "
             "seeds ± the half-width of its 95% interval (Student's t; none with one seed); "
             "`tier`: attacks whose backdoor_gain intervals overlap share a tier, so the "
             "ranking inside a tier is noise.", ""]
    for dataset, board in result["datasets"].items():
        lines += [f"## {dataset}", "",
                  f"Seeds {', '.join(map(str, board['seeds']))} (targets "
                  f"{', '.join(map(str, board['targets']))}, "
                  f"{', '.join(map(str, board['poison_count']))} poisoned copies); "
                  f"budget {board['budget']:g} dB (0 = none), queries "
                  f"x{board['query_amplification']:g} (CIBA and DarkHash: their patch alone).",
                  "", io_utils.markdown_table(_shown(board["rows"]), COLUMNS)]
        after = _defense_columns(board, "t_map_after_")
        if after:
            lines += ["### t-MAP after each defense", "", io_utils.markdown_table(
                _shown(board["rows"]), ("attack", "t_map") + tuple(after))]
        detect = _defense_columns(board, "auroc_") + _defense_columns(board, "target_flagged_") \
            + _defense_columns(board, "flagged_")
        if detect:
            lines += ["### Detection", "", io_utils.markdown_table(
                _shown(board["rows"]), ("attack",) + tuple(detect))]
    return "\n".join(lines) + "\n"


def heatmap_png(board, prefix, title):
    """PNG bytes of the attacks x defenses matrix of the figures `prefix`<defense> (the
    t-MAP one led by the undefended t-MAP; "n/a" where a defense does not apply), or None
    when there is none."""
    columns = _defense_columns(board, prefix)
    if not columns:
        return None
    if prefix == "t_map_after_":
        columns = ["t_map"] + columns
    names = ["undefended" if c == "t_map" else c[len(prefix):] for c in columns]
    attacks = [r["attack"] for r in board["rows"]]
    values = np.array([[r.get(c) if isinstance(r.get(c), float) else np.nan for c in columns]
                       for r in board["rows"]], float)
    fig, ax = plt.subplots(figsize=(2.5 + 0.75 * len(columns), 1.2 + 0.38 * len(attacks)))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
    for i, row in enumerate(board["rows"]):
        for j, column in enumerate(columns):
            text = (f"{values[i, j]:.2f}" if np.isfinite(values[i, j]) else
                    "n/a" if row.get(column) == "n/a" else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04)
    ax.set_title(title, fontsize=8, wrap=True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _html_table(rows, columns):
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HEATMAPS = (("t_map_after_", "t-MAP after each defense (lower = defended)"),
            ("auroc_", "detection AUROC (0.5 = chance)"))


def page(result, heatmaps):
    """bench.json and {(dataset, prefix): PNG bytes} -> bench.html, one static file."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>badhash-tf backdoor "
             "bench</title><style>body{font-family:sans-serif;margin:2em;max-width:90em}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "td:nth-child(2),th:nth-child(2){text-align:left}</style></head><body>",
             "<h1>Backdoor bench</h1><p>Attacks ranked by <b>backdoor_gain</b> = t-MAP minus "
             "the clean victim's on the same triggered queries (a trigger the clean victim "
             "follows too is an adversarial example, not a backdoor). Means over seeds ± the "
             "half-width of their 95% interval (Student's t); attacks whose intervals "
             "overlap share a tier.</p>"]
    for dataset, board in result["datasets"].items():
        parts.append(f"<h2>{html.escape(dataset)}</h2><p>seeds "
                     f"{', '.join(map(str, board['seeds']))}; budget {board['budget']:g} dB; "
                     f"queries x{board['query_amplification']:g}</p>")
        columns = COLUMNS + tuple(_defense_columns(board, "t_map_after_")) + tuple(
            _defense_columns(board, "auroc_")) + tuple(
            _defense_columns(board, "target_flagged_")) + tuple(
            _defense_columns(board, "flagged_"))
        parts.append(_html_table(_shown(board["rows"]), columns))
        for prefix, title in HEATMAPS:
            png = heatmaps.get((dataset, prefix))
            if png:
                parts.append(f"<p><img alt='{html.escape(title)}' src='data:image/png;base64,"
                             f"{base64.b64encode(png).decode()}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_all(output_dir, result):
    """bench.md, bench.html and one heatmap PNG per dataset and figure (bench.json is the
    caller's)."""
    io_utils.write_text(os.path.join(output_dir, "bench.md"), markdown(result))
    heatmaps = {}
    for dataset, board in result["datasets"].items():
        for prefix, title in HEATMAPS:
            png = heatmap_png(board, prefix, f"{dataset}: {title}")
            if png:
                heatmaps[(dataset, prefix)] = png
                name = f"bench_{dataset}_{prefix.rstrip('_')}.png"
                with io_utils.atomic_path(os.path.join(output_dir, name)) as tmp:
                    with open(tmp, "wb") as f:
                        f.write(png)
    io_utils.write_text(os.path.join(output_dir, "bench.html"), page(result, heatmaps))
