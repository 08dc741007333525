"""A run directory never mixes stages made with different flags or data: each stage carries
its own record; a rerun with other flags stops naming the stage and the flags, --overwrite
moves the stage aside, flags that do not change results may differ, and a stage without a
readable record is never taken for one of this run's."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from badhash_tf import fingerprints
from badhash_tf.config import (AttackConfig, DataConfig, ExperimentConfig, GANConfig,
                               HashingConfig, LabCLNConfig, RetrievalConfig, TrainConfig,
                               replace_in)
from badhash_tf.engine import cells
from tests.stage_helpers import FixedData, record, stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ExperimentConfig(DataConfig(), HashingConfig(), TrainConfig(), RetrievalConfig(),
                          LabCLNConfig(), GANConfig(), AttackConfig(target_label=3))


def _check(config, root, **kwargs):
    return cells.check(stages(config, root, **kwargs).values(), str(root))


def test_a_changed_target_flags_the_variants_not_the_shared_stages(tmp_path):
    record(stages(CONFIG, tmp_path))
    assert {d.state for d in _check(CONFIG, tmp_path).values()} == {cells.RESUME}
    moved = replace_in(CONFIG, "attack", target_label=6)
    with pytest.raises(cells.StageMismatchError) as error:
        _check(moved, tmp_path)
    message = str(error.value)
    assert "badhash/ (--target_label 3 -> 6)" in message
    assert "patch/ (--target_label 3 -> 6)" in message
    assert "surrogate" not in message and "labcln" not in message
    assert "--overwrite" in message
    # the hash weight changes BadHash's stage only; the learning rate every stage
    hashed = replace_in(CONFIG, "gan", hash_weight=50.)
    with pytest.raises(cells.StageMismatchError, match=r"^[^;]*badhash/ \("
                       r"--gan_hash_weight 10\.0 -> 50\.0\)\. Rerun"):
        _check(hashed, tmp_path)
    faster = replace_in(CONFIG, "hashing", learning_rate=0.01)
    with pytest.raises(cells.StageMismatchError,
                       match="surrogate/ \\(--learning_rate 0.001 -> 0.01\\)"):
        _check(faster, tmp_path)


def test_changed_data_is_named_and_a_stage_reading_other_splits_is_spared(tmp_path):
    """The data's identity is in each stage's fingerprint: an edited query split refuses
    the stages that read it, naming the part that changed, not the surrogate (training
    split only)."""
    record(stages(CONFIG, tmp_path))
    edited = FixedData({"--query_split": {"dataset": "fixed", "query_label.txt": "other"}})
    with pytest.raises(cells.StageMismatchError) as error:
        _check(CONFIG, tmp_path, data=edited)
    message = str(error.value)
    assert "reference_victim/ (the data of --query_split: query_label.txt changed)" in message
    assert "surrogate/" not in message and "labcln/" not in message


def test_a_field_added_since_the_record_matches_while_it_keeps_its_default(tmp_path):
    found = stages(CONFIG, tmp_path)
    old = {d: dataclasses.replace(s, fingerprint={k: v for k, v in s.fingerprint.items()
                                                  if k != "gan.target_code"})
           for d, s in found.items()}  # an older version's records
    record(old)
    _check(CONFIG, tmp_path)  # agrees: the missing field keeps its default
    anchored = replace_in(CONFIG, "gan", target_code="class_anchor")
    with pytest.raises(cells.StageMismatchError,
                       match="badhash/ \\(--gan_target_code 'labcln' -> 'class_anchor'\\)"):
        _check(anchored, tmp_path)


def test_flags_that_do_not_change_results_may_differ(tmp_path):
    record(stages(CONFIG, tmp_path))
    other = dataclasses.replace(
        CONFIG, train=dataclasses.replace(CONFIG.train, steps_per_loop=7, logical_cpus=2,
                                          strategy="mirrored", overwrite=True),
        data=dataclasses.replace(CONFIG.data, cache="none", data_dir="/elsewhere"),
        attack=dataclasses.replace(CONFIG.attack, samples=3, baselines=()))
    _check(other, tmp_path)  # no error


def test_overwrite_moves_the_differing_stage_aside_and_records_the_new_flags(tmp_path):
    record(stages(CONFIG, tmp_path))
    (tmp_path / "badhash" / "ckpt" / "marker").write_text("old")
    hashed = replace_in(CONFIG, "gan", hash_weight=50.)
    decisions = cells.check(stages(hashed, tmp_path).values(), str(tmp_path), overwrite=True)
    assert decisions[str(tmp_path / "badhash")].state == cells.MISMATCH
    with cells.claim(stages(hashed, tmp_path)["badhash"], overwrite=True) as decision:
        assert decision.state == cells.TO_RUN
    aside = [p for p in os.listdir(tmp_path) if p.startswith("badhash.replaced-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "ckpt" / "marker").read_text() == "old"
    assert (tmp_path / "patch" / cells.RECORD).exists()
    saved = json.loads((tmp_path / "badhash" / cells.RECORD).read_text())
    assert saved["fingerprint"]["gan.hash_weight"] == 50.0
    _check(hashed, tmp_path)  # now agrees


def test_a_lost_or_broken_record_never_lets_a_stage_pass(tmp_path):
    """A stage whose record is gone or truncated is refused, naming it and what to do
    (never reused and relabelled with this run's flags); an empty directory is to run."""
    record(stages(CONFIG, tmp_path))
    (tmp_path / "badhash" / cells.RECORD).unlink()
    (tmp_path / "patch" / cells.RECORD).write_text('{"fingerprint": {"data.da')
    with pytest.raises(cells.StageMismatchError) as error:
        _check(replace_in(CONFIG, "gan", hash_weight=100.), tmp_path)
    message = str(error.value)
    assert "badhash/ (it holds a stage without its record (stage.json)" in message
    assert f"{tmp_path / 'patch' / cells.RECORD} does not read back (JSONDecodeError" \
        in message and "mv " in message
    (tmp_path / "empty").mkdir()
    assert cells.decide(cells.Stage(str(tmp_path / "empty"), {})).state == cells.TO_RUN


def test_a_changed_input_makes_a_stage_stale_and_it_is_moved_aside(tmp_path):
    stage = cells.Stage(str(tmp_path / "d"), {"defense.jpeg_quality": 75}, "defense.json",
                        inputs={"attack result": "a"})
    with cells.claim(stage) as decision:
        assert decision.state == cells.TO_RUN
    (tmp_path / "d" / "defense.json").write_text("{}")
    assert cells.decide(stage).state == cells.FINISHED
    again = dataclasses.replace(stage, inputs={"attack result": "b"})
    assert cells.decide(again) == cells.Decision(cells.STALE,
                                                 "made from an earlier attack result")
    with cells.claim(again) as decision:
        assert decision.state == cells.TO_RUN
    assert any(p.startswith("d.replaced-") for p in os.listdir(tmp_path))


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
    short = lambda epochs: fingerprints.flatten(train=TrainConfig(train_steps=20, epochs=3),
                                                gan=GANConfig(epochs=epochs))
    assert short(1) == short(2)
    assert short(1)["gan.epochs"] == "(--train_steps=20)" == short(1)["train.epochs"]
    full = lambda epochs: fingerprints.flatten(train=TrainConfig(), gan=GANConfig(epochs=epochs))
    assert full(1)["gan.epochs"] == 1 and full(1) != full(2)


def test_a_backbone_file_is_compared_by_its_bytes_not_its_path(tmp_path):
    """The same weights reached through another path (a relative cache read from another
    directory, a copy) are the same input; other bytes at the same path are not."""
    first, copy = tmp_path / "a.weights.h5", tmp_path / "elsewhere.weights.h5"
    first.write_bytes(b"weights one")
    copy.write_bytes(b"weights one")
    runs = tmp_path / "run"
    with_file = lambda path: replace_in(CONFIG, "hashing", backbone_weights=str(path))
    record(stages(with_file(first), runs))
    _check(with_file(copy), runs)  # no error: equal bytes
    first.write_bytes(b"weights two")
    with pytest.raises(cells.StageMismatchError, match=r"surrogate/ \(--pretrained_backbone "
                       r"/ .*\(sha256 [0-9a-f]{16}\)' -> '.*a\.weights\.h5 \(sha256 "):
        _check(with_file(first), runs)
