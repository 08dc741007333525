"""The backdoor bench: every attack on one or more datasets and seeds, then every defense
on each, gathered into one leaderboard.

Per (dataset, seed) the attacks are one pipeline run in OUT/<dataset>/seed_N (shared
surrogate, LabCLN, reference victim; one directory per attack), skipped once its
report.json holds every attack asked for; the defenses go to OUT/<dataset>/seed_N/defenses,
each (attack, defense) skipped once its defense.json exists. OUT/bench.json, bench.md and
bench.html (one static page, heatmaps embedded) gather every dataset found under OUT.
"""

import base64
import dataclasses
import html
import io
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from badhash_tf import choices, io_utils  # noqa: E402
from badhash_tf.attack import ciba, experiment  # noqa: E402
from badhash_tf.attack.layout import BASELINE_VARIANT, RunLayout  # noqa: E402
from badhash_tf.defense import harness  # noqa: E402

ATTACKS = ((BASELINE_VARIANT, "badhash_anchor") + ciba.VARIANTS +
           ("patch", "sig", "narcissus", "darkhash"))
THREAT = {"darkhash": "data-free (trained model)"}  # the others poison training data
MEANS = ("t_map", "t_map_clean_victim", "backdoor_gain", "clean_map", "clean_map_reference",
         "psnr", "psnr_min", "ssim", "query_psnr_min")
COLUMNS = ("rank", "attack", "threat", "seeds") + MEANS
DETECTORS = tuple(harness.INSPECTIONS) + ("strip",)


def check_attacks(names):
    """Raises ValueError naming --attacks for an unknown attack, or without badhash (the
    pipeline's own variant, which every bench run holds)."""
    choices.check_choices("--attacks", names, ATTACKS)
    if BASELINE_VARIANT not in names:
        raise ValueError(f"--attacks={','.join(names)}: include {BASELINE_VARIANT} (every "
                         "bench run is a pipeline run, whose own attack it is)")


def seed_dir(output_dir, dataset, seed):
    return os.path.join(output_dir, dataset, f"seed_{seed}")


def check_bench(configs, seeds, defenses, output_dir, strategy):
    """Every dataset's splits and flags, and each (dataset, seed) directory's stages against
    its record, before any work. Raises ValueError naming the flag or stage."""
    if defenses:
        harness.check_defenses(defenses)
    for dataset, config in configs.items():
        check_attacks((BASELINE_VARIANT,) + tuple(config.attack.baselines))
        for seed in seeds:
            experiment.check_run(with_seed(config, seed), seed_dir(output_dir, dataset, seed),
                                 strategy)


def with_seed(config, seed):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))


def attack_cell(config, directory, strategy):
    """The attacks of one (dataset, seed): report.json when it holds every one of them and
    each still has its variant.json, else the pipeline run (finished stages restored, not
    retrained) -> the report."""
    layout = RunLayout(directory)
    wanted = set(config.attack.baselines)
    finished = all(os.path.exists(os.path.join(layout.variant(name), experiment.VARIANT_JSON))
                   for name in wanted | {BASELINE_VARIANT})  # (none moved aside since)
    if finished and os.path.exists(layout.report_json):
        with open(layout.report_json, encoding="utf-8") as f:
            report = json.load(f)
        if wanted <= set(report["baselines"]):
            logging.info("%s: every attack finished earlier, skipped (%s)", directory,
                         layout.report_json)
            return report
    return experiment.run_experiment(config, directory, strategy)


def run_bench(configs, seeds, defenses, defense_config, output_dir, strategy, record=None):
    """Every attack, then every defense, per dataset ({name: ExperimentConfig whose
    attack.baselines are the attacks beside badhash}) and seed, into `output_dir`; writes
    bench.json, bench.md, bench.html and the heatmaps -> the leaderboard."""
    start = time.time()
    check_bench(configs, seeds, defenses, output_dir, strategy)
    for dataset, config in configs.items():
        for seed in seeds:
            directory, tick = seed_dir(output_dir, dataset, seed), time.time()
            logging.info("bench %s seed %d: attacks %s", dataset, seed,
                         ", ".join((BASELINE_VARIANT,) + tuple(config.attack.baselines)))
            attack_cell(with_seed(config, seed), directory, strategy)
            if defenses:
                harness.run_defenses(directory, defenses, defense_config,
                                     os.path.join(directory, "defenses"), strategy)
            logging.info("bench %s seed %d done in %.0f s", dataset, seed, time.time() - tick)
    board = leaderboard(output_dir)
    board.update(seconds=round(time.time() - start, 2), **(record or {}))
    write_all(output_dir, board)
    return board


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def gather(output_dir):
    """{dataset: [(report, defenses or None) per seed]} from every OUT/<dataset>/seed_N."""
    found = {}
    for dataset in sorted(os.listdir(output_dir)):
        root = os.path.join(output_dir, dataset)
        if not os.path.isdir(root):
            continue
        for seed in sorted(os.listdir(root)):
            layout = RunLayout(os.path.join(root, seed))
            if seed.startswith("seed_") and os.path.exists(layout.report_json):
                defended = os.path.join(layout.root, "defenses", "defenses.json")
                found.setdefault(dataset, []).append(
                    (_load(layout.report_json),
                     _load(defended) if os.path.exists(defended) else None))
    return found


