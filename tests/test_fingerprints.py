"""A run directory never mixes stages made with different flags: each stage's fingerprint
is recorded, a rerun with other flags stops naming the stage and the flags, --overwrite
moves the stage aside, and flags that do not change results may differ."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from badhash_tf import fingerprints
from badhash_tf.attack import experiment
from badhash_tf.attack.experiment import AttackConfig, ExperimentConfig
from badhash_tf.attack.layout import RunLayout
from badhash_tf.attack.victim import RetrievalConfig
from badhash_tf.data.inputs import DataConfig
from badhash_tf.training.gan import GANConfig
from badhash_tf.training.hashing import HashingConfig
from badhash_tf.training.labcln import LabCLNConfig
from badhash_tf.training.loop import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ExperimentConfig(DataConfig(), HashingConfig(), TrainConfig(), RetrievalConfig(),
                          LabCLNConfig(), GANConfig(), AttackConfig(target_label=3))


def _stages(config, root):
    return experiment.stage_fingerprints(config, RunLayout(str(root)), ("badhash", "patch"))


def _make_dirs(stages):
    for directory in stages:
        os.makedirs(os.path.join(directory, "ckpt"), exist_ok=True)


def test_a_changed_target_flags_the_variants_not_the_shared_stages(tmp_path):
    stages = _stages(CONFIG, tmp_path)
    _make_dirs(stages)
    fingerprints.check_and_record(str(tmp_path), stages)
    moved = dataclasses.replace(CONFIG, attack=dataclasses.replace(CONFIG.attack,
                                                                   target_label=6))
    with pytest.raises(fingerprints.StageMismatchError) as error:
        fingerprints.check_and_record(str(tmp_path), _stages(moved, tmp_path))
    message = str(error.value)
    assert "badhash/ (--target_label 3 -> 6)" in message
    assert "patch/ (--target_label 3 -> 6)" in message
    assert "surrogate" not in message and "labcln" not in message
    assert "--overwrite" in message
    # the hash weight changes BadHash's stage only; the learning rate every stage
    hashed = dataclasses.replace(CONFIG, gan=dataclasses.replace(CONFIG.gan, hash_weight=50.))
    with pytest.raises(fingerprints.StageMismatchError, match=r"^[^;]*badhash/ \("
                       r"--gan_hash_weight 10\.0 -> 50\.0\)\. Rerun"):
        fingerprints.check_and_record(str(tmp_path), _stages(hashed, tmp_path))
    faster = dataclasses.replace(CONFIG, hashing=dataclasses.replace(CONFIG.hashing,
                                                                     learning_rate=0.01))
    with pytest.raises(fingerprints.StageMismatchError,
                       match="surrogate/ \\(--learning_rate 0.001 -> 0.01\\)"):
        fingerprints.check_and_record(str(tmp_path), _stages(faster, tmp_path))


def test_a_field_added_since_the_record_matches_while_it_keeps_its_default(tmp_path):
    stages = _stages(CONFIG, tmp_path)
    _make_dirs(stages)
    old = {d: {k: v for k, v in f.items() if k != "gan.target_code"}  # an older version's
           for d, f in stages.items()}
    fingerprints.check_and_record(str(tmp_path), old)
    default = fingerprints.defaults(gan=CONFIG.gan)
    fingerprints.check_and_record(str(tmp_path), stages, default=default)  # agrees
    anchored = dataclasses.replace(CONFIG, gan=dataclasses.replace(CONFIG.gan,
                                                                   target_code="class_anchor"))
    (tmp_path / fingerprints.RECORD).unlink()
    fingerprints.check_and_record(str(tmp_path), old)  # recorded by the older version again
    with pytest.raises(fingerprints.StageMismatchError,
                       match="badhash/ \\(--gan_target_code 'labcln' -> 'class_anchor'\\)"):
        fingerprints.check_and_record(str(tmp_path), _stages(anchored, tmp_path),
                                      default=default)


def test_flags_that_do_not_change_results_may_differ(tmp_path):
    stages = _stages(CONFIG, tmp_path)
    _make_dirs(stages)
    fingerprints.check_and_record(str(tmp_path), stages)
    other = dataclasses.replace(
        CONFIG, train=dataclasses.replace(CONFIG.train, steps_per_loop=7, logical_cpus=2,
                                          strategy="mirrored", overwrite=True),
        data=dataclasses.replace(CONFIG.data, cache="none", data_dir="/elsewhere"),
        attack=dataclasses.replace(CONFIG.attack, samples=3, baselines=()))
    fingerprints.check_and_record(str(tmp_path), _stages(other, tmp_path))  # no error


def test_overwrite_moves_the_differing_stage_aside_and_records_the_new_flags(tmp_path):
    stages = _stages(CONFIG, tmp_path)
    _make_dirs(stages)
    fingerprints.check_and_record(str(tmp_path), stages)
    (tmp_path / "badhash" / "ckpt" / "marker").write_text("old")
    hashed = dataclasses.replace(CONFIG, gan=dataclasses.replace(CONFIG.gan, hash_weight=50.))
    fingerprints.check_and_record(str(tmp_path), _stages(hashed, tmp_path), overwrite=True)
    aside = [p for p in os.listdir(tmp_path) if p.startswith("badhash.replaced-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "ckpt" / "marker").read_text() == "old"
    assert not (tmp_path / "badhash").exists() and (tmp_path / "patch").exists()
    record = json.loads((tmp_path / fingerprints.RECORD).read_text())
    assert record["badhash"]["gan.hash_weight"] == 50.0
    fingerprints.check_and_record(str(tmp_path), _stages(hashed, tmp_path))  # now agrees


def test_train_victim_rerun_with_other_flags_stops_before_any_work(data_dir, tmp_path):
    out = tmp_path / "victim"
    base = [sys.executable, "-m", "badhash_tf.train_victim", "--flagfile=flags/digits_victim.cfg",
            f"--data_dir={data_dir}", f"--output_dir={out}", "--train_split=train[:32]",
            "--query_split=query[:20]", "--database_split=database[:60]", "--train_steps=2",
            "--global_batch_size=16", "--map_top_k=20", "--precision_k=5"]
    run = lambda *extra: subprocess.run(base + list(extra), cwd=ROOT, capture_output=True,
                                        text=True, timeout=300,
                                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    done = run()
    assert done.returncode == 0, done.stderr[-2000:]
    # the console: our progress and result lines, not the libraries' INFO chatter
    assert "hashing step 2/2" in done.stderr and "metrics.json" in done.stderr
    assert "Constructing tf.data.Dataset" not in done.stderr
    assert "Sharding callback" not in done.stderr
    before = (out / "metrics.json").read_text()
    done = run("--method=dpsh", "--learning_rate=0.01")
    assert done.returncode != 0
    assert "--learning_rate 0.001 -> 0.01" in done.stderr and "--method 'hashnet' -> 'dpsh'" \
        in done.stderr
    assert (out / "metrics.json").read_text() == before  # untouched
    done = run("--method=dpsh", "--overwrite", "--verbosity=1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Constructing tf.data.Dataset" in done.stderr  # the chatter, when asked for
    assert json.loads((out / "metrics.json").read_text())["config"]["method"] == "dpsh"
    aside = [p for p in os.listdir(tmp_path) if p.startswith("victim.replaced-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "metrics.json").read_text() == before


def test_train_steps_records_the_counts_it_overrides_as_overridden():
    """--train_steps=20 runs every stage 20 steps: --gan_epochs 1 and 2 give one run, and
    one fingerprint saying so."""
    from badhash_tf.training.gan import GANConfig
    from badhash_tf.training.loop import TrainConfig
    short = lambda epochs: fingerprints.flatten(train=TrainConfig(train_steps=20, epochs=3),
                                                gan=GANConfig(epochs=epochs))
    assert short(1) == short(2)
    assert short(1)["gan.epochs"] == "(--train_steps=20)" == short(1)["train.epochs"]
    full = lambda epochs: fingerprints.flatten(train=TrainConfig(), gan=GANConfig(epochs=epochs))
    assert full(1)["gan.epochs"] == 1 and full(1) != full(2)
