"""The backdoor bench as a grid of cells: per dataset and seed every attack is a cell of one
attack run in OUT/<dataset>/seed_N (shared surrogate, LabCLN, reference victim; one
directory per attack), and every (attack, defense) a cell in OUT/<dataset>/seed_N/defenses.
`--shard=i/N` runs every N-th cell (a defense cell first makes its attack's cell when
missing, waiting for another shard making it); a run without it gathers what is finished
into each seed's report and defenses, then the leaderboard: per dataset each attack's
figures as means over seeds with their 95% intervals, ranked by backdoor_gain, attacks
whose intervals overlap put in one tier.
"""

import json
import os

from badhash_tf import io_utils, registry, stats
from badhash_tf.engine import cells as cells_module
from badhash_tf.engine import defenses as defense_engine
from badhash_tf.engine.experiment import finished, report, run_seed
from badhash_tf.engine.layout import BADHASH, DEFENSE_JSON, SAMPLES, RunLayout
from badhash_tf.engine.plan import check_attacks, make_plan

MEANS = ("t_map", "t_map_clean_victim", "backdoor_gain", "clean_map", "clean_map_reference",
         "psnr", "psnr_min", "ssim", "query_psnr_min")


def check_bench_attacks(names):
    """Raises ValueError naming --attacks for an unknown or repeated attack, or without
    badhash (the attack run's own, which every bench run holds)."""
    check_attacks("--attacks", names)
    if BADHASH not in names:
        raise ValueError(f"--attacks={','.join(names)}: include {BADHASH} (every bench run "
                         "is an attack run of BadHash, beside which the others run)")


def seed_layout(output_dir, dataset, seed):
    return RunLayout(output_dir).dataset(dataset).seed(seed)


