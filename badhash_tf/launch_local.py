"""Starts N local workers of a training program under MultiWorkerMirroredStrategy, for
trying the multi-machine path on one machine.

python -m badhash_tf.launch_local --workers=2 -- python -m badhash_tf.train_victim \
    --preset=digits_victim --output_dir=runs/mw
Each worker gets TF_CONFIG (loopback ports) and `--strategy=multi_worker` (unless the
command sets --strategy); their output is streamed with a `[worker i]` prefix; when one
fails, the others are stopped and the launcher exits with its status.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags, logging

from badhash_tf import console

flags.DEFINE_integer("workers", 2, "Number of local worker processes.")
flags.DEFINE_float("timeout", 0, "Stop every worker after this many seconds (0 = never).")
FLAGS = flags.FLAGS


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_configs(ports):
    """One TF_CONFIG per worker, as TF documents it: the cluster and this task."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(len(ports))]


def worker_command(command):
    """The user's command, with --strategy=multi_worker added unless it sets --strategy."""
    if any(arg.startswith("--strategy") for arg in command):
        return list(command)
    return list(command) + ["--strategy=multi_worker"]


def _stream(index, pipe, out):
    for line in iter(pipe.readline, ""):
        out.write(f"[worker {index}] {line}")
        out.flush()


def run_workers(command, workers, timeout=0.0, out=sys.stdout, env=None):
    """Runs `command` as `workers` local workers -> exit status (0 when all succeed; the
    first failure's status otherwise, the others being stopped)."""
    procs, threads = [], []
    for index, config in enumerate(tf_configs(free_ports(workers))):
        worker_env = dict(env if env is not None else os.environ, TF_CONFIG=config)
        proc = subprocess.Popen(worker_command(command), env=worker_env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        procs.append(proc)
        out.write(f"[launcher] worker {index} pid {proc.pid}\n")
        threads.append(threading.Thread(target=_stream, args=(index, proc.stdout, out),
                                        daemon=True))
        threads[-1].start()
    deadline = time.time() + timeout if timeout > 0 else None
    status = 0
    try:
        while None in [p.poll() for p in procs]:  # poll every worker, each time
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed:
                status = failed[0].returncode
                out.write(f"[launcher] worker {procs.index(failed[0])} exited with "
                          f"{status}; stopping the others\n")
                break
            if deadline and time.time() > deadline:
                out.write(f"[launcher] timeout after {timeout:.0f} s; stopping every worker\n")
                status = 124
                break
            time.sleep(0.2)
        else:
            status = next((p.returncode for p in procs if p.returncode), 0)
            if status:
                out.write(f"[launcher] worker {[p.returncode for p in procs].index(status)} "
                          f"exited with {status}\n")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for t in threads:
            t.join(5)
    return status


def main(argv):
    command = argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise app.UsageError("give the command after --, e.g. -- python -m "
                             "badhash_tf.train_victim --preset=digits_victim ...")
    if FLAGS.workers < 1:
        raise app.UsageError(f"--workers={FLAGS.workers}: give at least 1")
    logging.info("starting %d workers: %s", FLAGS.workers, " ".join(command))
    return run_workers(command, FLAGS.workers, FLAGS.timeout)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
