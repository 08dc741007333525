"""The paper's experiments as grids of cells over seeds: transferability (the attacker's
surrogate of one hashing scheme, the victim of another), code length, the number of
poisoned copies, and the ablations. A grid is a list of GridCells, each a run of BadHash
(or, for the ablations, of its variants) with its own config in DIR/seed_N/<cell>/; a
shared stage that two cells of a seed would make alike (the same fingerprint: e.g. the
HashNet surrogate of every HashNet-to-X cell, the reference victim of every X-to-CSQ cell)
is made once and linked, and a generator two cells would train alike is trained once
(attack/badhash.py). Every figure is summarised as a mean over seeds with its 95% interval.
"""

import dataclasses
import json
import os

from badhash_tf import io_utils, stats
from badhash_tf.config import BACKBONES, METHODS, replace_in
from badhash_tf.engine import cells as cells_module
from badhash_tf.engine.experiment import run_seed
from badhash_tf.engine.layout import BADHASH, VARIANT_JSON, RunLayout
from badhash_tf.engine.plan import DataView, make_plan, target_images
from badhash_tf.engine.variants import load_variant

GRIDS = ("transfer", "bits", "poison", "ablation")
ABLATIONS = (BADHASH, "no_labcln", "no_hash_loss")
# poison counts by name: shares of the target class's training images, or a count
POISON_SHARES = {"quarter": 0.25, "half": 0.5, "all": 1.0}
FIGURES = ("t_map", "t_map_clean_victim", "backdoor_gain", "clean_map", "clean_map_reference",
           "psnr", "ssim", "poison_count")


@dataclasses.dataclass(frozen=True)
class GridCell:
    """One cell of a grid: its directory name, the settings it varies (for tables), the
    config it runs with, and the attacks it runs."""
    name: str
    axes: dict
    config: object
    attacks: tuple = (BADHASH,)


def with_schemes(config, surrogate, victim):
    """`config` with the attacker's surrogate and the victims of the given schemes ({field:
    value} over method, backbone, bits; unset fields keep the config's): the victims' in
    `hashing`, the surrogate's recorded in the attack section where it differs."""
    base = config.surrogate_hashing
    victim_hashing = dataclasses.replace(config.hashing, **victim)
    own = {f"surrogate_{k}": v for k, v in {**{k: getattr(base, k) for k in (
        "method", "backbone", "bits")}, **surrogate}.items()
        if v != getattr(victim_hashing, k)}
    reset = {"surrogate_method": "", "surrogate_backbone": "", "surrogate_bits": 0}
    config = dataclasses.replace(config, hashing=victim_hashing)
    return replace_in(config, "attack", **{**reset, **own})


def _check_values(flag, values, allowed):
    if not values:
        raise ValueError(f"{flag}: give at least one value")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{flag}={','.join(map(str, values))}: unknown {', '.join(unknown)}; "
                         f"choose from {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{flag}={','.join(map(str, values))} repeats a value")


def transfer_cells(config, methods, backbones=()):
    """Every (surrogate, victim) pair over `methods` (and `backbones`, when given) ->
    [GridCell] named S_to_V (S, V: method or method-backbone)."""
    _check_values("--grid_methods", list(methods), METHODS)
    backbones = list(backbones) or [config.hashing.backbone]
    _check_values("--grid_backbones", backbones, BACKBONES)
    schemes = [{"method": m, "backbone": b} for b in backbones for m in methods]
    label = lambda s: s["method"] if len(backbones) == 1 else f"{s['method']}-{s['backbone']}"
    return [GridCell(f"{label(s)}_to_{label(v)}", {"surrogate": label(s), "victim": label(v)},
                     with_schemes(config, s, v)) for s in schemes for v in schemes]


def bits_cells(config, bits):
    """One cell per code length, the surrogate's and the victims' alike -> [GridCell]."""
    if not bits or len(set(bits)) != len(bits) or min(bits) < 1:
        raise ValueError(f"--grid_bits={','.join(map(str, bits))}: give distinct code "
                         "lengths >= 1")
    return [GridCell(f"bits_{b}", {"bits": b}, with_schemes(config, {"bits": b}, {"bits": b}))
            for b in bits]