class Bench:
    """A bench checked before any work: per (dataset, seed) the attack Plan and the Stages
    of its defense cells."""

    def __init__(self, configs, seeds, defenses, defense_config, output_dir, data=None,
                 overwrite=None):
        """configs {dataset name: ExperimentConfig whose attack.baselines are the attacks
        beside badhash}; `data` {dataset name: DataView} to reuse."""
        if defenses:
            defense_engine.check_defenses(defenses)
        self.defenses, self.defense_config = tuple(defenses), defense_config
        self.output_dir = output_dir
        self.plans = {}
        for dataset, config in configs.items():
            attacks = (BADHASH,) + tuple(config.attack.baselines)
            check_bench_attacks(attacks)
            view = (data or {}).get(dataset)
            for seed in seeds:
                plan = make_plan(config.with_seed(seed),
                                 seed_layout(output_dir, dataset, seed).root, attacks,
                                 data=view, overwrite=overwrite, flag="--attacks")
                view = plan.data
                self.plans[(dataset, seed)] = plan
        self.defense_stages = {}
        for key, plan in self.plans.items():
            for cell in plan.attacks:
                for name in self.defenses:
                    self.defense_stages[(key, cell.name, name)] = defense_engine.defense_stage(
                        defense_config, name, plan.layout.defense(cell.name, name), {})
        # defense results made with other settings: refused now (their inputs, the attacks'
        # results, are compared when each runs)
        cells_module.check(self.defense_stages.values(), output_dir,
                           next(iter(self.plans.values())).config.train.overwrite
                           if overwrite is None else overwrite)

    def grid(self):
        """Every cell in its fixed order: ("attack", (dataset, seed), AttackCell), then
        ("defense", (dataset, seed), attack name, defense name)."""
        attacks = [("attack", key, cell) for key, plan in self.plans.items()
                   for cell in plan.attacks]
        defenses = [("defense",) + key for key in self.defense_stages]
        return attacks + defenses

    def run(self, runner, shard=None):
        """This shard's cells (every cell without one)."""
        mine = cells_module.shard_of(self.grid(), shard)
        for key, plan in self.plans.items():
            own = [c for kind, k, c, *_ in mine if kind == "attack" and k == key]
            defended = {c[2] for c in mine if c[0] == "defense" and c[1] == key}
            needed = own + [c for c in plan.attacks if c.name in defended and c not in own
                            and cells_module.decide(c.stage).state != cells_module.FINISHED]
            run_seed(plan, runner, needed)
            keys = [(cell.directory, c[3]) for c in mine if c[0] == "defense" and c[1] == key
                    for cell in plan.attacks if cell.name == c[2]]
            if keys:
                dplan = self.defense_plan(plan, sorted(defended))
                defense_engine.run_defenses(dplan, runner, keys, data=plan.data)

    def defense_plan(self, plan, attacks=None):
        """The defense cells of one (dataset, seed) on its finished `attacks` (default
        all); their settings were checked when the bench was planned."""
        names = attacks or [cell.name for cell in plan.attacks]
        return defense_engine.plan_defenses(
            plan.layout.root, self.defenses, self.defense_config, plan.layout.defenses,
            only=names, overwrite=True)

    def write_seed_reports(self):
        """Each finished (dataset, seed): report.json, and defenses.json when every defense
        cell is finished, assembled from the cells on disk. Returns (layout, report,
        defenses or None) per seed, for the renderer."""
        written = []
        for plan in self.plans.values():
            if not finished(plan):
                continue
            result = report(plan)
            io_utils.write_json(plan.layout.report_json, result)
            defended = None
            if self.defenses and all(os.path.exists(os.path.join(
                    plan.layout.defense(c.name, d), DEFENSE_JSON))
                    for c in plan.attacks for d in self.defenses):
                defended = defense_engine.gather(self.defense_plan(plan))
                io_utils.write_json(os.path.join(plan.layout.defenses, "defenses.json"),
                                    defended)
            written.append((plan.layout, result, defended))
        return written

    def missing(self):
        """How many cells are not finished."""
        return sum(cells_module.decide(s).state != cells_module.FINISHED
                   for s in [c.stage for p in self.plans.values() for c in p.attacks] +
                   list(self.defense_stages.values()))


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
                defended = os.path.join(layout.defenses, "defenses.json")
                found.setdefault(dataset, []).append(
                    (_load(layout.report_json),
                     _load(defended) if os.path.exists(defended) else None))
    return found


def _attack_figures(report_, name):
    """One attack's undefended figures from an attack run's report."""
    figures = report_ if name == BADHASH else report_["baselines"][name]
    return {**figures, "clean_map_reference": report_["clean_map_reference"]}


def _defended(defended, name):
    """{defense: figures} of one attack in defenses.json ({} when not defended)."""
    return (defended or {}).get("variants", {}).get(name, {})


def _interval_into(row, column, values):
    """row[column] = the mean of `values`, row[column + "_ci"] its 95% half-width (None
    for one seed), row[column + "_n"] how many."""
    found = stats.interval(values)
    row[column], row[column + "_ci"], row[column + "_n"] = (found["mean"],
                                                           found["half_width"], found["n"])


