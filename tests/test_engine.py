"""The experiment engine: a toy attack and defense registered in a test module
(tests/toy_plugin.py) run through every program unchanged; each check and split load
happens once per run; a sharded frontier gathers to the same frontier.json as one run;
aggregates carry Student's t intervals, and the leaderboard puts attacks whose intervals
overlap in one tier."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from badhash_tf import stats
from badhash_tf.grids import leaderboard
from badhash_tf.render import leaderboard_page
from tests.conftest import PLUGIN_ENV, ROOT, tiny_command
from tests.test_frontier import run_frontier, tiny_config



def _run(module, *args):
    """A program run with the toy plugin registered."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=PLUGIN_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_registered_toy_attack_runs_through_the_pipeline_once_per_check(tiny_run):
    """tests/toy_plugin.py registers an attack (with its own flags) and a defense; the
    pipeline ran them (the session's tiny run; `defend` and `bench` run them in
    test_pipeline and test_bench), and made each check and split load once."""
    toy = tiny_run.report["baselines"]["toy_shift"]
    assert 0.0 <= toy["t_map"] <= 1.0 and toy["psnr_min"] >= 30.0  # the run's budget
    record = json.loads((tiny_run.dir / "toy_shift" / "stage.json").read_text())
    assert record["fingerprint"]["toy.sign"] == -1.0  # its own section, fingerprinted
    made_with = json.loads((tiny_run.dir / "surrogate" / "stage.json").read_text())["made_with"]
    assert made_with == {  # what else decides a stage's sums (conftest: one thread)
        "tensorflow": tf.__version__, "cpus": os.cpu_count(),
        "intra_op_threads": os.environ["TF_NUM_INTRAOP_THREADS"],
        "inter_op_threads": os.environ.get("TF_NUM_INTEROP_THREADS", "default")}
    counts = tiny_run.counts
    for split in ("train[:64]", "query[:40]", "database[:200]"):
        assert counts[f"load_split badhash_digits {split}"] == 1, counts
    assert counts["check_splits"] == 1 and counts["check_sizes"] == 1, counts
    assert counts["check"] == 1, counts  # the stage decisions
    assert counts["split_arrays of 64 items"] == 1 and counts["split_arrays of 40 items"] == 1
    # the class anchor once, though badhash_anchor and CIBA's patch both pull toward it
    assert counts["class_anchor"] == 1, counts
    helped = subprocess.run([sys.executable, "-m", "badhash_tf.pipeline", "--helpfull"],
                            cwd=ROOT, capture_output=True, text=True, env=PLUGIN_ENV,
                            timeout=120)
    assert "toy_shift" in helped.stdout and "--toy_sign" in helped.stdout


def test_a_registered_toy_attack_runs_in_the_frontier(tiny_run, data_dir, tmp_path):
    out = tmp_path / "frontier"
    for stage in ("surrogate", "reference_victim"):  # the same flags: reused, not retrained
        shutil.copytree(tiny_run.dir / stage, out / "seed_0" / stage)
    done = _run("badhash_tf.frontier", *tiny_command(data_dir, out)[3:],
                "--methods=toy_shift,patch", "--psnr_budgets=30")
    assert f"resumed from {out / 'seed_0' / 'surrogate'}" in done.stderr
    rows = {r["method"]: r for r in json.loads((out / "frontier.json").read_text())[
        "summary"]["rows"]}
    assert rows["toy_shift"]["seeds"] == 1 and rows["toy_shift"]["psnr_min"] >= 30.0


def test_shards_then_a_gathering_run_give_the_frontier_of_one_run(data_dir, tmp_path):
    config = tiny_config(data_dir)
    strategy = tf.distribute.get_strategy()
    methods, budgets, configs = ["patch", "noise"], [30.0, 20.0], {0: config}
    whole = run_frontier(configs, budgets, methods, str(tmp_path / "one"), strategy)
    sharded = tmp_path / "sharded"
    for stage in ("surrogate", "reference_victim"):  # (the same flags: reused)
        shutil.copytree(tmp_path / "one" / "seed_0" / stage, sharded / "seed_0" / stage)
    for shard in ((0, 2), (1, 2)):
        assert run_frontier(configs, budgets, methods, str(sharded), strategy, shard) is None
        ran = lambda b: sorted(n for n in os.listdir(sharded / "seed_0" / f"psnr_{b}")
                               if not n.startswith("."))  # (the stages' locks)
        if shard == (0, 2):  # cells (30, patch), (20, patch): every second from the first
            assert ran(30) == ["patch"] and ran(20) == ["patch"]
    gathered = run_frontier(configs, budgets, methods, str(sharded), strategy)
    without_times = lambda r: {**r, "cells": [  # (the seconds each cell took differ)
        {k: v for k, v in c.items() if k != "seconds"} for c in r["cells"]]}
    assert without_times(gathered) == without_times(whole)
    assert gathered["missing_cells"] == 0 and len(gathered["cells"]) == 4


