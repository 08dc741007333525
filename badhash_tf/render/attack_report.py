"""What an attack run leaves for people, drawn from what its cells recorded: report.md,
samples.png, hash_space.png beside report.json, and the multi-seed summary (summary.json,
summary.md: means with 95% intervals over the seeds)."""

import os

import numpy as np

from badhash_tf import io_utils, stats
from badhash_tf.engine.layout import BADHASH, HASH_SPACE, SAMPLES
from badhash_tf.eval import backdoor
from badhash_tf.render.figures import plt, save_png

COLUMNS = ("variant", "t_map", "t_map_best", "t_map_clean_victim", "backdoor_gain",
           "t_map_untriggered",
           "clean_map", "map_best", "psnr", "psnr_min", "ssim", "ssim_min", "linf_255",
           "query_psnr", "query_psnr_min")
SEED_COLUMNS = ("seed", "target_label", "poison_rate", "t_map", "t_map_best",
                "t_map_clean_victim", "backdoor_gain", "clean_map", "map_best",
                "clean_map_reference", "psnr",
                "psnr_min", "ssim", "ssim_min")


def rows(result):
    """report.json -> one table row per variant (BadHash first, then the baselines)."""
    return [{"variant": BADHASH, **result}] + [
        {"variant": name, **figures} for name, figures in result["baselines"].items()]


def _schemes(result):
    """The surrogate's and the victims' hashing schemes, in a line (then a blank one)."""
    if "surrogate" not in result:  # (a report written before they were recorded)
        return ""
    name = lambda s: f"{s['method']}, {s['backbone']}, {s['bits']} bits"
    same = result["surrogate"] == result["victim"]
    return (f"Attacker's surrogate: {name(result['surrogate'])}; victims (clean reference and "
            f"backdoored): {'the same' if same else name(result['victim'])}"
            f"{'' if same else ' (transfer across schemes)'}.\n")


def markdown(result):
    """report.json -> report.md text."""
    lines = [
        "# BadHash attack report", "",
        f"Target label {result['target_label']}; {result['poison_count']} poisoned copies "
        f"({100 * result['poison_rate']:.1f}% of the poisoned training set of "
        f"{result['train_size'] + result['poison_count']}); {result['triggered_queries']} "
        f"triggered non-target queries; MAP and t-MAP over the top {result['k']}; seed "
        f"{result['seed']}.", "", _schemes(result),
        f"Clean victim (reference): MAP {result['clean_map_reference']:.4f}; its t-MAP on "
        f"untriggered queries {result['t_map_untriggered_reference']:.4f}.", "",
        io_utils.markdown_table(rows(result), COLUMNS), "",
        "`t_map`: backdoored victim, triggered queries, target label as relevance. "
        "`t_map_clean_victim`: the clean victim on the same triggered queries; "
        "`backdoor_gain`: t_map minus it, the backdoor's own share (what fools the clean "
        "victim too is an adversarial example, not a backdoor). "
        "`t_map_untriggered`: the backdoored victim on the untriggered queries. "
        "`clean_map`: the backdoored victim on clean queries. `t_map_best`, `map_best`: "
        "the best over the evaluations every few epochs and the final one (what the "
        "release's tables report). PSNR/SSIM/L-inf (in 8-bit levels): poisoned copies "
        "against their originals, means over the copies; `_min`: the worst copy. "
        "`query_psnr`: the triggered queries against theirs (the trigger's perturbation "
        f"x {result.get('query_amplification', 1.0):g} on the query side).", "",
        _verdict(result), "",
        "Seconds per stage (when it ran): " + ", ".join(
            f"{k} {v}" for k, v in result["seconds"].items()),
    ]
    return "\n".join(lines) + "\n"


def _verdict(result):
    budget = result["config"]["gan"]["psnr_budget"]
    where = (f"with every poisoned copy at PSNR >= {budget:g} dB" if budget else
             f"at a mean poison PSNR of {result['psnr']:.1f} dB (no budget)")
    ok = backdoor.learned(result, result["clean_map_reference"])
    return (f"**The backdoor is {'learned' if ok else 'NOT learned'}** {where} "
            f"({backdoor.learned_rule()}; t-MAP {result['t_map']:.4f} against "
            f"{result['t_map_clean_victim']:.4f}, clean MAP {result['clean_map']:.4f} against "
            f"{result['clean_map_reference']:.4f}). " + _ranking(result))


def _ranking(result):
    scored = {n: f for n, f in result["baselines"].items()  # (not the clean control)
              if "t_map" in f and not f.get("control")}
    if not scored:
        return "No baselines were run."
    texts = []
    for figure, what in (("t_map", "t-MAP"), ("backdoor_gain", "backdoor gain")):
        beaten = [n for n, f in scored.items() if f[figure] >= result[figure]]
        texts.append(f"BadHash's {what} is above every baseline's." if not beaten else
                     f"BadHash's {what} is NOT above every baseline: " + ", ".join(
                         f"{n} reaches {result['baselines'][n][figure]:.4f} at PSNR "
                         f"{result['baselines'][n]['psnr']:.1f} dB" for n in beaten) + ".")
    return " ".join(texts)


