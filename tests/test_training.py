"""The shared training loop: replica parity, resume, reproducibility, the non-finite guard,
and the train_victim command line."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.data import inputs
from badhash_tf.models.hashing import HashingModel
from badhash_tf.training import loop
from badhash_tf.eval.codes import encode
from badhash_tf.config import HashingConfig, RetrievalConfig, TrainConfig
from badhash_tf.training.hashing import train_hashing_model

BATCH = 16


@pytest.fixture(scope="module")
def tiny(data_dir):
    config = inputs.DataConfig(dataset="badhash_digits", data_dir=data_dir)
    return config, inputs.load_split(config, "train[:64]")


def _train(tiny, model_dir, strategy, steps, method="hashnet", steps_per_loop=2,
           weight_decay=0.0, keep_checkpoints=True):
    """(keep_checkpoints: these tests stand for a killed run by a shorter finished one and
    train it on; a finished stage keeps only its final weights otherwise)"""
    data_config, split = tiny
    train = TrainConfig(seed=3, train_steps=steps, global_batch_size=BATCH,
                        steps_per_loop=steps_per_loop, keep_checkpoints=keep_checkpoints)
    return train_hashing_model(split, data_config, HashingConfig(
        method=method, weight_decay=weight_decay), train, str(model_dir), strategy)


def _codes(model, tiny):
    return encode(model, inputs.eval_dataset(tiny[1]))[0]


@pytest.mark.parametrize("method,weight_decay", [("hashnet", 0.0), ("csq", 0.0),
                                                 ("dpsh", 0.0), ("hashnet", 0.01)])
def test_two_replicas_match_one(tiny, tmp_path, two_cpu_strategy, method, weight_decay):
    """The same global batch split over 2 replicas gives the same losses and weights (the
    coupled L2 term too)."""
    one, r1 = _train(tiny, tmp_path / "one", tf.distribute.get_strategy(), 4, method,
                     weight_decay=weight_decay)
    two, r2 = _train(tiny, tmp_path / "two", two_cpu_strategy, 4, method,
                     weight_decay=weight_decay)
    assert len(r1.history["loss"]) == 4
    np.testing.assert_allclose(r2.history["loss"], r1.history["loss"], rtol=2e-4)
    for a, b in zip(one.trainable_variables, two.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-4)


def test_resume_matches_uninterrupted_run_and_seed_reproduces(tiny, tmp_path):
    strategy = tf.distribute.get_strategy()
    full, full_result = _train(tiny, tmp_path / "full", strategy, 6)
    _, first = _train(tiny, tmp_path / "resumed", strategy, 3, steps_per_loop=3)
    assert first.step == 3 and first.resumed_from == 0
    resumed, second = _train(tiny, tmp_path / "resumed", strategy, 6)
    assert second.resumed_from == 3 and second.step == 6
    np.testing.assert_allclose(first.history["loss"] + second.history["loss"],
                               full_result.history["loss"], rtol=1e-5)
    for a, b in zip(full.trainable_variables, resumed.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    again, _ = _train(tiny, tmp_path / "again", strategy, 6)
    np.testing.assert_array_equal(_codes(again, tiny), _codes(full, tiny))
    assert sorted(os.listdir(tmp_path / "full" / "summaries"))  # TensorBoard events written


class _NanAfter(loop.Stage):
    """A one-variable stage whose loss becomes NaN at step `bad_step`."""
    name = "nan_stage"

    def __init__(self, bad_step):
        self.bad_step = bad_step

    def build(self):
        self.weight = tf.Variable(1.0)

    def checkpoint_items(self):
        return {"weight": self.weight}

    def replica_step(self, batch, step):
        self.weight.assign_add(1.0)
        bad = tf.cast(step >= self.bad_step, tf.float32)
        return {"loss": tf.math.log(1.0 - bad) * 0.0 + tf.math.sqrt(-bad)}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    stage = _NanAfter(bad_step=3)
    make_dataset = lambda start: tf.data.Dataset.range(100).batch(1)
    config = loop.LoopConfig(str(tmp_path), train_steps=8, steps_per_loop=2)
    with pytest.raises(loop.NonFiniteLossError, match=r"loss became nan at step 4.*ckpt-2"):
        loop.run_stage(stage, make_dataset, tf.distribute.get_strategy(), config)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    restored = tf.Variable(0.0)
    tf.train.Checkpoint(weight=restored).restore(tf.train.latest_checkpoint(str(tmp_path)))
    assert float(restored.numpy()) == 3.0  # 1 + two good steps


def test_train_victim_command_line(data_dir, tmp_path):
    out = tmp_path / "victim"
    cmd = [sys.executable, "-m", "badhash_tf.train_victim", "--flagfile=flags/digits_victim.cfg",
           f"--data_dir={data_dir}", f"--output_dir={out}", "--train_split=train[:64]",
           "--query_split=query[:20]", "--database_split=database[:200]", "--train_steps=4",
           f"--global_batch_size={BATCH}", "--steps_per_loop=2", "--map_top_k=50",
           "--method=csq"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["map"] <= 1.0 and 0.0 <= metrics["map_at_k"] <= 1.0
    assert metrics["k"] == 50 and metrics["train_steps"] == 4 and metrics["seconds"] > 0
    assert 0.0 <= metrics["precision_at_k"] <= 1.0
    assert json.loads((out / "flags.json").read_text())["method"] == "csq"
    assert metrics["flags"]["train_steps"] == 4 and metrics["flags"]["method"] == "csq"
    codes = np.load(out / "codes.npz")
    assert codes["query_codes"].shape == (20, 32) and codes["db_codes"].shape == (200, 32)
    assert set(np.unique(codes["db_codes"])) <= {-1, 1}
    assert "MAP" in done.stderr and "metrics.json" in done.stderr
    # the trained backbone is kept as a pretrained starting point for other runs
    keras.utils.set_random_seed(0)
    fresh = HashingModel(bits=32, backbone="small_cnn", image_size=32)
    keras.utils.set_random_seed(0)
    loaded = HashingModel(bits=32, backbone="small_cnn", image_size=32,
                          backbone_weights=str(out / "backbone.weights.h5"))
    moved = [np.abs(a - b).max() for a, b in zip(loaded.backbone.get_weights(),
                                                  fresh.backbone.get_weights())]
    assert max(moved) > 1e-3


BAD_VICTIM_FLAGS = [  # (arguments, what the message must name); the replicas case last
    (["--method=ssdh"], "--method"), (["--steps_per_loop=0"], "--steps_per_loop=0"),
    (["--bits=0"], "--bits=0"), (["--map_top_k=0"], "--map_top_k=0"),
    (["--global_batch_size=0"], "--global_batch_size=0"), (["--epochs=0"], "--epochs"),
    (["--image_size=8"], "--image_size=8"),
    (["--bits=100000"], "--bits: at most 4096 (the paper's codes are 16 to 64 bits"),
    (["--global_batch_size=15", "--strategy=mirrored", "--logical_cpus=2"],
     "--global_batch_size=15 does not split over the 2 replicas")]


def test_command_line_rejects_bad_flags_before_any_work(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "out"
    cases = [["--flagfile=flags/digits_victim.cfg", f"--output_dir={out}", *bad]
             for bad, _ in BAD_VICTIM_FLAGS]
    done = subprocess.run(
        [sys.executable, "tests/flag_checks.py", "badhash_tf.train_victim", json.dumps(cases)],
        cwd=root, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=root))
    assert done.returncode == 0, done.stderr[-3000:]
    for (bad, named), result in zip(BAD_VICTIM_FLAGS, json.loads(done.stdout.splitlines()[-1])):
        assert result["refused"] and named in result["message"], (bad, result)
    assert not out.exists()  # nothing written, nothing trained


@pytest.mark.parametrize("program,presets", [
    ("train_victim", ("imagenet100", "nuswide", "mscoco")), ("pipeline", ("imagenet100_attack",))])
def test_paper_presets_parse_and_name_the_missing_dataset_root(program, presets, tmp_path):
    """The paper's presets are valid flagfiles; they require a pretrained backbone (the
    release fine-tunes ImageNet weights), and without the data they fail naming the root."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = tmp_path / "no_such_root"
    common = [f"--dataset=list:{missing}", f"--output_dir={tmp_path / 'out'}"]
    cases = [[f"--flagfile=flags/{preset}.cfg", *common] for preset in presets]
    cases.append([f"--flagfile=flags/{presets[0]}.cfg", *common, "--norequire_backbone_weights"])
    done = subprocess.run(
        [sys.executable, "tests/flag_checks.py", f"badhash_tf.{program}", json.dumps(cases)],
        cwd=root, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=root))
    assert done.returncode == 0, done.stderr[-3000:]
    *required, unrequired = json.loads(done.stdout.splitlines()[-1])
    assert all(r["refused"] and "--backbone_weights is required" in r["message"]
               for r in required)
    assert unrequired["refused"] and f"dataset root {missing} not found" in \
        unrequired["message"]
    assert "starts from random weights" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_tanh_scale_per_method_as_the_release():
    """HashNet: sqrt(epoch // 20 + 1); CSQ plain tanh; DPSH (not in the release) plain."""
    from badhash_tf.training.optimizers import tanh_scale
    assert [float(tanh_scale("hashnet", e)) for e in (0, 19, 20, 39, 40, 99)] == pytest.approx(
        [1.0, 1.0, 2 ** 0.5, 2 ** 0.5, 3 ** 0.5, 5 ** 0.5])
    assert float(tanh_scale("hashnet", 7, step_continuation=3)) == pytest.approx(3 ** 0.5)
    assert float(tanh_scale("csq", 99)) == 1.0 and float(tanh_scale("dpsh", 99)) == 1.0


