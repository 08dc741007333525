"""`bench` end to end on tiny data: every attack and defense asked for lands in bench.json,
bench.md and one static bench.html with a row per attack and embedded heatmaps; a rerun
skips every finished cell; bad input is refused before any work, naming the flag."""

import json
import os
import subprocess
import sys

import pytest

from badhash_tf.leaderboard import bench
from badhash_tf.defense import harness
from tests.test_pipeline import ROOT, TINY

ATTACKS = ("badhash", "sig", "darkhash")
FLAGS = [flag for flag in TINY if not flag.startswith("--baselines")] + [
    "--darkhash_patch_steps=10", "--darkhash_surrogate=badhash_digit_mosaics",
    "--darkhash_surrogate_split=train[:128]", "--cleanse_steps=10", "--finetune_epochs=1",
    f"--attacks={','.join(ATTACKS)}", "--defenses=jpeg,spectral,strip,neural_cleanse"]


def _bench(data_dir, out, *extra, check=True):
    cmd = [sys.executable, "-m", "badhash_tf.bench", "--flagfile=flags/digits.cfg",
           f"--data_dir={data_dir}", f"--output_dir={out}", *FLAGS, *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_bench_writes_a_leaderboard_and_a_rerun_skips(data_dir, tmp_path):
    out = tmp_path / "bench"
    _bench(data_dir, out)
    board = json.loads((out / "bench.json").read_text())["datasets"]["badhash_digits"]
    rows = {r["attack"]: r for r in board["rows"]}
    assert set(rows) == set(ATTACKS)
    assert sorted(r["rank"] for r in rows.values()) == [1, 2, 3]
    for row in rows.values():
        assert row["backdoor_gain"] == pytest.approx(row["t_map"] - row["t_map_clean_victim"])
        assert 0.0 <= row["t_map_after_jpeg"] <= 1.0 and 0.0 <= row["auroc_strip"] <= 1.0
        assert row["cleanse_target_flagged"] in ("0/1", "1/1")
    assert rows["darkhash"]["threat"] == "data-free (trained model)"
    assert rows["darkhash"]["t_map_after_spectral"] == "n/a"  # no poisoned training data
    assert 0.0 <= rows["sig"]["auroc_spectral"] <= 1.0
    assert rows["sig"]["psnr_min"] >= 30  # the run's budget
    page = (out / "bench.html").read_text()
    for name in ATTACKS:
        assert f"<td>{name}</td>" in page
    assert page.count("src='data:image/png;base64,") == 2  # t-MAP and AUROC heatmaps
    assert "| darkhash | data-free" in (out / "bench.md").read_text()
    again = _bench(data_dir, out)
    assert "every attack finished earlier, skipped" in again.stderr
    assert again.stderr.count("finished earlier, skipped") >= 1 + 4 * len(ATTACKS)
    assert json.loads((out / "bench.json").read_text())["datasets"]["badhash_digits"][
        "rows"] == board["rows"]


@pytest.mark.parametrize("flag,message", [
    ("--attacks=badhash,darkhsh", "--attacks: unknown 'darkhsh'"),
    ("--darkhash_frozen_layers=20", "--darkhash_frozen_layers=20: the small_cnn backbone has "
                                    "9 layers with weights"),
    ("--darkhash_surrogate=badhash_digits", "--darkhash_surrogate=badhash_digits is the "
                                            "attacked dataset"),
])
def test_bench_refuses_bad_input_before_any_work(data_dir, tmp_path, flag, message):
    done = _bench(data_dir, tmp_path / "bench", flag, check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "bench" / "badhash_digits").exists()


def test_attack_and_defense_lists_are_checked():
    with pytest.raises(ValueError, match="--attacks=sig: include badhash"):
        bench.check_attacks(["sig"])
    with pytest.raises(ValueError, match="--defenses: unknown 'cleanse'"):
        harness.check_defenses(["jpeg", "cleanse"])
    bench.check_attacks(list(bench.ATTACKS))