def summarise(runs):
    """One dataset's runs [(report, defenses)] -> leaderboard rows (each figure's mean over
    seeds with its interval) with the defenses' t-MAP, detection AUROC and flagged labels,
    ranked by backdoor_gain and tiered by its intervals; a control (registry CONTROL: the
    clean reference victim, "none (clean)") is not ranked and comes last, the row every
    detector's figures are read beside."""
    names = [BADHASH] + [n for n in registry.attacks() if n != BADHASH and all(
        n in r["baselines"] for r, _ in runs)]
    order = registry.defenses()
    defenses = sorted({d for _, dd in runs if dd for d in dd["defenses"]},
                      key=lambda d: order.index(d) if d in order else len(order))
    rows = []
    for name in names:
        figures = [_attack_figures(r, name) for r, _ in runs]
        threat = registry.attack(name).threat if name in registry.attacks() else ""
        row = {"attack": name, "name": name, "threat": threat, "seeds": len(figures)}
        if threat == registry.CONTROL:
            row.update(attack=f"none ({name})", control=True)
        for k in MEANS:
            if all(k in f for f in figures):
                _interval_into(row, k, [f[k] for f in figures])
        for d in defenses:
            done = [_defended(dd, name).get(d, {}) for _, dd in runs]
            for key, column in (("t_map", f"t_map_after_{d}"), ("clean_map",
                                                               f"clean_map_after_{d}"),
                                ("auroc", f"auroc_{d}")):
                values = [x[key] for x in done if key in x]
                if values:
                    _interval_into(row, column, values)
            if any("not_applicable" in x for x in done):
                row[f"t_map_after_{d}"] = "n/a"
            verdicts = [x for x in done if "flagged" in x]
            if verdicts:
                row[f"target_flagged_{d}"] = (
                    f"{sum(v['target_flagged'] for v in verdicts)}/{len(verdicts)}")
                row[f"flagged_{d}"] = "; ".join(
                    ",".join(map(str, v["flagged"])) or "none" for v in verdicts)
        rows.append(row)
    ranked = [r for r in rows if not r.get("control")]
    for rank, row in enumerate(sorted(ranked, key=lambda r: -r.get("backdoor_gain", -9)), 1):
        row["rank"] = rank
    tiers = stats.tiers(ranked, "backdoor_gain")
    for row in rows:
        row["tier"] = tiers.get(id(row))
        row.setdefault("rank", None)
    rows.sort(key=lambda r: (r.get("control", False), r["rank"] or 0))
    first = runs[0][0]
    return {"rows": rows, "defenses": defenses, "seeds": [r["seed"] for r, _ in runs],
            "targets": [r["target_label"] for r, _ in runs],
            "poison_count": [r["poison_count"] for r, _ in runs],
            "budget": first["config"]["gan"]["psnr_budget"],
            "query_amplification": first["config"]["attack"]["query_amplification"],
            "interval": f"95% interval, {stats.METHOD}"}


def leaderboard(output_dir):
    """bench.json's content: {"datasets": {dataset: summarise(...)}} of everything under
    `output_dir`; each row names its first seed's samples.npz (relative to `output_dir`,
    when there is one) for the page's thumbnails."""
    boards = {d: summarise(runs) for d, runs in gather(output_dir).items()}
    for dataset, board in boards.items():
        for row in board["rows"]:
            path = os.path.join(dataset, f"seed_{board['seeds'][0]}", row["name"],
                                SAMPLES)
            if os.path.exists(os.path.join(output_dir, path)):
                row["samples"] = path
    return {"datasets": boards}



COMPARED = ("t_map", "t_map_clean_victim", "backdoor_gain", "clean_map")


def load_reference(path):
    """A reference bench.json (or its directory, e.g. in results/) -> its content. Raises
    ValueError naming --compare_with."""
    reference, path = io_utils.read_result(path, "bench.json", "datasets")
    return {**reference, "source": path}


def compare(board, reference):
    """Marks every figure of `board` (bench.json's content) that the reference's row of
    the same dataset and attack also has (COMPARED and each defense's t-MAP and AUROC)
    inside or outside the reference's 95% interval (stats.compare_rows) -> the board with
    "compare": {source, inside, outside}."""
    inside = outside = 0
    for dataset, mine in board["datasets"].items():
        theirs = reference["datasets"].get(dataset)
        if not theirs:
            continue
        columns = COMPARED + tuple(c for r in mine["rows"] for c in r if c.startswith((
            "t_map_after_", "auroc_")) and not c.endswith(("_ci", "_n")))
        found = stats.compare_rows(mine["rows"], theirs["rows"], ("attack",),
                                   tuple(dict.fromkeys(columns)))
        inside, outside = inside + found[0], outside + found[1]
    board["compare"] = {"source": reference["source"], "inside": inside, "outside": outside}
    return board