def test_intervals_of_known_numbers():
    found = stats.interval([0.2, 0.4, 0.6])  # sd 0.2, t(0.975, 2) = 4.303
    assert found["mean"] == pytest.approx(0.4) and found["n"] == 3
    assert found["half_width"] == pytest.approx(0.4968, abs=1e-4)
    assert (found["lo"], found["hi"]) == pytest.approx((0.4 - 0.4968, 0.4 + 0.4968), abs=1e-4)
    one = stats.interval([0.7])
    assert one["half_width"] is None and one["lo"] == one["hi"] == 0.7
    assert stats.format_interval(0.4, found["half_width"]) == "0.400 ± 0.497"
    with pytest.raises(ValueError, match="at least one value"):
        stats.interval([])


def test_tiers_put_overlapping_intervals_together():
    rows = [{"name": "a", "g": 0.90, "g_ci": 0.05}, {"name": "b", "g": 0.87, "g_ci": 0.02},
            {"name": "c", "g": 0.50, "g_ci": 0.10}, {"name": "d", "g": 0.45, "g_ci": None},
            {"name": "e", "g": 0.10, "g_ci": None}, {"name": "f"}]
    tiers = stats.tiers(rows, "g")
    assert [tiers.get(id(r)) for r in rows] == [1, 1, 2, 2, 3, None]


def _report(seed, gains):
    """A pipeline report of one seed with BadHash's and two baselines' figures."""
    figures = lambda g: {"t_map": g + 0.1, "t_map_clean_victim": 0.1, "backdoor_gain": g,
                         "clean_map": 0.9, "psnr": 25.0, "psnr_min": 24.0, "ssim": 0.9,
                         "query_psnr_min": 20.0}
    return {**figures(gains[0]), "seed": seed, "target_label": 3, "poison_count": 10,
            "clean_map_reference": 0.9,
            "baselines": {"patch": figures(gains[1]), "sig": figures(gains[2])},
            "config": {"gan": {"psnr_budget": 25.0}, "attack": {"query_amplification": 1}}}


def test_the_leaderboard_gives_intervals_and_tiers(tmp_path):
    runs = [(_report(s, g), None) for s, g in enumerate(([0.8, 0.7, 0.1], [0.6, 0.5, 0.1],
                                                         [0.7, 0.8, 0.12]))]
    board = leaderboard.summarise(runs)
    rows = {r["attack"]: r for r in board["rows"]}
    assert rows["badhash"]["backdoor_gain"] == pytest.approx(0.7)
    assert rows["badhash"]["backdoor_gain_ci"] == pytest.approx(
        stats.interval([0.8, 0.6, 0.7])["half_width"])
    assert rows["badhash"]["backdoor_gain_n"] == 3
    assert [rows[n]["rank"] for n in ("badhash", "patch", "sig")] == [1, 2, 3]
    # badhash and patch overlap (0.70 +- 0.25, 0.67 +- 0.38): one tier; sig below both
    assert (rows["badhash"]["tier"], rows["patch"]["tier"], rows["sig"]["tier"]) == (1, 1, 2)
    result = {"datasets": {"d": board}}
    leaderboard_page.write_all(str(tmp_path), result)
    text = (tmp_path / "bench.md").read_text()
    assert "| 1 | 1 | badhash |" in text and "0.7000 ± 0.2484" in text
    assert "Seeds 0, 1, 2 (targets 3, 3, 3; poisoned copies 10, 10, 10)" in text
    assert "0.700<span class='ci'>± 0.248</span>" in (tmp_path / "bench.html").read_text()
    assert np.isclose(stats.interval([0.8, 0.6, 0.7])["half_width"], 0.2484, atol=1e-4)


def test_the_bench_compares_with_a_reference(tmp_path):
    """--compare_with: every figure of this bench marked inside or outside the reference's
    interval, counted, and shown as ✓ / ✗ in bench.md and bench.html."""
    gains = ([0.8, 0.7, 0.1], [0.6, 0.5, 0.1], [0.7, 0.8, 0.12])
    reference = {"datasets": {"d": leaderboard.summarise(
        [(_report(s, g), None) for s, g in enumerate(gains)])}}
    (tmp_path / "bench.json").write_text(json.dumps(reference))
    loaded = leaderboard.load_reference(str(tmp_path))
    mine = {"datasets": {"d": leaderboard.summarise(
        [(_report(s, g), None) for s, g in enumerate(([0.72, 0.05, 0.9], [0.70, 0.05,
                                                                           0.9]))])}}
    leaderboard.compare(mine, loaded)
    rows = {r["attack"]: r for r in mine["datasets"]["d"]["rows"]}
    assert rows["badhash"]["compare"]["backdoor_gain"]["inside"] is True  # 0.71 in 0.7+-.25
    assert rows["sig"]["compare"]["backdoor_gain"]["inside"] is False  # 0.9 vs 0.107+-.03
    assert mine["compare"]["inside"] + mine["compare"]["outside"] == 3 * 4
    leaderboard_page.write_all(str(tmp_path / "out"), mine)
    assert "✗" in (tmp_path / "out" / "bench.md").read_text()
    page = (tmp_path / "out" / "bench.html").read_text()
    assert "0.710 ✓" in page and "outside (✗)" in page
    with pytest.raises(ValueError, match="--compare_with=.*nothing.json: not a bench.json"):
        leaderboard.load_reference(str(tmp_path / "nothing.json"))