def parse_poison(values):
    """--grid_poison values -> [(name, share or None, count or None)]: quarter, half, all
    (shares of the target class's training images) or a count. Raises ValueError."""
    parsed = []
    for v in values:
        if v in POISON_SHARES:
            parsed.append((v, POISON_SHARES[v], None))
        elif v.isdigit() and int(v) > 0:
            parsed.append((v, None, int(v)))
        else:
            raise ValueError(f"--grid_poison={','.join(values)}: {v!r} is neither a count > 0 "
                             f"nor one of {', '.join(POISON_SHARES)}")
    if not parsed or len({p[0] for p in parsed}) != len(parsed):
        raise ValueError(f"--grid_poison={','.join(values)}: give distinct values")
    return parsed


def poison_cells(config, values, available):
    """One cell per poisoned-copy count: a share of the target class's `available` training
    images (at least 1), or a count (at most `available`) -> [GridCell]."""
    out = []
    for name, share, count in parse_poison(values):
        n = max(1, round(share * available)) if share is not None else count
        if n > available:
            raise ValueError(f"--grid_poison={name}: {n} copies, but the target class has "
                             f"{available} training images")
        out.append(GridCell(f"poison_{name}", {"poison": name},
                            replace_in(config, "attack", poison_count=n, poison_rate=0.0)))
    return out


def ablation_cells(config):
    """The ablations as the attacks of one cell: BadHash, without LabCLN, without the hash
    loss -> [GridCell]."""
    return [GridCell("ablation", {}, config, ABLATIONS)]


def make_cells(grid, config, options, available):
    """The cells of grid `grid` ("transfer", "bits", "poison", "ablation") for one seed's
    config. `options`: {"methods", "backbones", "bits", "poison"}; `available`: the
    target class's training images. Raises ValueError naming the flag."""
    if grid == "transfer":
        return transfer_cells(config, options["methods"], options.get("backbones", ()))
    if grid == "bits":
        return bits_cells(config, options["bits"])
    if grid == "poison":
        return poison_cells(config, options["poison"], available)
    if grid == "ablation":
        return ablation_cells(config)
    raise ValueError(f"--grid={grid}: choose from {', '.join(GRIDS)}")


def make_plans(grid, configs, options, output_dir, overwrite=None):
    """configs {seed: ExperimentConfig} -> {seed: {cell name: (GridCell, Plan)}}, every
    cell of every seed checked before any work, shared stages made alike linked to one
    directory (link_shared)."""
    plans, data = {}, None
    for seed, config in configs.items():
        root = RunLayout(output_dir).seed(seed).root
        data = data or DataView(config.data, config.retrieval)
        _, available = target_images(config, data)  # make_plan checks every size
        plans[seed] = {}
        for cell in make_cells(grid, config, options, available):
            plan = make_plan(cell.config, os.path.join(root, cell.name), list(cell.attacks),
                             data=data, overwrite=overwrite)
            plans[seed][cell.name] = (cell, plan)
        link_shared([p for _, p in plans[seed].values()], overwrite)
    return plans


def link_shared(plans, overwrite=None):
    """Every stage of `plans` (shared or an attack cell) whose fingerprint an earlier plan's
    same stage has, and that is not on disk yet, becomes a relative link to that stage's
    directory (made empty when missing), so it is made once (e.g. the HashNet surrogate of
    every HashNet-to-X cell; poison cells "50" and "half" of 100 images, one attack run);
    the plans' decisions are then taken again."""
    first = {}
    for plan in plans:
        # an attack cell is keyed with its plan's shared stages: linked only to a cell made
        # from the same stages
        upstream = _text({n: s.fingerprint for n, s in plan.shared.items()})
        stages = [*plan.shared.items(),
                  *((f"attack {c.name} from {upstream}", c.stage) for c in plan.attacks)]
        for name, stage in stages:
            key = (name, _text(stage.fingerprint))
            if key not in first:
                first[key] = stage.directory
                continue
            if os.path.lexists(stage.directory):
                continue
            os.makedirs(first[key], exist_ok=True)
            os.makedirs(os.path.dirname(stage.directory), exist_ok=True)
            try:
                os.symlink(os.path.relpath(first[key], os.path.dirname(stage.directory)),
                           stage.directory)
            except FileExistsError:  # another shard linked it meanwhile
                pass
        plan.decisions = cells_module.check(plan.stages, plan.layout.root, overwrite)