@pytest.mark.parametrize("method,expected", [("hashnet", 3 ** 0.5), ("csq", 1.0)])
def test_training_applies_the_method_scale_by_epoch(tiny, tmp_path, method, expected):
    """64 items in batches of 16: 4 steps an epoch; with a continuation step of 1 epoch the
    9th step (step 8, epoch 2) runs HashNet at sqrt(3); CSQ stays at 1."""
    data_config, split = tiny
    train = TrainConfig(seed=3, train_steps=9, global_batch_size=BATCH, steps_per_loop=9)
    model, _ = train_hashing_model(split, data_config, HashingConfig(
        method=method, hashnet_step_continuation=1), train, str(tmp_path),
        tf.distribute.get_strategy())
    assert float(model.scale.numpy()) == pytest.approx(expected)


def test_rmsprop_with_coupled_l2_steps_as_torch():
    """torch RMSprop(lr, alpha=0.99, eps=1e-8, weight_decay=wd): g' = g + wd w,
    v = 0.01 g'^2, w -= lr g' / (sqrt(v) + eps). One step from w = 2 with dL/dw = 1."""
    from badhash_tf.training.optimizers import coupled_l2, make_optimizer
    lr, wd, w0 = 0.1, 0.5, 2.0
    w = tf.Variable([w0])
    optimizer = make_optimizer("rmsprop", lr)
    with tf.GradientTape() as tape:
        objective = tf.reduce_sum(w) + coupled_l2([w], wd, num_replicas=1)
    optimizer.apply_gradients([(tape.gradient(objective, w), w)])
    g = 1.0 + wd * w0
    expected = w0 - lr * g / (np.sqrt(0.01 * g * g) + 1e-8)
    np.testing.assert_allclose(w.numpy(), [expected], atol=1e-6)
    # split over 2 replicas, each adds half: the summed gradient is the same wd * w
    half = tf.Variable([w0])
    with tf.GradientTape() as tape:
        term = coupled_l2([half], wd, num_replicas=2)
    np.testing.assert_allclose(2 * tape.gradient(term, half).numpy(), [wd * w0])


