"""A program's first check, before TensorFlow loads (seconds on a busy machine): a run
directory that another live program writes is refused at once. The real lock is taken later
(startup.output_dir_lock); this only looks, so two programs started together are still
told apart there."""

import json
import os
import sys

from absl import flags

from badhash_tf import io_utils
from badhash_tf.engine import cells


def refuse_held_run_dir(module_name, script, default_subdir=None):
    """Ends the program with one line (status 1) when the run directory its command line
    names (--output_dir, else --run_dir/`default_subdir`; --shard's own lock) is locked by
    another live program. Does nothing unless this module is the program being run
    (`python -m` runs it as __main__; its console script `script` imports it)."""
    if module_name != "__main__" and os.path.basename(sys.argv[0]) != script:
        return
    if not _chief(os.environ.get("TF_CONFIG")):
        return  # only the chief locks (another worker of its job runs beside it)
    values = flags.FlagValues()
    for name in ("output_dir", "run_dir", "shard"):
        flags.DEFINE_string(name, None, "", flag_values=values)
    try:
        values(sys.argv, known_only=True)
        shard = cells.parse_shard(values.shard or "")
    except (flags.Error, ValueError):
        return  # the program's own parsing says what is wrong
    directory = values.output_dir or (
        os.path.join(values.run_dir, default_subdir) if values.run_dir and default_subdir
        else None)
    locked = directory and io_utils.held_lock(directory, io_utils.lock_name(shard))
    if locked:
        sys.stderr.write(f"FATAL {locked}\n")
        sys.exit(1)


def _chief(tf_config):
    """Whether this process is its job's chief by TF_CONFIG (as distribute.is_chief reads
    a strategy's cluster): no cluster, the "chief" task, or worker 0 of a chief-less one."""
    try:
        spec = json.loads(tf_config) if tf_config else {}
    except ValueError:
        return True  # the strategy will say what is wrong with it
    task = spec.get("task") or {}
    if not task.get("type"):
        return True
    return task["type"] == "chief" or (
        "chief" not in spec.get("cluster", {}) and task["type"] == "worker"
        and int(task.get("index", 0)) == 0)
