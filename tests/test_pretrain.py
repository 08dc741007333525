"""Pretraining a backbone on a pool and starting the surrogate and victims from it: the
augmentation, the command's files and accuracy, the exact starting weights, the flags'
checks and the fingerprint of the backbone's bytes."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.config import (AttackConfig, DataConfig, ExperimentConfig, GANConfig,
                               HashingConfig, LabCLNConfig, RetrievalConfig, TrainConfig)
from badhash_tf.engine import cells
from badhash_tf.models.hashing import HashingModel, make_backbone
from badhash_tf.training import hashing, pretrain
from tests.stage_helpers import record, stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def test_augment_shifts_within_bounds_and_is_seeded():
    images = tf.random.stateless_uniform([6, 8, 8, 3], [1, 2])
    seed = tf.constant([3, 4])
    out = pretrain.augment(images, seed, shift=2, flip=False)
    assert out.shape == images.shape
    np.testing.assert_array_equal(out, pretrain.augment(images, seed, 2, False))
    assert not np.array_equal(out, pretrain.augment(images, seed + 1, 2, False))
    padded = np.pad(images.numpy(), [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    for i in range(6):  # each output is one 8x8 window of its reflect-padded image
        windows = [padded[i, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        assert any(np.array_equal(out[i], w) for w in windows)
    np.testing.assert_array_equal(pretrain.augment(images, seed, 0, False), images)
    flipped = pretrain.augment(images, seed, 0, True).numpy()
    assert all(np.array_equal(f, x) or np.array_equal(f, x[:, ::-1])
               for f, x in zip(flipped, images.numpy()))


def _pretrain(data_dir, out, *extra):
    cmd = [sys.executable, "-m", "badhash_tf.pretrain", "--dataset=badhash_digits",
           f"--data_dir={data_dir}", "--pool_split=database[:400]", "--heldout=100",
           "--epochs=12", "--global_batch_size=32", "--steps_per_loop=40",
           "--augment=translate", f"--output_dir={out}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)


@pytest.fixture(scope="module")
def pretrained(data_dir, tmp_path_factory):
    """A small CNN pretrained on 300 of the digits' database images -> its directory."""
    out = tmp_path_factory.mktemp("pretrain") / "digits"
    done = _pretrain(data_dir, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out top-1" in done.stderr and "steps/s" in done.stderr
    return out


def test_pretraining_reaches_its_accuracy_and_writes_its_files(pretrained, data_dir):
    record = json.loads((pretrained / "pretrain.json").read_text())
    assert record["pool"] == "badhash_digits" and record["pool_split"] == "database[:400]"
    assert record["train_items"] == 300 and record["heldout"] == 100
    assert record["train_steps"] == 113  # ceil(12 epochs x 300 / 32)
    assert record["heldout_top1"] >= 0.7  # 10 classes: chance is 0.1
    assert len(record["evaluations"]) >= 10  # held-out top-1 once an epoch
    assert record["weights_sha256"] == io_utils.file_sha256(
        str(pretrained / "backbone.weights.h5"))
    for name in ("pretrain.md", "flags.json", "stage.json", "checkpoint"):
        assert (pretrained / name).is_file(), name
    assert any((pretrained / "summaries").iterdir())
    # a rerun with another flag is refused, naming it, and changes nothing
    stamp = (pretrained / "pretrain.json").stat().st_mtime_ns
    again = _pretrain(data_dir, pretrained, "--learning_rate=0.01")
    assert again.returncode != 0 and "--learning_rate 0.001 -> 0.01" in again.stderr
    assert (pretrained / "pretrain.json").stat().st_mtime_ns == stamp


def test_a_victim_starts_from_exactly_the_pretrained_backbone_with_a_fresh_head(pretrained):
    weights = str(pretrained / "backbone.weights.h5")
    saved = make_backbone("small_cnn", 32, weights).get_weights()
    keras.utils.set_random_seed(5)
    stage = hashing.HashingStage(HashingConfig(bits=16, backbone_weights=weights),
                                 10, 32, 16, 64)
    stage.build()
    start = stage.model.backbone.get_weights()
    assert len(start) == len(saved)
    for a, b in zip(start, saved):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(5)
    fresh = HashingModel(bits=16, image_size=32)
    for a, b in zip(stage.model.hash_layer.get_weights(), fresh.hash_layer.get_weights()):
        np.testing.assert_array_equal(a, b)  # the head as a from-scratch model's
    assert not np.array_equal(fresh.backbone.get_weights()[0], saved[0])


def _config(weights, surrogate=""):
    return ExperimentConfig(
        data=DataConfig(), hashing=HashingConfig(bits=16, backbone_weights=weights),
        train=TrainConfig(), retrieval=RetrievalConfig(), labcln=LabCLNConfig(),
        gan=GANConfig(), attack=AttackConfig(surrogate_backbone_weights=surrogate))


def test_a_rewritten_pretrained_backbone_is_refused_on_rerun(pretrained, tmp_path):
    weights = tmp_path / "pre" / "backbone.weights.h5"
    weights.parent.mkdir()
    weights.write_bytes((pretrained / "backbone.weights.h5").read_bytes())
    root = tmp_path / "run"
    config = _config(str(weights))
    found = lambda c: stages(c, root, ["badhash"])
    check = lambda c: cells.check(found(c).values(), str(root))
    record(found(config))
    check(config)  # the same bytes: accepted
    net = make_backbone("small_cnn", 32, str(weights))
    net.set_weights([w + 1.0 for w in net.get_weights()])
    net.save_weights(str(weights))  # rewritten in place, same path
    with pytest.raises(cells.StageMismatchError,
                       match=r"surrogate/ \(--pretrained_backbone.*sha256") as caught:
        check(config)
    assert "reference_victim/" in str(caught.value) and "badhash/" in str(caught.value)
    # the victims' own pool (a mismatch study) leaves the surrogate's record alone
    other = _config(str(pretrained / "backbone.weights.h5"), surrogate=str(weights))
    assert found(other)["surrogate"].fingerprint == found(
        _config(str(weights)))["surrogate"].fingerprint
    assert other.surrogate_hashing.backbone_weights == str(weights)
    assert dataclasses.replace(other, attack=AttackConfig()).surrogate_hashing == other.hashing


def test_pretrained_backbone_flags_are_checked_before_any_work(pretrained, tmp_path):
    out = tmp_path / "out"
    other_size = tmp_path / "big"
    other_size.mkdir()
    record = json.loads((pretrained / "pretrain.json").read_text())
    (other_size / "pretrain.json").write_text(json.dumps({**record, "image_size": 64}))
    (other_size / "backbone.weights.h5").write_bytes(b"")
    on_queries = tmp_path / "queries"
    on_queries.mkdir()
    (on_queries / "pretrain.json").write_text(json.dumps({**record, "pool_split": "query"}))
    (on_queries / "backbone.weights.h5").write_bytes(b"")
    base = ["--flagfile=flags/digits.cfg", f"--output_dir={out}"]
    cases = [
        ([f"--pretrained_backbone={tmp_path / 'none'}"], "--pretrained_backbone=.*no such"),
        ([f"--pretrained_backbone={tmp_path}"], "pretrain.json is missing"),
        ([f"--pretrained_backbone={other_size}"], "at --image_size=64; this run uses"),
        ([f"--pretrained_backbone={on_queries}"], "badhash_digits's query split, which holds"),
        ([f"--pretrained_backbone={pretrained}", "--backbone=vgg11"],
         "pretrained as --backbone=small_cnn"),
        ([f"--victim_pretrained_backbone={pretrained}"], "needs --pretrained_backbone"),
        ([f"--pretrained_backbone={pretrained}", f"--backbone_weights={tmp_path}/x.weights.h5"],
         "give one")]
    # The pretrained presets parse whole (an unknown or bad value would be refused first)
    # and read their backbone from --pretrained_backbone, here one that is not there.
    presets = [([f"--flagfile=flags/{preset}.cfg", f"--pretrained_backbone={tmp_path / 'no'}"],
                f"--pretrained_backbone={tmp_path / 'no'}: no such directory")
               for preset in ("demo", "digits_pretrained", "fashion_pretrained")]
    cases += presets
    done = subprocess.run(
        [sys.executable, "tests/flag_checks.py", "badhash_tf.frontier",
         json.dumps([base + c for c, _ in cases])],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    for (case, named), result in zip(cases, json.loads(done.stdout.splitlines()[-1])):
        assert result["refused"], case
        assert re.search(named, result["message"]), (case, result["message"])
    assert not out.exists()
