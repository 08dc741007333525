"""`bench` end to end on tiny data: every attack and defense asked for (the toy plugin's
too) lands in bench.json, bench.md and one static bench.html with a row per attack and
embedded heatmaps; a rerun reuses every finished cell; bad input is refused before any
work, naming the flag."""

import json
import shutil
import subprocess
import sys

import pytest

from badhash_tf import registry
from badhash_tf.engine import defenses as harness
from badhash_tf.grids import leaderboard as bench
from tests.conftest import PLUGIN_ENV, ROOT, tiny_command

ATTACKS = ("badhash", "sig", "darkhash", "toy_shift", "clean")
FLAGS = ["--darkhash_patch_steps=10", "--darkhash_surrogate=badhash_digit_mosaics",
         "--darkhash_surrogate_split=train[:128]", "--cleanse_steps=10", "--finetune_epochs=1",
         f"--attacks={','.join(ATTACKS)}",
         "--defenses=jpeg,spectral,strip,neural_cleanse,toy_flip"]


def _bench(data_dir, out, *extra, check=True):
    cmd = tiny_command(data_dir, out, *FLAGS, *extra, program="badhash_tf.bench")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=PLUGIN_ENV)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_bench_writes_a_leaderboard_and_a_rerun_skips(tiny_run, data_dir, tmp_path):
    out = tmp_path / "bench"
    seed = out / "badhash_digits" / "seed_0"
    for stage in ("surrogate", "labcln", "reference_victim", "badhash"):  # the same flags:
        shutil.copytree(tiny_run.dir / stage, seed / stage)  # reused as finished stages
    _bench(data_dir, out)
    board = json.loads((out / "bench.json").read_text())["datasets"]["badhash_digits"]
    rows = {r["attack"]: r for r in board["rows"]}
    assert set(rows) == set(ATTACKS) - {"clean"} | {"none (clean)"}
    control = rows.pop("none (clean)")  # the control: last, not ranked
    assert board["rows"][-1] is not None and board["rows"][-1]["attack"] == "none (clean)"
    assert control["rank"] is None and control["tier"] is None
    assert control["threat"] == registry.CONTROL and control["backdoor_gain"] == 0.0
    assert control["t_map"] == pytest.approx(tiny_run.report["t_map_untriggered_reference"])
    assert 0.0 <= control["auroc_spectral"] <= 1.0 and 0.0 <= control["auroc_strip"] <= 1.0
    assert control["target_flagged_neural_cleanse"] in ("0/1", "1/1")
    assert sorted(r["rank"] for r in rows.values()) == [1, 2, 3, 4]
    assert rows["badhash"]["t_map"] == pytest.approx(tiny_run.report["t_map"])  # reused
    for row in rows.values():
        assert row["backdoor_gain"] == pytest.approx(row["t_map"] - row["t_map_clean_victim"])
        assert 0.0 <= row["t_map_after_jpeg"] <= 1.0 and 0.0 <= row["auroc_strip"] <= 1.0
        assert 0.0 <= row["t_map_after_toy_flip"] <= 1.0  # the plugin's defense
        assert row["target_flagged_neural_cleanse"] in ("0/1", "1/1")
        assert row["tier"] >= 1 and row["backdoor_gain_n"] == 1
    assert rows["darkhash"]["threat"] == registry.DATA_FREE
    assert rows["darkhash"]["t_map_after_spectral"] == "n/a"  # no poisoned training data
    assert 0.0 <= rows["sig"]["auroc_spectral"] <= 1.0
    assert rows["sig"]["psnr_min"] >= 30  # the run's budget
    assert rows["toy_shift"]["threat"] == registry.POISONING
    page = (out / "bench.html").read_text()
    for name in ATTACKS[:-1] + ("none (clean)",):
        assert f"<b>{name}</b>" in page  # a row of the grouped table, with its thumbnails
    assert page.count("<img class='strip'") == len(ATTACKS)
    assert page.count("<th class='group'") == 5  # attack, strength, stealth, after, detection
    assert page.count("<img alt=") == 2  # t-MAP and AUROC heatmaps
    assert "<tr class='control'>" in page
    assert "| darkhash | data-free" in (out / "bench.md").read_text()
    assert (seed / "report.json").exists() and (seed / "defenses" / "defenses.md").exists()
    again = _bench(data_dir, out)
    # every attack and every defense reused, none made again
    assert again.stderr.count("finished earlier") >= len(ATTACKS) + 5 * len(ATTACKS)
    assert "poison_and_victim done" not in again.stderr
    assert json.loads((out / "bench.json").read_text())["datasets"]["badhash_digits"][
        "rows"] == board["rows"]


BAD = [("--attacks=badhash,darkhsh", "--attacks: unknown 'darkhsh'"),
       ("--attacks=badhash,patch,patch", "--attacks=badhash,patch,patch repeats patch"),
       ("--defenses=jpeg,jpeg", "--defenses=jpeg,jpeg repeats jpeg"),
       ("--darkhash_frozen_layers=20", "--darkhash_frozen_layers=20: the small_cnn backbone "
                                       "has 9 layers with weights"),
       ("--darkhash_surrogate=badhash_digits", "--darkhash_surrogate=badhash_digits is the "
                                               "attacked dataset")]


def test_bench_refuses_bad_input_before_any_work(data_dir, tmp_path):
    out = tmp_path / "bench"
    cases = [tiny_command(data_dir, out, *FLAGS, flag)[3:] for flag, _ in BAD]
    done = subprocess.run([sys.executable, "tests/flag_checks.py", "badhash_tf.bench",
                           json.dumps(cases)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=PLUGIN_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    for (flag, message), result in zip(BAD, json.loads(done.stdout.splitlines()[-1])):
        assert result["refused"] and message in result["message"], (flag, result)
    assert not (out / "badhash_digits").exists()


def test_attack_and_defense_lists_are_checked():
    with pytest.raises(ValueError, match="--attacks=sig: include badhash"):
        bench.check_bench_attacks(["sig"])
    with pytest.raises(ValueError, match="--defenses: unknown 'cleanse'"):
        harness.check_defenses(["jpeg", "cleanse"])
    bench.check_bench_attacks(list(registry.attacks(role="bench")))
