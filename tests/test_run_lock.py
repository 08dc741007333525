"""One writer per run directory: the fcntl lock every writing program takes, its holder
named to a second program, a dead holder's record taken over, nothing left by a refusal; the
outputs' file modes."""

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from badhash_tf import io_utils
from badhash_tf.cli import early

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
HOLD = ("import sys, time\nfrom badhash_tf import io_utils\n"
        "with io_utils.run_dir_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n    time.sleep(float(sys.argv[2]))\n")


def test_a_second_program_on_a_locked_directory_stops_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run), "60"], cwd=ROOT,
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(io_utils.RunDirLockedError,
                           match=rf"{run} is in use by another program \(PID {holder.pid}, "
                                 r"`-c .*`, started 20"):
            with io_utils.run_dir_lock(str(run)):
                pass
        tick = time.time()  # a real program: stops at start-up, naming the holder
        done = subprocess.run(
            [sys.executable, "-m", "badhash_tf.train_victim",
             "--flagfile=flags/digits_victim.cfg", f"--output_dir={run}"],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and f"PID {holder.pid}" in done.stderr
        assert "one writer per run directory" in done.stderr
        assert "Traceback" not in done.stderr and time.time() - tick < 60
        assert sorted(os.listdir(run)) == [".lock"]  # it wrote nothing
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("program", ["pipeline", "bench", "defend"])
def test_a_locked_directory_is_refused_before_tensorflow_loads(tmp_path, program):
    """The refusal comes before the heavy imports (a second writer on a busy machine is
    told in a fraction of a second): a `tensorflow` that cannot be imported is not reached."""
    run, fake = tmp_path / "run", tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('tensorflow was imported')\n")
    target = {"defend": [f"--run_dir={tmp_path}", f"--output_dir={run}"],
              "bench": ["--shard=1/2", f"--output_dir={run}"]}.get(
        program, ["--preset=digits", f"--output_dir={run}"])
    lock = io_utils.lock_name((1, 2)) if program == "bench" else io_utils.LOCK_FILE
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.replace("sys.argv[1])", f"sys.argv[1], name={lock!r})"),
         str(run), "60"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        env = dict(ENV, PYTHONPATH=f"{fake.parent}:{ROOT}")
        done = subprocess.run([sys.executable, "-m", f"badhash_tf.{program}", *target],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1 and done.stderr.splitlines() == [
            f"FATAL {run} is in use by another program (PID {holder.pid}, `-c {run} 60`, "
            f"started {io_utils.read_json(run / lock)['started']}): one writer per run "
            "directory. Wait for it, stop it, or use another --output_dir."]
    finally:
        holder.kill()
        holder.wait()


def test_only_the_chief_looks_at_the_lock_before_tensorflow_loads():
    cluster = {"worker": ["a:1", "b:1"]}
    assert early._chief(None) and early._chief(json.dumps({"cluster": cluster}))
    assert early._chief(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert not early._chief(json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": 1}}))
    with_chief = {"chief": ["c:1"], **cluster}
    assert not early._chief(json.dumps({"cluster": with_chief,
                                        "task": {"type": "worker", "index": 0}}))
    assert early._chief(json.dumps({"cluster": with_chief, "task": {"type": "chief",
                                                                    "index": 0}}))


def test_a_dead_holders_lock_is_taken_over_with_a_line(tmp_path):
    run = tmp_path / "run"
    killed = subprocess.Popen([sys.executable, "-c", HOLD, str(run), "60"], cwd=ROOT,
                              env=ENV, stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "locked"
    killed.kill()  # SIGKILL: no clean release, its record stays in .lock
    killed.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == killed.pid
    lines = []
    with io_utils.run_dir_lock(str(run), log=lines.append):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert len(lines) == 1 and f"took over the lock left by PID {killed.pid}" in lines[0]
    assert "no longer running" in lines[0]
    with io_utils.run_dir_lock(str(run), log=lines.append):  # released cleanly: no line
        pass
    assert len(lines) == 1


def test_a_refused_start_leaves_no_directory_and_a_file_is_named(tmp_path):
    run = tmp_path / "new"
    with pytest.raises(ValueError, match="refused"):
        with io_utils.run_dir_lock(str(run)):
            raise ValueError("refused")
    assert not run.exists()  # created by the lock alone: removed again
    kept = tmp_path / "kept"
    with pytest.raises(ValueError):
        with io_utils.run_dir_lock(str(kept)):
            (kept / "flags.json").write_text("{}")
            raise ValueError("late")
    assert (kept / "flags.json").exists()  # something was written: never removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="--output_dir=.*file is a file"):
        with io_utils.run_dir_lock(str(tmp_path / "file")):
            pass
    with io_utils.run_dir_lock(str(tmp_path / "x"), enabled=False):  # a non-chief worker
        assert not (tmp_path / "x").exists()


def test_outputs_get_the_usual_modes_not_the_temporary_files_private_ones(tmp_path):
    """Written atomically through mkstemp / mkdtemp, results and exports still get the
    modes open() and makedirs give under the umask (readable by a serving user)."""
    old = os.umask(0o022)
    try:
        with io_utils.atomic_path(str(tmp_path / "result.json")) as tmp:
            with open(tmp, "w") as f:
                f.write("{}")
        with io_utils.staging_dir(str(tmp_path), ".tmp_x_") as staged:
            assert stat.S_IMODE(os.stat(staged).st_mode) == 0o755
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "result.json").st_mode) == 0o644