def _text(fingerprint):
    return json.dumps(fingerprint, sort_keys=True, default=str)


def grid_cells(plans):
    """Every attack cell in its fixed order (seed, cell, attack) -> [(seed, cell name,
    AttackCell)] (what --shard deals out)."""
    return [(seed, name, attack) for seed, cells in plans.items()
            for name, (_, plan) in cells.items() for attack in plan.attacks]


def run(plans, runner, shard=None):
    """This shard's attack cells (all without one), each plan's shared stages made when one
    of its cells runs."""
    mine = cells_module.shard_of(grid_cells(plans), shard)
    for seed, cells in plans.items():
        for name, (_, plan) in cells.items():
            todo = [a for s, n, a in mine if s == seed and n == name]
            run_seed(plan, runner, todo)


def gather(grid, plans, record=None):
    """grid.json's content from the finished cells on disk: every (cell, attack, seed) as a
    row of `cells`, and `rows`: per (cell, attack) each figure's mean over seeds, its 95%
    interval's half-width (FIGURE_ci) and n."""
    found, missing = [], 0
    for seed, cells in plans.items():
        for name, (cell, plan) in cells.items():
            for attack in plan.attacks:
                if not os.path.exists(os.path.join(attack.directory, VARIANT_JSON)):
                    missing += 1
                    continue
                variant = load_variant(attack.directory)
                figures = variant.get("figures", {})
                found.append({"cell": name, **cell.axes, "attack": attack.name, "seed": seed,
                              "target_label": variant["target_label"],
                              "poison_count": variant["poison_count"],
                              "clean_map_reference": variant["clean_map_reference"],
                              **{k: figures[k] for k in FIGURES if k in figures},
                              **({"skipped": variant["skipped"]} if "skipped" in variant
                                 else {})})
    order = [(name, a.name) for name, (_, p) in next(iter(plans.values())).items()
             for a in p.attacks]
    axes = {name: cell.axes for name, (cell, _) in next(iter(plans.values())).items()}
    first = next(iter(next(iter(plans.values())).values()))[1].config
    return {"grid": grid, "dataset": first.data.dataset, "seeds": list(plans),
            "cells": found, "missing_cells": missing, "rows": summarise(found, order, axes),
            "interval": f"95% interval, {stats.METHOD}",
            "scheme": {"method": first.hashing.method, "backbone": first.hashing.backbone,
                       "bits": first.hashing.bits},
            "grey_triggers": first.attack.grey_triggers, **(record or {})}


def summarise(found, order, axes):
    """Rows per (cell, attack) in `order`: each figure's mean over the seeds that have it,
    FIGURE_ci (None for one seed), FIGURE_n, and the cell's axes."""
    rows = []
    for name, attack in order:
        mine = [c for c in found if c["cell"] == name and c["attack"] == attack
                and "t_map" in c]
        row = {"cell": name, **axes[name], "attack": attack, "seeds": len(mine)}
        for key in FIGURES:
            values = [c[key] for c in mine if key in c]
            if values:
                spread = stats.interval(values)
                row.update({key: spread["mean"], key + "_ci": spread["half_width"],
                            key + "_n": len(values)})
        rows.append(row)
    return rows


def load_reference(path, grid):
    """A reference grid.json (or its directory) -> its content. Raises ValueError naming
    --compare_with."""
    reference, path = io_utils.read_result(path, "grid.json", "rows")
    if reference.get("grid") != grid:
        raise ValueError(f"--compare_with={path}: a {reference.get('grid')!r} grid, not "
                         f"--grid={grid}")
    return {**reference, "source": path}
