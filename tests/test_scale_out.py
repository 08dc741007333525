"""Many workers on one machine: two local MultiWorkerMirroredStrategy workers (loopback
only) against a single process, a killed worker's job resuming, and the launcher."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import tensorflow as tf

from badhash_tf import launch_local
from tests.conftest import PLUGIN_ENV, tiny_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
VICTIM = [sys.executable, "-m", "badhash_tf.train_victim",
          "--flagfile=flags/digits_victim.cfg", "--train_split=train[:64]",
          "--query_split=query[:20]", "--database_split=database[:100]",
          "--global_batch_size=16", "--map_top_k=50"]


def _victim(data_dir, out, steps, steps_per_loop=2):
    return VICTIM + [f"--data_dir={data_dir}", f"--output_dir={out}",
                     f"--train_steps={steps}", f"--steps_per_loop={steps_per_loop}"]


def _digests(log):
    """-> {worker index: [weights sha256 of each finished stage]} from the launcher's log."""
    found = {}
    for worker, digest in re.findall(r"\[worker (\d)\].*weights sha256 (\w+)", log):
        found.setdefault(int(worker), []).append(digest)
    return found


def _final_weights(model_dir):
    reader = tf.train.load_checkpoint(str(model_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "/.ATTRIBUTES/VARIABLE_VALUE" in name and name.startswith("model/")}


def test_two_workers_match_one_process(data_dir, tmp_path):
    out = io.StringIO()
    scratch = tmp_path / "worker_tmp"  # where non-chief workers put their throwaway dirs
    scratch.mkdir()
    status = launch_local.run_workers(_victim(data_dir, tmp_path / "mw", 4), 2, timeout=300,
                                      out=out, env=dict(ENV, TMPDIR=str(scratch)))
    log = out.getvalue()
    assert status == 0, log[-3000:]
    digests = _digests(log)
    assert set(digests) == {0, 1} and digests[0] == digests[1]  # identical weights
    single = subprocess.run(_victim(data_dir, tmp_path / "one", 4), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = json.loads((tmp_path / "mw" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    np.testing.assert_allclose(multi["loss_history"], one["loss_history"], rtol=1e-5)
    # The other worker wrote to temporary directories, and removed them.
    assert (tmp_path / "mw" / "checkpoint").exists()
    assert not [p for p in os.listdir(scratch) if p.startswith("badhash_worker_")]


def test_killed_worker_job_resumes_from_last_checkpoint(data_dir, tmp_path):
    model_dir = tmp_path / "resumed"
    steps = 24
    cmd = [sys.executable, "-m", "badhash_tf.launch_local", "--workers=2", "--timeout=300",
           "--", *_victim(data_dir, model_dir, steps, steps_per_loop=1)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.time() + 240
    while not (model_dir / "ckpt-3.index").exists():
        assert time.time() < deadline and proc.poll() is None, "".join(lines)[-3000:]
        time.sleep(0.05)
    pid = int(next(re.search(r"worker 1 pid (\d+)", l).group(1) for l in lines
                   if "worker 1 pid" in l))
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(120) != 0  # the launcher stops the job when a worker dies
    reader.join(10)
    assert "stopping the others" in "".join(lines)
    killed_at = int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])
    assert 3 <= killed_at < steps
    out = io.StringIO()
    status = launch_local.run_workers(_victim(data_dir, model_dir, steps, 1), 2, timeout=300,
                                      out=out, env=ENV)
    assert status == 0, out.getvalue()[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["resumed_from"] == killed_at and metrics["train_steps"] == steps
    straight = io.StringIO()
    assert launch_local.run_workers(_victim(data_dir, tmp_path / "straight", steps, 1), 2,
                                    timeout=300, out=straight, env=ENV) == 0
    resumed, reference = _final_weights(model_dir), _final_weights(tmp_path / "straight")
    assert resumed.keys() == reference.keys() and resumed
    for name in reference:
        np.testing.assert_allclose(resumed[name], reference[name], atol=1e-5, err_msg=name)


def test_generator_stage_on_two_local_workers(tiny_run, data_dir, tmp_path):
    """The GAN stage and the victim on two workers (the shared stages, made with the same
    flags by the session's tiny run, reused)."""
    out = io.StringIO()
    attack = tmp_path / "attack"
    for stage in ("surrogate", "labcln", "reference_victim"):
        shutil.copytree(tiny_run.dir / stage, attack / stage)
    cmd = tiny_command(data_dir, attack, "--baselines=", "--export_base=")
    status = launch_local.run_workers(cmd, 2, timeout=400, out=out, env=PLUGIN_ENV)
    log = out.getvalue()
    assert status == 0, log[-3000:]
    gan = {w: re.findall(r"\[worker %d\].*gan: finished at step 4 .*weights sha256 (\w+)" % w,
                         log) for w in (0, 1)}
    assert gan[0] and gan[0] == gan[1]
    assert json.loads((attack / "report.json").read_text())["poison_count"] > 0


def test_launcher_stops_everyone_when_one_fails_and_names_it():
    out = io.StringIO()
    script = ("import json, os, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']"
              "['index']; print('hello from', i, flush=True); time.sleep(0.5); "
              "sys.exit(3) if i == 1 else time.sleep(60)")
    tick = time.time()
    status = launch_local.run_workers([sys.executable, "-c", script, "--strategy=x"], 2,
                                      timeout=30, out=out)
    log = out.getvalue()
    assert status == 3 and time.time() - tick < 20
    assert "[worker 0] hello from 0" in log and "[worker 1] hello from 1" in log
    assert "worker 1 exited with 3; stopping the others" in log


def test_tf_config_is_as_tf_documents_it():
    configs = [json.loads(c) for c in launch_local.tf_configs([1111, 2222])]
    assert configs[1] == {"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]},
                          "task": {"type": "worker", "index": 1}}
    assert launch_local.worker_command(["p"]) == ["p", "--strategy=multi_worker"]
    assert launch_local.worker_command(["p", "--strategy=mirrored"]) == ["p", "--strategy=mirrored"]


def test_generator_stage_with_logical_cpus_flag(tiny_run, data_dir, tmp_path):
    """The GAN stage and the victim under --strategy=mirrored --logical_cpus=2 (two
    replicas; the shared stages, made with the same flags by the session's tiny run,
    reused: their two-replica training is test_training's)."""
    out = tmp_path / "attack"
    for stage in ("surrogate", "labcln", "reference_victim"):
        shutil.copytree(tiny_run.dir / stage, out / stage)
    done = subprocess.run(
        tiny_command(data_dir, out, "--baselines=", "--export_base=", "--strategy=mirrored",
                     "--logical_cpus=2"),
        cwd=ROOT, env=PLUGIN_ENV, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gan: finished at step 4" in done.stderr
    assert ("--strategy=mirrored: MirroredStrategy with 2 replicas in sync "
            "(/job:localhost/replica:0/task:0/device:CPU:0, "
            "/job:localhost/replica:0/task:0/device:CPU:1)") in done.stderr
    assert json.loads((out / "report.json").read_text())["poison_count"] > 0