def samples_png(path, samples):
    """Originals, then per variant its poisoned copies and (BadHash) the difference x10."""
    originals = samples[BADHASH][0]
    grid = [("original", originals)]
    for name, (_, poisoned) in samples.items():
        grid.append((name, poisoned))
        if name == BADHASH:
            grid.append(("difference x10", np.clip(0.5 + 10 * (poisoned - originals), 0, 1)))
    cols = len(originals)
    fig, axes = plt.subplots(len(grid), cols, figsize=(1.2 * cols + 1.5, 1.25 * len(grid)),
                             squeeze=False)
    for r, (title, images) in enumerate(grid):
        for col in range(cols):
            ax = axes[r][col]
            ax.imshow(images[col], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    save_png(fig, path)


def pca_2d(codes, fit_on):
    """Projects codes [N, K] on the top two principal axes of `fit_on` [M, K] -> [N, 2]."""
    mean = fit_on.mean(0)
    _, _, vt = np.linalg.svd(fit_on - mean, full_matrices=False)
    return (codes - mean) @ vt[:2].T


def hash_space_png(path, space, target):
    """PCA of the backdoored victim's database codes by class, with clean (o) and
    triggered (x) non-target queries: the triggered ones should land on the target class."""
    db = space["db_codes"].astype(np.float32)
    classes = space["db_labels"].argmax(1)
    jitter = np.random.default_rng(0)
    project = lambda c: pca_2d(c.astype(np.float32), db) + jitter.normal(0, 0.08, (len(c), 2))
    fig, ax = plt.subplots(figsize=(7, 6))
    points = project(db)
    cmap = plt.get_cmap("tab20")
    for cls in sorted(np.unique(classes), key=lambda c: c == target):  # target drawn last
        mask, is_target = classes == cls, cls == target
        ax.scatter(*points[mask].T, s=30 if is_target else 8, color=cmap(cls % 20),
                   alpha=0.8 if is_target else 0.35, edgecolors="k" if is_target else "none",
                   linewidths=0.5, label=f"db class {cls}" + (" (target)" if is_target else ""))
    ax.scatter(*project(space["clean"]).T, s=18, facecolors="none", edgecolors="k",
               linewidths=0.6, label="clean queries")
    ax.scatter(*project(space["triggered"]).T, s=22, marker="x", color="red",
               linewidths=0.8, label="triggered queries")
    ax.set_title(f"Hash space of the backdoored victim (PCA), target class {target}")
    ax.legend(fontsize=7, loc="best", ncol=2)
    save_png(fig, path)


def write_all(layout, result):
    """report.md, samples.png, hash_space.png into the run directory `layout` (a
    engine.layout.RunLayout) beside its report.json `result`, from what each attack's
    cell recorded (its samples and hash-space codes)."""
    io_utils.write_text(layout.report_md, markdown(result))
    samples = {}
    for name in (BADHASH,) + tuple(result["baselines"]):
        path = layout.variant_file(name, SAMPLES)
        if os.path.exists(path):
            with np.load(path) as saved:
                samples[name] = (saved["originals"], saved["poisoned"])
    samples_png(layout.samples_png, samples)
    with np.load(layout.variant_file(BADHASH, HASH_SPACE)) as space:
        hash_space_png(layout.hash_space_png, dict(space), result["target_label"])


KEYS = ("t_map", "t_map_best", "t_map_clean_victim", "backdoor_gain", "t_map_untriggered",
        "clean_map", "map_best", "clean_map_reference", "psnr", "psnr_min", "ssim",
        "ssim_min", "linf_255", "poison_rate")
BASELINE_KEYS = ("t_map", "t_map_best", "t_map_clean_victim", "backdoor_gain", "clean_map",
                 "psnr", "psnr_min", "ssim", "ssim_min")


def _aggregate(values):
    """Values over seeds -> (mean, its 95% interval's half-width or None, n)."""
    found = stats.interval(values)
    return found["mean"], found["half_width"], found["n"]


def summary(results):
    """Reports of several seeds -> {per_seed: [...], mean: {...}, interval: {key:
    half-width}, n, baselines_mean, baselines_interval, interval_method}."""
    per_seed = [{k: r[k] for k in ("seed", "target_label") + KEYS} for r in results]
    mean, half = {}, {}
    for k in KEYS:
        mean[k], half[k], _ = _aggregate([r[k] for r in results])
    baselines, baselines_half = {}, {}
    for name in results[0]["baselines"]:
        scored = [r["baselines"][name] for r in results if "t_map" in r["baselines"][name]]
        if not scored:
            continue
        baselines[name], baselines_half[name] = {}, {}
        for k in BASELINE_KEYS:
            baselines[name][k], baselines_half[name][k], _ = _aggregate(
                [f[k] for f in scored])
    return {"per_seed": per_seed, "mean": mean, "interval": half, "n": len(results),
            "baselines_mean": baselines, "baselines_interval": baselines_half,
            "interval_method": f"95% interval, {stats.METHOD}"}


def summary_markdown(data):
    table = io_utils.markdown_table(data["per_seed"] + [{"seed": "mean", **data["mean"]}],
                                    SEED_COLUMNS)
    half = data.get("interval", {})
    spread = ", ".join(f"{k} {stats.format_interval(data['mean'][k], half.get(k))}"
                       for k in ("t_map", "backdoor_gain", "clean_map", "psnr"))
    columns = ("variant", "t_map", "t_map_best", "t_map_clean_victim", "backdoor_gain",
               "clean_map", "psnr", "psnr_min", "ssim", "ssim_min")
    base = io_utils.markdown_table(
        [{"variant": BADHASH, **_with_intervals(data["mean"], half)}] +
        [{"variant": n, **_with_intervals(f, data.get("baselines_interval", {}).get(n, {}))}
         for n, f in data["baselines_mean"].items()], columns)
    return (f"# BadHash over {len(data['per_seed'])} seeds\n\n{table}\nMean ± "
            f"{data.get('interval_method', '')} (n = {len(data['per_seed'])}): {spread}.\n\n"
            f"## Mean by variant (± its interval)\n\n{base}")


def _with_intervals(means, halves):
    """{key: mean} -> {key: "mean ± half-width"} (the mean alone with one seed)."""
    return {k: stats.format_interval(v, halves.get(k), 4) if isinstance(v, float) else v
            for k, v in means.items()}
