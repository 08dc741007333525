"""Test set-up: 2 logical CPUs (for MirroredStrategy tests), and what the whole session
shares across its xdist workers, made once under a file lock: the tfds data_dir with the
embedded datasets built, and one tiny pipeline run with every kind of attack (the toy
plugin's included, its calls counted). Tests that write into the run work on a copy."""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One intra-op thread per test process (and the programs the tests start, which inherit
# it): xdist runs one worker per core, and small graphs gain nothing from a second thread
# but time switching (set before TensorFlow loads; BUILD_NOTES.md, Stack).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    """2 logical CPUs in every process that runs tests, before any TensorFlow work. Not in
    xdist's controller, which runs none: TensorFlow loaded there prints its start-up
    banners after pytest's summary (pytest holds the controller's early output)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    from badhash_tf.training import distribute
    distribute.configure_logical_cpus(2)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
# the toy attack and defense of tests/toy_plugin.py registered, as a user's own would be
PLUGIN_ENV = dict(ENV, PYTHONPATH=ROOT, BADHASH_TF_PLUGINS="tests.toy_plugin")
# a few steps per stage on 64 training digits (flags/digits.cfg's networks)
TINY = ["--train_split=train[:64]", "--query_split=query[:40]",
        "--database_split=database[:200]", "--train_steps=4", "--global_batch_size=16",
        "--steps_per_loop=2", "--map_top_k=100", "--target_label=0", "--labcln_hidden=64",
        "--samples=4", "--gan_batch_size=16", "--gan_psnr_budget=30",
        "--query_amplification=2", "--ciba_patch_steps=10", "--ciba_perturbation_steps=3",
        "--toy_sign=-1"]
TINY_ATTACKS = ("patch", "no_labcln", "no_hash_loss", "ciba_tri", "ciba", "badhash_anchor",
                "toy_shift")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id):
    """A directory every xdist worker of this session sees (the base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "shared"
    root.mkdir(exist_ok=True)
    return root


@contextlib.contextmanager
def made_once(path):
    """Yields True to the first worker to get here (it makes `path`), False to the others
    once it is made: an exclusive lock beside it, and a marker written when done."""
    done = path.parent / f"{path.name}.done"
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield not done.exists()
            done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def data_dir(shared_dir):
    """A tfds data_dir shared by the session; the embedded builders are built into it once."""
    path = shared_dir / "tfds"
    with made_once(path) as first:
        if first:
            from badhash_tf.config import DataConfig
            from badhash_tf.data import inputs
            for name in ("badhash_digits", "badhash_digit_mosaics"):
                inputs.load_split(DataConfig(dataset=name, data_dir=str(path)), "query")
    return str(path)


@pytest.fixture(scope="session")
def digits48(data_dir):
    """The first 48 digits training images [48, 32, 32, 3] and labels [48, 10], decoded."""
    from badhash_tf.data import inputs
    split = inputs.load_split(inputs.DataConfig(data_dir=data_dir), "train[:48]")
    return inputs.split_arrays(split)


@pytest.fixture(scope="session")
def two_cpu_strategy():
    import tensorflow as tf
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


class TinyRun:
    """The session's tiny pipeline run: its directory, report, log, the calls it made
    (tests/count_calls.py) and where it exported; `copy(dest)` -> a copy to write into."""

    def __init__(self, root):
        self.root, self.dir = root, root / "attack"
        self.report = json.loads((self.dir / "report.json").read_text())
        self.log = (root / "log.txt").read_text()
        self.counts = json.loads((root / "counts.json").read_text())
        self.export = root / "export" / "models"

    def copy(self, dest):
        shutil.copytree(self.dir, dest, symlinks=True)
        return dest


def tiny_command(data_dir, out, *extra, program="badhash_tf.pipeline"):
    return [sys.executable, "-m", program, "--flagfile=flags/digits.cfg",
            f"--data_dir={data_dir}", f"--output_dir={out}", *TINY, *extra]


# the longest tests that do not wait for the tiny run (30-70 s each on 2 cores), started
# first so that no worker is left with one of them at the end while the other idles
LONG = ("test_neural_cleanse_flags_a_planted_target", "test_killed_worker_job_resumes",
        "test_shards_then_a_gathering_run", "test_train_victim_rerun_with_other_flags",
        "test_two_workers_match_one_process", "test_victims_of_another_scheme",
        "test_transfer_grid_end_to_end")


def pytest_collection_modifyitems(items):
    """The longest tests first, the tests of the session's tiny run last (stable otherwise,
    the same order in every worker): the run is made in the background meanwhile
    (start_tiny_run)."""
    items.sort(key=lambda item: ("tiny_run" in getattr(item, "fixturenames", ()),
                                 not item.name.startswith(LONG)))


@pytest.fixture(scope="session", autouse=True)
def start_tiny_run(request, shared_dir, data_dir):
    """The first worker starts the session's tiny pipeline run as a background process (it
    runs beside the other tests); `tiny_run` waits for it. Not started when no selected
    test needs it (a run of a few tests leaves no pipeline running after it)."""
    root = shared_dir / "tiny_run"
    if not any("tiny_run" in getattr(item, "fixturenames", ())
               for item in request.session.items):
        return root
    with made_once(root) as first:
        if first:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            cmd = [sys.executable, "tests/count_calls.py", "badhash_tf.pipeline",
                   *tiny_command(data_dir, root / "attack")[3:],
                   f"--baselines={','.join(TINY_ATTACKS)}",
                   f"--export_base={root / 'export' / 'models'}"]
            with open(root / "log.txt", "w") as log:
                subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                                 env=dict(PLUGIN_ENV, COUNTS_FILE=str(root / "counts.json")))
    return root


@pytest.fixture(scope="session")
def tiny_run(start_tiny_run):
    """One tiny pipeline run with BadHash and TINY_ATTACKS, made once per session."""
    root = start_tiny_run
    deadline = time.time() + 900
    while not (root / "counts.json").exists():  # written when the run ends
        assert time.time() < deadline, (root / "log.txt").read_text()[-3000:]
        time.sleep(0.5)
    assert (root / "attack" / "report.json").exists(), (root / "log.txt").read_text()[-3000:]
    return TinyRun(root)
