"""bench.json -> bench.md, bench.html (one static page, heatmaps embedded) and the heatmap
PNGs: the leaderboard for people, each figure a mean over seeds ± its 95% interval, the
attacks ranked by backdoor_gain and grouped in tiers of overlapping intervals."""

import base64
import html
import io
import os

import numpy as np

from badhash_tf import io_utils, stats
from badhash_tf.grids.leaderboard import MEANS
from badhash_tf.render.figures import plt, png_bytes

COLUMNS = ("rank", "tier", "attack", "threat", "seeds") + MEANS


def _shown(rows):
    """Rows for a table: every figure with an interval as "mean ± half-width" (with ✓ / ✗
    against a reference)."""
    return [{k: ("" if v is None else stats.format_interval(v, r.get(k + "_ci"), 4)
                 + stats.mark(r, k) if isinstance(v, float) and k + "_ci" in r else v)
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
    if result.get("compare"):
        c = result["compare"]
        lines += [f"Against the reference {c['source']}: {c['inside']} figures inside its "
                  f"95% interval (✓), {c['outside']} outside (✗).", ""]
    for dataset, board in result["datasets"].items():
        lines += [f"## {dataset}", "",
                  f"Seeds {', '.join(map(str, board['seeds']))} (targets "
                  f"{', '.join(map(str, board['targets']))}; poisoned copies "
                  f"{', '.join(map(str, board['poison_count']))}); "
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
    return png_bytes(fig)


def _html_table(rows, columns):
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HEATMAPS = (("t_map_after_", "t-MAP after each defense (lower = defended)"),
            ("auroc_", "detection AUROC (0.5 = chance)"))
# the main table's column groups: (group title, [(column, header)])
STRENGTH = (("t_map", "t-MAP"), ("t_map_clean_victim", "clean victim's"),
            ("backdoor_gain", "gain"), ("clean_map", "clean MAP"))
STEALTH = (("psnr", "PSNR"), ("ssim", "SSIM"))
STYLE = ("body{font-family:sans-serif;margin:1em;max-width:84em;font-size:14px}"
         "table{border-collapse:collapse;font-size:12px;margin:.6em 0}"
         "td,th{border:1px solid #ccc;padding:2px 4px;text-align:right;vertical-align:middle}"
         "th{background:#f3f3f3;font-weight:600;max-width:7em}"
         "th.group{text-align:center;background:#e4e4e4}"
         "td.attack{text-align:left;white-space:nowrap}td.attack small{color:#666}"
         "td .ci{display:block;color:#777;font-size:10px;white-space:nowrap}"
         "tr.control td{background:#f7f7ff;font-style:italic}"
         "tr.tier-odd td{background:#fbfbf4}img.strip{display:block;margin-top:2px}"
         ".note{color:#444;max-width:70em}")


STRIP_HEIGHT = 28  # px: a thumbnail strip beside its attack's name


def thumbnail_strip(path):
    """An attack's first poisoned copy beside its original and their difference x10
    (a <cell>/samples.npz) -> PNG bytes, or None without one."""
    if not path or not os.path.exists(path):
        return None
    with np.load(path) as samples:
        original, poisoned = samples["originals"][0], samples["poisoned"][0]
    difference = np.clip(0.5 + 10.0 * (poisoned - original), 0.0, 1.0)
    gap = np.ones((original.shape[0], 2, 3), np.float32)
    strip = np.concatenate([original, gap, poisoned, gap, difference], axis=1)
    buffer = io.BytesIO()
    plt.imsave(buffer, strip, format="png")
    return buffer.getvalue()


def _value_cell(row, column):
    """A figure as its mean over a second line holding ± its interval's half-width (and,
    against a reference, ✓ inside its interval or ✗ outside)."""
    value = row.get(column)
    if isinstance(value, float):
        half = row.get(column + "_ci")
        ci = f"<span class='ci'>± {half:.3f}</span>" if half is not None else ""
        return f"<td>{value:.3f}{stats.mark(row, column)}{ci}</td>"
    return f"<td>{html.escape(str(value)) if value is not None else ''}</td>"


def _attack_cell(row, strip):
    rank = f"{row['rank']}. " if row.get("rank") else ""
    tier = f" <small>tier {row['tier']}</small>" if row.get("tier") else ""
    image = ""
    if strip:
        image = (f"<img class='strip' height='{STRIP_HEIGHT}' title='original, poisoned copy, "
                 f"difference x10' alt='{html.escape(row['attack'])}: original, poisoned, "
                 f"difference x10' src='data:image/png;base64,"
                 f"{base64.b64encode(strip).decode()}'>")
    return (f"<td class='attack' title='{html.escape(row.get('threat', ''))}'>{rank}"
            f"<b>{html.escape(row['attack'])}</b>{tier}{image}</td>")


def leaderboard_table(board, strips):
    """The dataset's rows in one table that fits a laptop's width: the attack (rank, tier,
    thumbnails), its strength, its stealth, t-MAP after each defense, detection (AUROC,
    the target flagged in k of n seeds); every figure its mean over ± its interval."""
    after = [(c, c[len("t_map_after_"):]) for c in _defense_columns(board, "t_map_after_")]
    detect = [(c, c[len("auroc_"):]) for c in _defense_columns(board, "auroc_")] + [
        (c, "target flagged: " + c[len("target_flagged_"):])
        for c in _defense_columns(board, "target_flagged_")]
    groups = [("attack", [("attack", "rank. attack (tier), original | poisoned | x10")]),
              ("strength", list(STRENGTH)), ("stealth", list(STEALTH))]
    if after:
        groups.append(("t-MAP after each defense", after))
    if detect:
        groups.append(("detection", detect))
    top = "".join(f"<th class='group' colspan='{len(cols)}'>{html.escape(title)}</th>"
                  for title, cols in groups)
    heads = "".join(f"<th>{html.escape(h)}</th>" for _, cols in groups for _, h in cols)
    body = []
    for row in board["rows"]:
        css = "control" if row.get("control") else (
            "tier-odd" if (row.get("tier") or 0) % 2 else "")
        cells = [_attack_cell(row, strips.get(row.get("name", row["attack"])))]
        cells += [_value_cell(row, c) for _, cols in groups[1:] for c, _ in cols]
        body.append(f"<tr class='{css}'>{''.join(cells)}</tr>")
    return (f"<table><thead><tr>{top}</tr><tr>{heads}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def page(result, heatmaps, strips=None):
    """bench.json, {(dataset, prefix): PNG bytes} and {dataset: {attack: thumbnail}} ->
    bench.html, one static file."""
    strips = strips or {}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>badhash-tf backdoor "
             f"bench</title><style>{STYLE}</style></head><body>",
             "<h1>Backdoor bench</h1><p class='note'>Attacks ranked by <b>gain</b> (backdoor "
             "gain) = t-MAP minus the clean victim's t-MAP on the same triggered queries (a "
             "trigger the clean victim follows too is an adversarial example, not a "
             "backdoor). Every figure is a mean over seeds with, below it, the half-width of "
             "its 95% interval (Student's t); attacks whose intervals overlap share a tier "
             "(shaded alike). <i>none (clean)</i>: the clean reference victim, no trigger: "
             "read every defense's and detector's figures beside it. Thumbnails: an "
             "original, its poisoned copy (data-free attacks: a triggered query) and their "
             "difference x10.</p>"]
    if result.get("compare"):
        c = result["compare"]
        parts.append(f"<p class='note'>Against the reference {html.escape(c['source'])}: "
                     f"{c['inside']} figures inside its 95% interval (✓), {c['outside']} "
                     "outside (✗).</p>")
    for dataset, board in result["datasets"].items():
        reference = [r["clean_map_reference"] for r in board["rows"]
                     if isinstance(r.get("clean_map_reference"), float)]
        parts.append(f"<h2>{html.escape(dataset)}</h2><p>seeds "
                     f"{', '.join(map(str, board['seeds']))} (targets "
                     f"{', '.join(map(str, board['targets']))}); budget "
                     f"{board['budget']:g} dB; queries x{board['query_amplification']:g}"
                     + (f"; clean victim's MAP {reference[0]:.3f}" if reference else "")
                     + "</p>")
        parts.append(leaderboard_table(board, strips.get(dataset, {})))
        flagged = _defense_columns(board, "flagged_")
        if flagged:
            parts.append("<h3>Labels each detector flags, per seed</h3>" + _html_table(
                _shown(board["rows"]), ("attack",) + tuple(flagged)))
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
                io_utils.write_bytes(os.path.join(output_dir, name), png)
    strips = {dataset: {row.get("name", row["attack"]): thumbnail_strip(
        os.path.join(output_dir, row["samples"])) for row in board["rows"] if "samples" in row}
        for dataset, board in result["datasets"].items()}
    io_utils.write_text(os.path.join(output_dir, "bench.html"), page(result, heatmaps, strips))
