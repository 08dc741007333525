"""The frontier: the patch side chosen for a budget, the verdicts it states, and a tiny run
on real digits whose rerun skips every finished cell."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from badhash_tf import io_utils, stats
from badhash_tf.attack import patch, triggers
from badhash_tf.config import (AttackConfig, DataConfig, ExperimentConfig, GANConfig,
                               HashingConfig, LabCLNConfig, RetrievalConfig, TrainConfig)
from badhash_tf.engine import cells
from badhash_tf.engine.stages import Runner
from badhash_tf.grids import stealth_frontier as frontier
from badhash_tf.render import frontier_report


def run_frontier(configs, budgets, methods, output_dir, strategy, shard=None):
    """What the frontier program does: plan, run (this shard's cells), then (without a
    shard) gather frontier.json and draw it -> the result (None for a shard)."""
    plans = frontier.make_plans(configs, budgets, methods, output_dir)
    frontier.run(plans, Runner(strategy), shard)
    if shard:
        return None
    result = frontier.gather(plans, budgets, methods)
    io_utils.write_json(os.path.join(output_dir, "frontier.json"), result)
    frontier_report.write_all(output_dir, result)
    return result


def test_largest_patch_within_a_budget():
    # a black/white patch on mid-grey images changes each covered value by 0.5:
    # MSE = 0.25 s^2 / 32^2, so 20 dB (MSE 0.01) allows s = 6 and 30 dB s = 2
    grey = np.full((3, 32, 32, 3), 0.5, np.float32)
    assert patch.largest_patch_within(grey, 20.0) == 6
    assert patch.largest_patch_within(grey, 30.0) == 2
    assert patch.largest_patch_within(grey, 45.0) == 0
    # the worst image decides: one image already white where the patch is white
    mixed = grey.copy()
    mixed[0] = 0.0  # a black image: white cells now change by 1 (4x the error)
    assert patch.largest_patch_within(mixed, 20.0) < 6
    # a patch that leaves some copy unchanged is no trigger: black images and a 1-pixel
    # black patch (pattern seed 1's first cell is black) give none
    assert triggers.patch_pattern(1, seed=1)[0, 0, 0] == 0
    assert patch.largest_patch_within(np.zeros((2, 32, 32, 3), np.float32), 30.0,
                                         seed=1) == 0


def _cell(method, budget, seed, t_map, clean_victim=0.1, clean=0.99, ref=1.0):
    return {"method": method, "budget": budget, "seed": seed, "t_map": t_map,
            "t_map_clean_victim": clean_victim, "clean_map": clean,
            "clean_map_reference": ref, "psnr": budget + 0.5, "psnr_min": budget,
            "ssim": 0.9, "ssim_min": 0.8, "query_psnr_min": budget, "t_map_best": t_map}


def test_summary_states_where_the_backdoor_is_learned_and_who_wins():
    cells = [_cell("badhash", 20.0, 0, 0.9), _cell("badhash", 20.0, 1, 0.8),
             _cell("patch", 20.0, 0, 0.95), _cell("patch", 20.0, 1, 0.7),  # mean .825
             _cell("badhash", 30.0, 0, 0.9), _cell("badhash", 30.0, 1, 0.3),
             _cell("patch", 30.0, 0, 0.5), _cell("patch", 30.0, 1, 0.4),
             _cell("badhash", 26.0, 0, 0.9, clean=0.9), _cell("badhash", 26.0, 1, 0.9),
             _cell("patch", 26.0, 0, 0.99), _cell("patch", 26.0, 1, 0.99)]
    anchored = [_cell("badhash_anchor", 20.0, 0, 0.99), _cell("badhash_anchor", 20.0, 1, 0.99)]
    summary = frontier.summarise(cells + anchored, [30.0, 26.0, 20.0],
                                 ["badhash", "badhash_anchor", "patch"])
    assert summary["badhash_anchor"]["learned_at"] == [20.0]
    verdict = summary["badhash"]  # (the other BadHash variant is no baseline of it)
    # 30: one seed misses; 26: one seed loses 0.1 clean MAP; 20: both seeds learn it
    assert verdict["learned_at"] == [20.0]
    assert verdict["not_learned_at"] == [30.0, 26.0]
    assert verdict["beats_baselines_at"] == [30.0, 20.0]  # .85 vs .825: within the tie
    assert verdict["beaten_at"] == {"26": {"patch": pytest.approx(0.99)}}
    row = next(r for r in summary["rows"] if r["budget"] == 20.0 and r["method"] == "patch")
    assert row["t_map"] == pytest.approx(0.825) and row["t_map_range"] == "0.700-0.950"
    assert row["learned"] == "1/2"
    result = {"dataset": "d", "seeds": [0, 1], "budgets": [30.0, 26.0, 20.0],
              "methods": ["badhash", "badhash_anchor", "patch"], "summary": summary}
    text = frontier_report.markdown(result)
    assert "learned** (every seed" in text and "at: 20 dB**" in text
    assert "not learned at: 30 dB, 26 dB" in text
    assert "At 26 dB badhash's t-MAP is beaten by patch" in text
    assert row["backdoor_gain"] == pytest.approx(0.825 - 0.1)  # filled in from the cells
    # by backdoor gain patch wins at 20 dB only when its clean victim does not follow it
    gains = frontier.summarise(cells + [
        _cell("pgd_target", 20.0, 0, 0.99, clean_victim=0.9),
        _cell("pgd_target", 20.0, 1, 0.99, clean_victim=0.9)], [20.0],
        ["badhash", "pgd_target"])
    assert gains["badhash"]["beaten_at"] == {"20": {"pgd_target": pytest.approx(0.99)}}
    assert gains["badhash"]["gain_beats_baselines_at"] == [20.0]  # .75 against .09
    ranked = frontier_report.markdown({**result, "methods": ["badhash", "pgd_target"],
                                "budgets": [20.0], "summary": gains})
    assert "by backdoor_gain: badhash 0.750 > pgd_target 0.090" in ranked
    alone = frontier_report.markdown({**result, "methods": ["badhash"]})
    assert "No baselines were run." in alone and "at least every baseline" not in alone


def test_compare_with_another_regime_tabulates_both(tmp_path):
    """--compare_with: another frontier.json (here one from before backdoor_gain) is
    re-summarised, tabulated beside this run in frontier.md and drawn beside it."""
    older = [{k: v for k, v in _cell("badhash", 20.0, 0, 0.6, clean_victim=0.2).items()}]
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "frontier.json").write_text(json.dumps(
        {"dataset": "d", "seeds": [0], "budgets": [20.0], "methods": ["badhash"],
         "cells": older, "query_amplification": 3.0, "summary": {"rows": []}}))
    compare = frontier.load_comparison(str(tmp_path / "scratch"))
    assert compare["rows"][0]["backdoor_gain"] == pytest.approx(0.4)
    mine = [{**_cell("badhash", 20.0, 0, 0.9), "t_map_x3": 1.0, "t_map_clean_victim_x3": 0.3,
             "backdoor_gain_x3": 0.7}]
    result = {"dataset": "d", "seeds": [0], "budgets": [20.0], "methods": ["badhash"],
              "cells": mine, "query_amplification": 1.0, "backbone": "pretrained: P",
              "summary": frontier.summarise(mine, [20.0], ["badhash"]),
              "compare": {k: v for k, v in compare.items() if k != "result"}}
    text = frontier_report.markdown(result)
    assert f"## Beside {tmp_path / 'scratch'} (from scratch)" in text
    assert "| 20 | badhash | 0.9000 | 0.6000 | 0.8000 | 0.4000 |" in text
    assert "**badhash's backdoor (queries x3) is learned**" in text  # 1.0, 0.7 over clean
    frontier_report.frontier_png(str(tmp_path / "f.png"), result, compare["result"])
    assert (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match="--compare_with=.*frontier.json does not read"):
        frontier.load_comparison(str(tmp_path / "missing"))


@pytest.mark.parametrize("budgets, methods, message", [
    ([30.0, 30.0], ["patch"], "--psnr_budgets: 30,30 repeats"),
    ([60.0], ["patch"], "--psnr_budgets: 60 dB is not in"),
    ([], ["patch"], "--psnr_budgets: give at least one"),
    ([30.0], ["blur"], "--methods: unknown 'blur'")])
def test_bad_budgets_and_methods_are_named(budgets, methods, message):
    with pytest.raises(ValueError, match=message):
        frontier.make_plans({}, budgets, methods, "/nonexistent")


def tiny_config(data_dir, **attack):
    """A frontier's config on 64 training digits, 2 steps a stage; `attack`: AttackConfig
    fields beyond target 0 and no baselines."""
    return ExperimentConfig(
        data=DataConfig(data_dir=data_dir),
        hashing=HashingConfig(bits=16),
        train=TrainConfig(train_steps=2, global_batch_size=16, steps_per_loop=2),
        retrieval=RetrievalConfig(train_split="train[:64]", query_split="query[:30]",
                                  database_split="database[:120]", map_top_k=50,
                                  eval_every_epochs=0),
        labcln=LabCLNConfig(hidden=32, feature_dim=16),
        gan=GANConfig(base_width=8, residual_blocks=1, label_width=16, disc_width=8,
                      disc_layers=3, batch_size=16),
        attack=AttackConfig(target_label=0, baselines=(), **attack))


def test_tiny_frontier_writes_its_files_and_rerun_skips_finished_cells(data_dir, tmp_path):
    config = tiny_config(data_dir, query_amplification=2.0, extra_query_amplifications=(1.0,))
    strategy = tf.distribute.get_strategy()
    out = tmp_path / "frontier"
    methods = ["badhash_anchor", "patch", "noise"]
    first = run_frontier({0: config}, [30.0, 20.0], methods, str(out), strategy)
    for name in ("frontier.json", "frontier.md", "frontier.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "frontier.json").read_text())
    assert {"dataset", "seeds", "budgets", "methods", "cells", "summary",
            "query_amplification"} <= set(saved)
    assert saved["budgets"] == [30.0, 20.0] and saved["seeds"] == [0]
    assert len(saved["cells"]) == 6
    assert (out / "seed_0" / "psnr_20" / "badhash_anchor" / "generator").is_dir()
    record = json.loads((out / "seed_0" / "psnr_20" / "badhash_anchor" / cells.RECORD)
                        .read_text())["fingerprint"]
    assert record["gan.target_code"] == "class_anchor"
    assert record["gan.psnr_budget"] == 20.0
    for cell in saved["cells"]:
        assert cell["psnr_min"] >= cell["budget"]  # every copy within its budget
        assert 0.0 <= cell["t_map"] <= 1.0
        for x in ("", "_x1"):  # the run's x2 queries, and x1 on the same victims
            assert cell[f"backdoor_gain{x}"] == pytest.approx(
                cell[f"t_map{x}"] - cell[f"t_map_clean_victim{x}"])
    assert saved["summary"]["amplifications"] == ["_x1"]
    assert {"badhash_anchor", "badhash_anchor_x1"} <= set(saved["summary"])
    assert all("backdoor_gain_x1" in r and "learned_x1" in r for r in saved["summary"]["rows"])
    text = (out / "frontier.md").read_text()
    assert "## Queries x1 (the same victims)" in text and "backdoor_gain_x1" in text
    patches = {c["budget"]: c["patch_size"] for c in saved["cells"] if c["method"] == "patch"}
    assert 0 < patches[30.0] < patches[20.0]
    cell_json = out / "seed_0" / "psnr_20" / "noise" / "variant.json"
    stamp = os.stat(cell_json).st_mtime_ns
    second = run_frontier({0: config}, [30.0, 20.0], methods, str(out), strategy)
    assert os.stat(cell_json).st_mtime_ns == stamp
    assert second["cells"] == first["cells"]


def test_compare_with_a_reference_marks_inside_and_outside(tmp_path):
    """--compare_with a reference frontier.json (a file, as results/ holds): this run's
    mean t-MAP outside the reference's 95% interval is marked ✗, its clean MAP inside ✓."""
    reference = [_cell("badhash", 25.0, s, t) for s, t in enumerate((0.60, 0.62, 0.64))]
    (tmp_path / "ref.json").write_text(json.dumps(
        {"dataset": "d", "seeds": [0, 1, 2], "budgets": [25.0], "methods": ["badhash"],
         "cells": reference, "query_amplification": 1.0, "summary": {"rows": []}}))
    compare = frontier.load_comparison(str(tmp_path / "ref.json"))
    mine = [_cell("badhash", 25.0, s, 0.9) for s in (0, 1)]
    summary = frontier.summarise(mine, [25.0], ["badhash"])
    inside, outside = stats.compare_rows(summary["rows"], compare["rows"],
                                         ("budget", "method"), frontier.COMPARED)
    marks = summary["rows"][0]["compare"]
    assert marks["t_map"]["inside"] is False and marks["clean_map"]["inside"] is True
    assert marks["t_map"]["reference"] == pytest.approx(0.62)
    assert (inside, outside) == (1, 2)  # clean MAP in; t-MAP and backdoor gain out
    result = {"dataset": "d", "seeds": [0, 1], "budgets": [25.0], "methods": ["badhash"],
              "cells": mine, "query_amplification": 1.0, "summary": summary,
              "compare": {**{k: v for k, v in compare.items() if k != "result"},
                          "inside": inside, "outside": outside}}
    text = frontier_report.markdown(result)
    assert "1 figures here lie inside the 95% interval there (✓), 2 outside (✗)" in text
    assert "| ✗ | ✗ | ✓ |" in text
