"""A run directory never loses or mixes work, and every error a user meets is one line
naming what to do: Ctrl-C during a stage, a run file that does not read back, an
--output_dir that cannot be written, another program's run directory (train_victim,
export_serving), a pretrain directory of another architecture, queries with nothing
relevant, --overwrite keeping the previous reports."""

import os
import types

import keras
import numpy as np
import pytest
from absl import app, logging

from badhash_tf import console, io_utils
from badhash_tf.cli import configs, startup
from badhash_tf.config import RetrievalConfig
from badhash_tf.engine import experiment, plan
from badhash_tf.engine.layout import RUN_JSON, RunLayout
from badhash_tf.serving import export


def _raises(error):
    def main(argv):
        del argv
        raise error
    return main


def test_ctrl_c_and_a_broken_run_file_end_with_one_line(monkeypatch):
    lines = []
    monkeypatch.setattr(logging, "error", lambda fmt, *a: lines.append(fmt % a if a else fmt))
    with pytest.raises(SystemExit) as ended:
        console.interruptible(_raises(KeyboardInterrupt()))(["prog"])
    assert ended.value.code == 130 and lines == [console.INTERRUPTED]
    assert "the same command resumes" in lines[0]
    broken = io_utils.BrokenFileError("x/poison.tfrecord does not read back: mv x x.broken")
    with pytest.raises(SystemExit) as ended:
        console.interruptible(_raises(broken))(["prog"])
    assert ended.value.code == 1 and lines[-1] == str(broken)
    assert console.interruptible(lambda argv: 0)(["prog"]) == 0  # a normal end untouched


def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(io_utils.os, "open", refuse)  # (root ignores a read-only mode)
    with pytest.raises(app.UsageError, match=rf"--output_dir={tmp_path / 'run'}: cannot "
                                             r"write there \(Permission denied: .*\.lock\)"):
        with startup.output_dir_lock(str(tmp_path / "run"), None, "badhash_tf.pipeline"):
            pass


def test_export_serving_names_a_run_another_program_made(tmp_path):
    io_utils.write_json(str(tmp_path / RUN_JSON), {"program": "badhash_tf.train_victim"})
    with pytest.raises(ValueError, match=rf"--run_dir={tmp_path} was made by "
                                         r"badhash_tf.train_victim: export_serving exports a "
                                         r"pipeline run"):
        export.load_run_models(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="must be a finished pipeline run"):
        export.load_run_models(str(tmp_path / "empty"))


def test_a_pretrain_directory_of_another_architecture_names_the_flag_given(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    weights = str(tmp_path / "backbone.weights.h5")
    other.save_weights(weights)
    flags_ = types.SimpleNamespace(bits=16, backbone="small_cnn", image_size=32,
                                   require_backbone_weights=False)
    given = {weights: f"--pretrained_backbone={tmp_path}"}
    with pytest.raises(app.UsageError, match=rf"^--pretrained_backbone={tmp_path} \(its "
                                             r"backbone.weights.h5\): not the weights of this "
                                             r"--backbone=small_cnn"):
        configs._check_weights(flags_, {(weights, 16, "small_cnn")}, given)
    with pytest.raises(app.UsageError, match=rf"^--backbone_weights={weights}: not the "):
        configs._check_weights(flags_, {(weights, 16, "small_cnn")}, {})


def test_another_programs_run_directory_is_refused_naming_both(tmp_path):
    startup.claim_run_dir(str(tmp_path), "badhash_tf.pipeline")
    startup.claim_run_dir(str(tmp_path), "badhash_tf.pipeline")  # its own: taken again
    with pytest.raises(ValueError, match=rf"--output_dir={tmp_path} was made by "
                                         r"`badhash_tf.pipeline`; `badhash_tf.train_victim` "
                                         r"writes its own run directories"):
        startup.claim_run_dir(str(tmp_path), "badhash_tf.train_victim")
    (tmp_path / RUN_JSON).write_text('{"prog')  # cut short
    with pytest.raises(ValueError, match=rf"{tmp_path / RUN_JSON} does not read back"):
        startup.claim_run_dir(str(tmp_path), "badhash_tf.pipeline")


def test_queries_with_nothing_relevant_are_refused_or_counted(monkeypatch):
    eye = np.eye(4, dtype=np.float32)
    query, database = eye[[0, 1, 3, 3]], eye[[0, 1, 2, 2]]  # label 3: in no database item
    with pytest.raises(ValueError, match=r"--query_split=query: 2 of 4 queries carry only "
                                         r"labels \(3\) that no item of "
                                         r"--database_split=database has.*"
                                         r"--allow_unrelated_queries"):
        plan.check_relevance(RetrievalConfig(), query, database)
    warned = []
    monkeypatch.setattr(logging, "warning", lambda *a: warned.append(a))
    allowed = RetrievalConfig(allow_unrelated_queries=True)
    assert plan.check_relevance(allowed, query, database) == 2 and len(warned) == 1
    assert plan.check_relevance(RetrievalConfig(), eye[[0, 1]], database) == 0


def test_overwrite_keeps_the_previous_reports_aside(tmp_path):
    layout = RunLayout(str(tmp_path))
    for name in ("report.json", "report.md", "samples.png"):
        (tmp_path / name).write_text(name)
    aside = experiment.move_reports_aside(layout)
    assert os.path.basename(aside).startswith("reports.replaced-")
    assert sorted(os.listdir(aside)) == ["report.json", "report.md", "samples.png"]
    assert (tmp_path / "report.md").exists() is False
    assert open(os.path.join(aside, "report.md")).read() == "report.md"
    assert experiment.move_reports_aside(layout) is None  # nothing left to move


def test_a_batch_larger_than_the_training_split_is_named():
    train = types.SimpleNamespace(size=64)
    retrieval = RetrievalConfig(train_split="train[:64]")
    with pytest.raises(ValueError, match=r"^--global_batch_size=500 exceeds the 64 items of "
                                         r"--train_split=train\[:64\]$"):
        plan.check_batch("--global_batch_size", 500, train, retrieval)
    plan.check_batch("--global_batch_size", 64, train, retrieval)  # a whole split fits
