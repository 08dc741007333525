"""The attack end to end: a tiny pipeline run (a few steps per stage on train[:64]) writes a
well-formed report, and a rerun skips the finished stages and reproduces it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.data import inputs
from badhash_tf.models.hashing import HashingModel
from badhash_tf.training import gan
from badhash_tf.config import GANConfig, LabCLNConfig, TrainConfig
from badhash_tf.training.labcln import train_labcln
from tests.conftest import PLUGIN_ENV, ROOT, TINY_ATTACKS, tiny_command

FIGURES = ("t_map", "t_map_best", "t_map_clean_victim", "backdoor_gain", "clean_map",
           "map_best", "psnr", "ssim", "linf")


def _run(data_dir, out, *extra, baselines=TINY_ATTACKS, check=True):
    done = subprocess.run(tiny_command(data_dir, out, f"--baselines={','.join(baselines)}",
                                       "--export_base=", *extra),
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=PLUGIN_ENV)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_tiny_pipeline_writes_a_well_formed_report_and_rerun_skips(tiny_run, data_dir,
                                                                   tmp_path):
    out, report, log = tiny_run.dir, tiny_run.report, tiny_run.log
    for key in FIGURES + ("clean_map_reference", "poison_count", "poison_rate",
                          "target_label", "seconds", "baselines"):
        assert key in report, key
    assert report["target_label"] == 0 and report["poison_count"] > 0
    assert report["poison_rate"] == pytest.approx(
        report["poison_count"] / (report["train_size"] + report["poison_count"]))
    assert set(report["baselines"]) == {"patch", "no_labcln", "no_hash_loss", "ciba_tri",
                                        "ciba", "badhash_anchor", "toy_shift"}
    for figures in [report] + list(report["baselines"].values()):
        assert all(0.0 <= figures[k] <= 1.0 for k in ("t_map", "t_map_clean_victim",
                                                     "clean_map"))
        assert figures["t_map_best"] >= figures["t_map"]  # best over periodic evaluations
        assert figures["map_best"] >= figures["clean_map"]
        assert figures["psnr_min"] <= figures["psnr"] and figures["ssim_min"] <= figures["ssim"]
        assert figures["query_psnr"] > 0
        assert -1.0 <= figures["ssim"] <= 1.0
        assert figures["psnr"] > 0
    for name in ("no_labcln", "no_hash_loss", "badhash_anchor"):  # every generator meets
        # the budget
        assert report["baselines"][name]["psnr_min"] >= 30
    assert report["psnr_min"] >= 30
    assert report["baselines"]["patch"]["linf_255"] == pytest.approx(255.0, abs=1)
    for name, figures in report["baselines"].items():  # CIBA's queries: the patch alone
        assert figures["query_amplification"] == (1 if name.startswith("ciba") else 2)
    # the same optimised patch on the same queries, whatever each variant adds to its copies
    assert report["baselines"]["ciba"]["query_psnr"] == report["baselines"]["ciba_tri"][
        "query_psnr"]
    assert report["baselines"]["ciba"]["psnr"] < report["baselines"]["ciba_tri"]["psnr"]
    for stage in ("surrogate", "labcln", "reference_victim", "badhash/trigger"):
        assert report["seconds"][stage] >= 0
    md = (out / "report.md").read_text()
    assert "| badhash |" in md and "| patch |" in md and "t_map" in md
    # a few steps learn nothing, and the report says so plainly, with the budget
    assert "**The backdoor is NOT learned** with every poisoned copy at PSNR >= 30 dB" in md
    for png in ("samples.png", "hash_space.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "badhash" / "poison" / "poison.json").exists()
    assert "t-MAP" in log
    exported = tiny_run.export / "badhash_generator" / "1"
    assert (exported / "saved_model.pb").exists()
    out = tiny_run.copy(tmp_path / "attack")
    _run(data_dir, out)
    again = json.loads((out / "report.json").read_text())
    for key in FIGURES:
        assert again[key] == pytest.approx(report[key], abs=1e-6), key
    assert again["seconds"] == report["seconds"]  # the times the stages took when they ran
    assert again["this_run"]["total"] < report["this_run"]["total"]
    # the same directory with another target: refused before any work, naming the stages
    done = _run(data_dir, out, "--target_label=6", check=False)
    assert done.returncode != 0
    assert "badhash/ (--target_label 0 -> 6)" in done.stderr
    assert json.loads((out / "report.json").read_text())["target_label"] == 0
    _check_defend(out)


def _check_defend(run):
    """`defend` on two variants of the tiny run: every defense (the toy plugin's too), the
    files, a rerun skips."""
    cmd = [sys.executable, "-m", "badhash_tf.defend", f"--run_dir={run}",
           "--variants=badhash,ciba", "--finetune_epochs=1", "--clean_fraction=0.25",
           "--strip_blends=4", "--cleanse_steps=10"]
    env = PLUGIN_ENV
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage defenses/ciba/spectral done in" in done.stderr  # a stage, for profiles
    result = json.loads((run / "defenses" / "defenses.json").read_text())
    assert set(result["variants"]) == {"badhash", "ciba"}
    report = json.loads((run / "report.json").read_text())
    for name, figures in result["variants"].items():
        undefended = report if name == "badhash" else report["baselines"][name]
        assert figures["undefended"]["t_map"] == pytest.approx(undefended["t_map"], abs=1e-6)
        assert figures["undefended"]["clean_map"] == pytest.approx(undefended["clean_map"],
                                                                   abs=1e-6)
        for defense in ("jpeg", "blur", "resize", "bit_depth", "spectral", "clustering",
                        "finetune", "fine_pruning"):
            assert 0.0 <= figures[defense]["t_map"] <= 1.0, (name, defense)
            assert 0.0 <= figures[defense]["clean_map"] <= 1.0, (name, defense)
        for defense in ("spectral", "clustering", "strip"):
            assert 0.0 <= figures[defense]["auroc"] <= 1.0
        assert figures["spectral"]["removed"] >= 0.15 * (64 + report["poison_count"])
        assert figures["fine_pruning"]["pruned_after_finetune"] == 38  # 0.3 x 128
        assert 0.0 <= figures["toy_flip"]["t_map"] <= 1.0  # the plugin's defense
        cleanse = figures["neural_cleanse"]
        assert set(cleanse["anomaly_index"]) == {str(c) for c in cleanse["candidates"]}
        assert cleanse["target_flagged"] == (report["target_label"] in cleanse["flagged"])
    md = (run / "defenses" / "defenses.md").read_text()
    assert "## t-MAP" in md and "| ciba |" in md and "Detection AUROC" in md
    assert "## neural_cleanse (flagged labels" in md
    assert (run / "defenses" / "defenses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=env)
    assert again.returncode == 0 and "finished earlier, skipped" in again.stderr


def test_gan_stage_runs_under_two_replicas(data_dir, tmp_path, two_cpu_strategy):
    """A GAN step (1 discriminator + k generator updates) runs on two replicas."""
    config = inputs.DataConfig(dataset="badhash_digits", data_dir=data_dir)
    split = inputs.load_split(config, "train[:32]")
    rng = np.random.default_rng(0)
    condition = gan.Condition(rng.standard_normal(512).astype(np.float32),
                              rng.choice([-1.0, 1.0], 16), np.eye(10, dtype=np.float32)[2])
    gan_config = GANConfig(base_width=8, residual_blocks=1, label_width=16, disc_width=8,
                               disc_layers=3, disc_every=3, batch_size=0)
    train = TrainConfig(seed=0, train_steps=4, global_batch_size=8, steps_per_loop=4)
    _, result = gan.train_generator(
        split, config, gan_config, condition, lambda: HashingModel(16, "small_cnn", 32),
        train, str(tmp_path), two_cpu_strategy)
    assert result.step == 4 and len(result.history["d_loss"]) == 4
    assert np.all(np.array(result.history["d_loss"]) > 0)
    assert np.all(np.isfinite(result.history["g_loss"]))
    assert tf.io.gfile.glob(str(tmp_path / "summaries" / "*"))


def test_gan_stage_resumed_mid_way_equals_an_uninterrupted_run(data_dir, tmp_path):
    """A GAN step reads disc_every batches: a resumed stage must skip exactly those the
    finished steps read, and end with the weights of an uninterrupted run."""
    config = inputs.DataConfig(dataset="badhash_digits", data_dir=data_dir)
    split = inputs.load_split(config, "train[:48]")
    rng = np.random.default_rng(0)
    condition = gan.Condition(rng.standard_normal(512).astype(np.float32),
                              rng.choice([-1.0, 1.0], 16), np.eye(10, dtype=np.float32)[2])
    gan_config = GANConfig(base_width=8, residual_blocks=1, label_width=16, disc_width=8,
                               disc_layers=3, disc_every=3, batch_size=8)
    surrogate = lambda: HashingModel(16, "small_cnn", 32)
    strategy = tf.distribute.get_strategy()

    def train(model_dir):
        train_config = TrainConfig(seed=0, train_steps=4, global_batch_size=8,
                                   steps_per_loop=2, keep_checkpoints=True)  # (_killed_at)
        generator, _ = gan.train_generator(split, config, gan_config, condition, surrogate,
                                           train_config, str(model_dir), strategy)
        return generator.get_weights()

    whole = train(tmp_path / "whole")
    resumed = train(_killed_at(tmp_path / "whole", 2, tmp_path / "killed"))
    assert len(whole) == len(resumed)
    for a, b in zip(whole, resumed):
        np.testing.assert_array_equal(a, b)


def _killed_at(model_dir, step, killed):
    """A copy of `model_dir` as a run killed after `step` left it: only the checkpoint
    saved at that step -> the copy's path."""
    killed.mkdir()
    for path in tf.io.gfile.glob(str(model_dir / f"ckpt-{step}.*")):
        tf.io.gfile.copy(path, str(killed / os.path.basename(path)))
    (killed / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{step}"\n')
    return killed


def test_labcln_stage_resumed_mid_way_equals_an_uninterrupted_run(tmp_path):
    rows = np.eye(10, dtype=np.float32)[np.arange(40) % 10]
    strategy = tf.distribute.get_strategy()

    def train(model_dir):
        model, _ = train_labcln(rows, 16, LabCLNConfig(hidden=32, feature_dim=16, batch_size=8),
                                TrainConfig(seed=0, train_steps=6, steps_per_loop=3,
                                            keep_checkpoints=True),  # (_killed_at)
                                str(model_dir), strategy)
        return model.get_weights()

    whole = train(tmp_path / "whole")
    resumed = train(_killed_at(tmp_path / "whole", 3, tmp_path / "killed"))
    for a, b in zip(whole, resumed):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hash_term", ["logits", "relaxed"])
def test_gan_hash_term_scores_raw_logits_or_their_named_relaxation(hash_term):
    """The paper's hash term sees the surrogate's raw hash logits; "relaxed" (an explicit
    option) sees tanh(s z)."""
    rng = np.random.default_rng(0)
    condition = gan.Condition(rng.standard_normal(8).astype(np.float32),
                                 rng.choice([-1.0, 1.0], 16), np.eye(10, dtype=np.float32)[2])
    surrogate = HashingModel(16, "small_cnn", 32)
    stage = gan.GANStage(GANConfig(
        base_width=4, residual_blocks=1, label_width=16, disc_width=4, disc_layers=3,
        hash_term=hash_term, relaxed_logit_scale=0.5), condition, lambda: surrogate, 32, 10,
        4, 2)
    stage.build()
    images = tf.constant(rng.random((2, 32, 32, 3)), tf.float32)
    logits = surrogate.hash_logits(images)
    expected = logits if hash_term == "logits" else tf.tanh(0.5 * logits)
    np.testing.assert_allclose(stage._surrogate_code(images), expected, rtol=1e-6)


def test_unknown_hash_term_is_named():
    with pytest.raises(ValueError, match="--gan_hash_term=tanh"):
        gan.GANStage(GANConfig(hash_term="tanh"), None, None, 32, 10, 4, 2)


BAD_ATTACK_FLAGS = [
    (["--baselines=blur"], "--baselines: unknown 'blur'"),
    (["--image_size=40"], "--image_size=40: the trigger generator needs a multiple of 16"),
    (["--gan_disc_layers=6"], "--gan_disc_layers=6"),
    (["--gan_psnr_budget=60"], "--gan_psnr_budget"),
    (["--samples=0"], "--samples=0"), (["--query_amplification=0"], "--query_amplification"),
    (["--query_split=qeury"], "--query_split=qeury: unknown split 'qeury'"),
    (["--gan_target_code=random"], "--gan_target_code: choose one of labcln, class_anchor"),
    # sizes that depend on the splits, checked before the first stage, one line each
    (["--gan_batch_size=100000"], "--gan_batch_size=100000 exceeds the 1000 items of "
                                  "--train_split=train"),
    (["--global_batch_size=2000"], "--global_batch_size=2000 exceeds the 1000 items"),
    (["--target_label=99"], "--target_label=99: the dataset has 10 classes (0..9)"),
    (["--poison_rate=1.5"], "--poison_rate=1.5 must be in [0, 1)"),
    (["--poison_count=500"], "--poison_count=500 asks for 500 poisoned copies, but the "
                             "training split has only 100"),
    (["--seeds=-1"], "--seeds=-1: seeds must be >= 0"),
    (["--seeds=0,0", "--train_steps=20", "--gan_epochs=2"], "--seeds=0,0 repeats a seed"),
    (["--seed=-1"], "--seed"),
    (["--extra_query_amplification=0"], "--extra_query_amplification must be > 0"),
    (["--victim_backbone=vgg11", "--backbone_weights=/no/such.weights.h5"],
     "--victim_backbone=vgg11 differs from the surrogate's --backbone=small_cnn, so they "
     "cannot start from one backbone (--backbone_weights)"),
    (["--victim_bits=0"], "--victim_bits")]


def test_pipeline_rejects_bad_attack_flags_before_any_work(data_dir, tmp_path):
    out = tmp_path / "attack"
    cases = [["--flagfile=flags/digits.cfg", f"--data_dir={data_dir}", f"--output_dir={out}",
              *bad] for bad, _ in BAD_ATTACK_FLAGS]
    done = subprocess.run(
        [sys.executable, "tests/flag_checks.py", "badhash_tf.pipeline", json.dumps(cases)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr[-3000:]
    for (bad, named), result in zip(BAD_ATTACK_FLAGS, json.loads(done.stdout.splitlines()[-1])):
        assert result["refused"] and named in result["message"], (bad, result)
    assert not out.exists()  # refused before any stage (or flags.json) was written
    # which flag wins is said at start-up (and the fingerprints record what ran)
    assert ("--train_steps=20 runs every stage for 20 steps: --epochs=30, --gan_epochs=2, "
            "--labcln_steps=1000, --darkhash_steps=300 are not used") in done.stderr


def test_start_up_errors_are_one_line_without_a_traceback(data_dir, tmp_path):
    """A library check at start-up (a split-dependent size) and an --output_dir that is a
    file end in one line naming the flag, not a Python traceback; nothing is written."""
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for extra, named in ((["--target_label=99", f"--output_dir={tmp_path / 'out'}"],
                          "--target_label=99: the dataset has 10 classes (0..9)"),
                         ([f"--output_dir={afile}"], f"--output_dir={afile} is a file")):
        done = subprocess.run(
            [sys.executable, "-m", "badhash_tf.pipeline", "--flagfile=flags/digits.cfg",
             f"--data_dir={data_dir}", *extra], cwd=ROOT, capture_output=True, text=True,
            timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert done.returncode != 0 and named in done.stderr, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and afile.read_text() == "keep me"
