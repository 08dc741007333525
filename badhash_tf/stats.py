"""Aggregates over seeds: a mean with its 95% confidence interval (Student's t over the
seeds: mean +- t(0.975, n - 1) * sd / sqrt(n), sd with n - 1), and tiers of entries whose
intervals overlap, so a ranking does not order noise."""

import math

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
METHOD = "Student's t over seeds"


def interval(values, confidence=CONFIDENCE):
    """Values over seeds -> {"mean", "half_width", "lo", "hi", "n"}; with one value the
    half-width is None (no spread to estimate) and lo = hi = the value."""
    values = np.asarray([float(v) for v in values], np.float64)
    if not len(values):
        raise ValueError("an interval needs at least one value")
    n, mean = len(values), float(values.mean())
    if n == 1:
        return {"mean": mean, "half_width": None, "lo": mean, "hi": mean, "n": 1}
    sd = float(values.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return {"mean": mean, "half_width": half, "lo": mean - half, "hi": mean + half, "n": n}


def tiers(entries, key):
    """Entries (dicts) holding `key` (a mean) and `key` + "_ci" (its interval's half-width,
    None for one seed) -> {id(entry): tier} with tier 1 the best. Walking down the ranking
    by mean, an entry joins the current tier while its interval reaches the tier leader's
    (its upper bound at least the leader's lower bound), else it leads the next tier; with
    one seed an interval is its mean alone. Entries without the figure get no tier."""
    bounds = lambda e: (e[key] - (e.get(key + "_ci") or 0.0), e[key] + (e.get(key + "_ci")
                                                                       or 0.0))
    ranked = sorted((e for e in entries if isinstance(e.get(key), float)),
                    key=lambda e: -e[key])
    placed, tier, leader = {}, 0, None
    for entry in ranked:
        if leader is None or bounds(entry)[1] < bounds(leader)[0]:
            tier, leader = tier + 1, entry
        placed[id(entry)] = tier
    return placed


def format_interval(mean, half_width, digits=3):
    """"0.400 +- 0.497" (or "0.400" without a half-width)."""
    if mean is None:
        return ""
    text = f"{mean:.{digits}f}"
    return text if half_width is None else f"{text} ± {half_width:.{digits}f}"


def mark(row, figure):
    """" ✓" / " ✗": `figure` of a row marked by compare_rows lies inside / outside the
    reference's interval; "" when unmarked."""
    found = row.get("compare", {}).get(figure)
    return "" if not found else " ✓" if found["inside"] else " ✗"


def inside(value, mean, half_width, tolerance=5e-4):
    """Whether `value` lies in the interval mean +- half_width (a reference with one seed,
    no half-width, is a point: within `tolerance`, the printed digits)."""
    half = half_width if half_width is not None else 0.0
    return bool(mean - half - tolerance <= value <= mean + half + tolerance)


def compare_rows(rows, reference, keys, figures):
    """Each row of `rows` marked against the reference row with the same `keys` values:
    for every figure both have, {"reference", "reference_ci", "inside"} under
    row["compare"][figure] -> the number of (inside, outside) marks. Rows without a
    reference row are left unmarked."""
    index = {tuple(r.get(k) for k in keys): r for r in reference}
    counts = [0, 0]
    for row in rows:
        other = index.get(tuple(row.get(k) for k in keys))
        if other is None:
            continue
        marks = {}
        for figure in figures:
            if isinstance(row.get(figure), float) and isinstance(other.get(figure), float):
                ok = inside(row[figure], other[figure], other.get(figure + "_ci"))
                marks[figure] = {"reference": other[figure],
                                 "reference_ci": other.get(figure + "_ci"), "inside": ok}
                counts[0 if ok else 1] += 1
        row["compare"] = marks
    return tuple(counts)