def _attack_figures(report, name):
    """One attack's undefended figures from a pipeline report."""
    figures = report if name == BASELINE_VARIANT else report["baselines"][name]
    return {**figures, "clean_map_reference": report["clean_map_reference"]}


def _defended(defended, name):
    """{defense: figures} of one attack in defenses.json ({} when not defended)."""
    return (defended or {}).get("variants", {}).get(name, {})


def summarise(runs):
    """One dataset's runs [(report, defenses)] -> leaderboard rows (mean over seeds) with
    the defenses' t-MAP, detection AUROC and Neural Cleanse's verdicts, ranked by
    backdoor_gain."""
    names = [BASELINE_VARIANT] + [n for n in ATTACKS[1:] if all(
        n in r["baselines"] for r, _ in runs)]
    defenses = sorted({d for _, dd in runs if dd for d in dd["defenses"]},
                      key=harness.DEFENSES.index)
    rows = []
    for name in names:
        figures = [_attack_figures(r, name) for r, _ in runs]
        row = {"attack": name, "threat": THREAT.get(name, "clean-label poisoning"),
               "seeds": len(figures)}
        row.update({k: float(np.mean([f[k] for f in figures])) for k in MEANS
                    if all(k in f for f in figures)})
        for d in defenses:
            done = [_defended(dd, name).get(d, {}) for _, dd in runs]
            for key, column in (("t_map", f"t_map_after_{d}"), ("clean_map",
                                                               f"clean_map_after_{d}"),
                                ("auroc", f"auroc_{d}")):
                values = [x[key] for x in done if key in x]
                if values:
                    row[column] = float(np.mean(values))
            if any("not_applicable" in x for x in done):
                row[f"t_map_after_{d}"] = "n/a"
            if d == "neural_cleanse":
                verdicts = [x for x in done if "flagged" in x]
                if verdicts:
                    row["cleanse_target_flagged"] = (
                        f"{sum(v['target_flagged'] for v in verdicts)}/{len(verdicts)}")
                    row["cleanse_flagged"] = "; ".join(
                        ",".join(map(str, v["flagged"])) or "none" for v in verdicts)
        rows.append(row)
    for rank, row in enumerate(sorted(rows, key=lambda r: -r.get("backdoor_gain", -9)), 1):
        row["rank"] = rank
    rows.sort(key=lambda r: r["rank"])
    first = runs[0][0]
    return {"rows": rows, "defenses": defenses, "seeds": [r["seed"] for r, _ in runs],
            "targets": [r["target_label"] for r, _ in runs],
            "poison_count": [r["poison_count"] for r, _ in runs],
            "budget": first["config"]["gan"]["psnr_budget"],
            "query_amplification": first["config"]["attack"]["query_amplification"]}


def leaderboard(output_dir):
    """bench.json's content: {"datasets": {dataset: summarise(...)}} of everything under
    `output_dir`."""
    return {"datasets": {d: summarise(runs) for d, runs in gather(output_dir).items()}}


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
             "(lower = defended), detection AUROC (0.5 = chance) and Neural Cleanse's "
             "verdict (target flagged in k of n seeds).", ""]
    for dataset, board in result["datasets"].items():
        lines += [f"## {dataset}", "",
                  f"Seeds {', '.join(map(str, board['seeds']))} (targets "
                  f"{', '.join(map(str, board['targets']))}, "
                  f"{', '.join(map(str, board['poison_count']))} poisoned copies); "
                  f"budget {board['budget']:g} dB (0 = none), queries "
                  f"x{board['query_amplification']:g} (CIBA and DarkHash: their patch alone).",
                  "", io_utils.markdown_table(board["rows"], COLUMNS)]
        after = _defense_columns(board, "t_map_after_")
        if after:
            lines += ["### t-MAP after each defense", "", io_utils.markdown_table(
                board["rows"], ("attack", "t_map") + tuple(after))]
        detect = _defense_columns(board, "auroc_")
        if detect or any("cleanse_flagged" in r for r in board["rows"]):
            lines += ["### Detection", "", io_utils.markdown_table(
                board["rows"], ("attack",) + tuple(detect) + (
                    "cleanse_target_flagged", "cleanse_flagged"))]
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
             "follows too is an adversarial example, not a backdoor). Means over seeds.</p>"]
    for dataset, board in result["datasets"].items():
        parts.append(f"<h2>{html.escape(dataset)}</h2><p>seeds "
                     f"{', '.join(map(str, board['seeds']))}; budget {board['budget']:g} dB; "
                     f"queries x{board['query_amplification']:g}</p>")
        columns = COLUMNS + tuple(_defense_columns(board, "t_map_after_")) + tuple(
            _defense_columns(board, "auroc_")) + ("cleanse_target_flagged", "cleanse_flagged")
        parts.append(_html_table(board["rows"], columns))
        for prefix, title in HEATMAPS:
            png = heatmaps.get((dataset, prefix))
            if png:
                parts.append(f"<p><img alt='{html.escape(title)}' src='data:image/png;base64,"
                             f"{base64.b64encode(png).decode()}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_all(output_dir, result):
    """bench.json, bench.md, bench.html and one heatmap PNG per dataset and figure."""
    io_utils.write_json(os.path.join(output_dir, "bench.json"), result)
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