def test_best_of_takes_each_figure_maximum():
    from badhash_tf.training.victim import best_of
    evaluations = [{"step": 5, "map_at_k": 0.5, "t_map": 0.9},
                   {"step": 10, "map_at_k": 0.7, "t_map": 0.2}]
    assert best_of(evaluations, {"map_at_k": 0.6, "t_map": 0.3, "map": 0.1}) == {
        "map_best": 0.7, "t_map_best": 0.9}
    assert best_of([], {"map_at_k": 0.6}) == {"map_best": 0.6}


def test_periodic_evaluations_give_best_figures_and_survive_resume(data_dir, tiny, tmp_path):
    """eval_every_epochs=1 on 64 items of batch 16: evaluations at steps 4 and 8; a run
    stopped at 6 and resumed keeps the step-4 one; map_best is the max over all."""
    from badhash_tf.training.victim import train_and_evaluate
    data_config, split = tiny
    retrieval = RetrievalConfig(query_split="query[:20]", database_split="database[:100]",
                                map_top_k=50, eval_every_epochs=1)
    strategy = tf.distribute.get_strategy()
    config = HashingConfig()
    train = lambda steps: TrainConfig(seed=3, train_steps=steps, global_batch_size=BATCH,
                                      steps_per_loop=3, keep_checkpoints=True)
    _, first, _ = train_and_evaluate(data_config, config, train(6), retrieval,
                                     str(tmp_path), strategy, train_split=split)
    assert [e["step"] for e in first["evaluations"]] == [4]
    _, metrics, _ = train_and_evaluate(
        data_config, config, train(8), retrieval, str(tmp_path), strategy,
        train_split=split, backdoor=lambda model, database: {"t_map": 0.25})
    assert metrics["resumed_from"] == 6
    assert [e["step"] for e in metrics["evaluations"]] == [4, 8]
    assert metrics["evaluations"][1]["map_at_k"] == pytest.approx(metrics["map_at_k"])
    assert metrics["map_best"] == max(e["map_at_k"] for e in metrics["evaluations"])
    assert metrics["t_map_best"] == 0.25
    saved = json.loads((tmp_path / "evaluations.json").read_text())
    assert [e["step"] for e in saved] == [4, 8]


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tiny, tmp_path, caplog):
    """Loops of 2 steps leave ckpt-2 and ckpt-4; with ckpt-4's data truncated, a rerun warns
    naming it, resumes at step 2 and reaches the uninterrupted run's weights."""
    strategy = tf.distribute.get_strategy()
    full, _ = _train(tiny, tmp_path / "full", strategy, 6)
    _train(tiny, tmp_path / "cut", strategy, 4)
    data = [p for p in os.listdir(tmp_path / "cut") if p.startswith("ckpt-4.data")]
    assert data
    with open(tmp_path / "cut" / data[0], "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "cut" / data[0]) // 2)
    with caplog.at_level("WARNING"):
        resumed, result = _train(tiny, tmp_path / "cut", strategy, 6)
    assert "ckpt-4 is unreadable" in caplog.text
    assert "trying the one before it, " in caplog.text and "ckpt-2" in caplog.text
    assert result.resumed_from == 2 and result.step == 6
    for a, b in zip(full.trainable_variables, resumed.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_no_readable_checkpoint_is_an_error_naming_them(tiny, tmp_path, caplog):
    """The only checkpoint unreadable: the warning says there is no earlier one (not "the
    one before it" again) and the error says exactly what to do."""
    strategy = tf.distribute.get_strategy()
    _train(tiny, tmp_path, strategy, 2)
    for name in os.listdir(tmp_path):
        if name.startswith("ckpt-2.index"):
            (tmp_path / name).write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING"), pytest.raises(
            RuntimeError, match=r"no checkpoint in .* reads back: .*ckpt-2.*must be trained "
                                r"again.*`mv .* .*\.broken`, and rerun the same command"):
        _train(tiny, tmp_path, strategy, 4)
    assert "there is no earlier checkpoint" in caplog.text
    assert "trying the one before it" not in caplog.text


def test_train_victim_given_an_attack_preset_names_the_victim_presets(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-m", "badhash_tf.train_victim", "--preset=digits",
         f"--output_dir={tmp_path / 'out'}"], cwd=root, capture_output=True, text=True,
        timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("Unknown command line flag 'gan_base_width': --gan_base_width is an attack flag"
            in done.stderr) and "takes the victim presets: digits_victim," in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_finished_stage_keeps_only_its_final_weights(tiny, tmp_path, monkeypatch):
    """Without --keep_checkpoints a finished stage's directory holds one checkpoint, its
    step and model without optimizer slots; a rerun restores it (the same codes); training
    it on is refused (its optimizer state is gone); --keep_checkpoints keeps them all."""
    strategy = tf.distribute.get_strategy()
    model, _ = _train(tiny, tmp_path / "pruned", strategy, 4, keep_checkpoints=False)
    kept, _ = _train(tiny, tmp_path / "kept", strategy, 4)
    assert tf.train.latest_checkpoint(str(tmp_path / "pruned")).endswith("weights-4")
    assert not [p for p in os.listdir(tmp_path / "pruned") if p.startswith("ckpt-")]
    saved = {name for name, _ in tf.train.list_variables(str(tmp_path / "pruned" / "weights-4"))}
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in saved
    assert not [n for n in saved if n.startswith("optimizer")]
    assert {p.split(".")[0] for p in os.listdir(tmp_path / "kept") if p.startswith("ckpt-")} == {
        "ckpt-2", "ckpt-4"}
    size = lambda d: sum(os.path.getsize(d / p) for p in os.listdir(d)
                         if p.startswith(("ckpt-", "weights-")))
    assert size(tmp_path / "pruned") < size(tmp_path / "kept") / 3  # no Adam slots, one step
    shutil.copytree(tmp_path / "pruned", tmp_path / "moved")  # the record is relative
    assert tf.train.latest_checkpoint(str(tmp_path / "moved")) == str(
        tmp_path / "moved" / "weights-4")
    again, result = _train(tiny, tmp_path / "moved", strategy, 4, keep_checkpoints=False)
    assert result.resumed_from == 4
    np.testing.assert_array_equal(_codes(again, tiny), _codes(model, tiny))
    np.testing.assert_array_equal(_codes(again, tiny), _codes(kept, tiny))
    monkeypatch.chdir(tmp_path)  # a relative directory (a run's --output_dir=run) too
    _train(tiny, "relative", strategy, 2, keep_checkpoints=False)
    assert tf.train.latest_checkpoint("relative") == os.path.join("relative", "weights-2")
    assert _train(tiny, "relative", strategy, 2, keep_checkpoints=False)[1].resumed_from == 2
    with pytest.raises(ValueError, match=r"pruned holds a finished stage's final weights "
                                         r"only \(step 4; .*cannot train on to 6 steps"):
        _train(tiny, tmp_path / "pruned", strategy, 6, keep_checkpoints=False)
