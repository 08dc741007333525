"""The one decision every stage and cell of a run directory goes through: finished, to
resume, to run, stale, or made with other flags or data.

A stage (a shared stage such as the surrogate, an attack variant, a frontier or bench cell,
a defense result) is a directory that carries its own record, `stage.json`: the fingerprint
of the config fields and data it depends on, and `inputs`, digests of the upstream results
it was made from. Deciding reads only that record and the stage's result file:

- no directory (or an empty one): to run;
- a record whose fingerprint differs, a directory without a record, or a record that does
  not read back: refused before any work, naming the stage and what differs (with
  --overwrite the directory is moved aside to <dir>.replaced-<time>, never deleted);
- a record whose inputs differ (an upstream stage was made again): stale, moved aside and
  run again;
- otherwise finished when its result file exists, else resumed from its checkpoints.

Grids spread their cells over machines by `--shard=i/N` (every N-th cell); a stage that two
shards need is made under a lock beside it (`.<name>.lock`), so the second waits and then
finds it finished.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import time

from absl import logging

from badhash_tf import fingerprints, io_utils
from badhash_tf.engine.layout import RUN_JSON

RECORD = "stage.json"
DONE = "done.json"  # the result of a stage that writes no other (surrogate, LabCLN)
TO_RUN, RESUME, FINISHED, STALE, MISMATCH = "to run", "resume", "finished", "stale", "mismatch"


class StageMismatchError(ValueError):
    """A stage on disk was made with other flags or data than this run's, or carries no
    readable record."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage of a run: its directory, fingerprint, the file (relative to the directory)
    whose presence means finished ("" = none: it resumes from its checkpoints, and a
    finished one returns at once), the digests of its inputs, and the defaults of its
    fingerprint's fields (a field added since a record was written matches its default)."""
    directory: str
    fingerprint: dict
    result: str = ""
    inputs: dict = dataclasses.field(default_factory=dict)
    default: dict = dataclasses.field(default_factory=dict)

    @property
    def result_path(self):
        return os.path.join(self.directory, self.result) if self.result else ""


@dataclasses.dataclass(frozen=True)
class Decision:
    state: str
    why: str = ""


def record_path(directory):
    return os.path.join(directory, RECORD)


def read_record(directory):
    """A stage's record -> dict, or None when it has none. Raises StageMismatchError naming
    the file when it does not read back (e.g. truncated)."""
    path = record_path(directory)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if not isinstance(record, dict) or "fingerprint" not in record:
            raise ValueError("no fingerprint in it")
        return record
    except (OSError, ValueError) as e:
        raise StageMismatchError(
            f"{path} does not read back ({type(e).__name__}: {str(e)[:120]}): the stage "
            f"{directory} cannot be told apart from one made with other flags or data. Move "
            f"it aside (`mv {directory} {directory}.broken`) or pass --overwrite, and rerun; "
            "every other finished stage is reused.") from None


def _has_content(directory):
    """Whether a stage's directory holds anything of a stage (not locks, temporaries or the
    run directory's own record, which a single-stage program's directory also holds)."""
    return os.path.isdir(directory) and any(not n.startswith(".") and n != RUN_JSON
                                            for n in os.listdir(directory))


def decide(stage):
    """-> Decision for `stage` (see the module docstring), reading only what is on disk."""
    if not _has_content(stage.directory):
        return Decision(TO_RUN)
    try:
        record = read_record(stage.directory)
    except StageMismatchError as e:
        return Decision(MISMATCH, str(e))
    if record is None:
        return Decision(MISMATCH, "it holds a stage without its record (stage.json): made "
                                  "by an older version, or the record was lost")
    diff = fingerprints.differences(record["fingerprint"], stage.fingerprint, stage.default)
    if diff:
        return Decision(MISMATCH, ", ".join(diff))
    changed = sorted(k for k in set(stage.inputs) | set(record.get("inputs", {}))
                     if record.get("inputs", {}).get(k) != stage.inputs.get(k))
    if changed:
        return Decision(STALE, f"made from an earlier {', '.join(changed)}")
    if stage.result and os.path.exists(stage.result_path):
        return Decision(FINISHED)
    return Decision(RESUME)


def check(stages, root, overwrite=False):
    """Every stage's decision, before any work -> {directory: Decision}. Raises
    StageMismatchError naming every stage made with other flags or data (or without a
    readable record), unless `overwrite` (they are then moved aside when claimed)."""
    decisions = {s.directory: decide(s) for s in stages}
    refused = {d: x.why for d, x in decisions.items() if x.state == MISMATCH}
    if refused and not overwrite:
        raise StageMismatchError(
            f"{root} holds stages made with other flags or data: " + "; ".join(
                f"{os.path.relpath(d, root)}/ ({why})" for d, why in refused.items()) +
            ". Rerun with the recorded flags and data, use another --output_dir, or pass "
            "--overwrite to move those stages aside and start them afresh.")
    return decisions


def aside_path(path):
    """<path>.replaced-<time>, made unique with -2, -3, ... when taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = f"{path}.replaced-{stamp}", 1
    while os.path.lexists(aside):
        n += 1
        aside = f"{path}.replaced-{stamp}-{n}"
    return aside


def move_aside(directory, why):
    """Renames `directory` to <directory>.replaced-<time> (never deleted) -> the new path."""
    aside = aside_path(directory)
    os.replace(directory, aside)
    logging.warning("%s moved aside to %s (%s)", directory, aside, why)
    return aside


def write_record(stage, program=""):
    io_utils.write_json(record_path(stage.directory), {
        "fingerprint": stage.fingerprint, "inputs": stage.inputs, "program": program,
        "started": time.strftime("%Y-%m-%d %H:%M:%S")})


def made_with():
    """What decides a stage's float sums besides its flags, kept in its record: TensorFlow's
    version, the CPU count and the thread settings ("default": one per core). The same seed
    with another thread count is another draw (BUILD_NOTES), so a directory made in parts
    says which stage ran how."""
    import tensorflow as tf  # (here: the early checks import this module before TF)
    return {"tensorflow": tf.__version__, "cpus": os.cpu_count(),
            "intra_op_threads": os.environ.get("TF_NUM_INTRAOP_THREADS", "default"),
            "inter_op_threads": os.environ.get("TF_NUM_INTEROP_THREADS", "default")}


def finish(stage, seconds):
    """A stage's work done: the seconds it took and what it ran with (made_with) kept in its
    record (the times a report gives are those of the run that made each stage), and DONE
    written when it is the stage's result."""
    path = record_path(stage.directory)
    record = read_record(stage.directory) or {"fingerprint": stage.fingerprint}
    io_utils.write_json(path, {**record, "seconds": seconds, "made_with": made_with(),
                               "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    if stage.result == DONE:
        io_utils.write_json(stage.result_path, {"seconds": seconds})


def recorded_seconds(directory):
    """The seconds a stage took when it ran (its record), or None."""
    try:
        return (read_record(directory) or {}).get("seconds")
    except StageMismatchError:
        return None


@contextlib.contextmanager
def claim(stage, overwrite=False, chief=True, program=""):
    """Takes `stage` for this process -> yields its Decision (FINISHED: load its result;
    otherwise run it, its record written): under the lock beside it (another shard making it
    is waited for), a stale stage (or, with `overwrite`, one of other flags) moved aside
    first. Raises StageMismatchError for a stage of other flags without `overwrite`.
    Non-chief workers only decide (the chief writes)."""
    with _stage_lock(stage.directory, chief):
        decision = decide(stage)
        if decision.state == MISMATCH and not overwrite:
            raise StageMismatchError(f"{stage.directory}: {decision.why}. Pass --overwrite "
                                     "to move it aside and start it afresh.")
        if chief and decision.state in (MISMATCH, STALE):
            move_aside(stage.directory, decision.why)
            decision = Decision(TO_RUN)
        if chief and decision.state == TO_RUN:
            os.makedirs(stage.directory, exist_ok=True)
            write_record(stage, program)
        yield decision


@contextlib.contextmanager
def _stage_lock(directory, enabled):
    """An exclusive lock on <parent>/.<name>.lock, waiting for its holder (announced); a
    stage linked from another run (a grid's shared stage) is locked where it lives."""
    if not enabled:
        yield
        return
    parent, name = os.path.split(os.path.realpath(directory))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(os.path.join(parent, f".{name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info("%s is being made by another shard: waiting for it", directory)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def parse_shard(text):
    """"i/N" -> (i, N) with 0 <= i < N; "" -> None. Raises ValueError naming --shard."""
    if not text:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard={text}: give i/N, e.g. 0/4 (the first of 4 shards)") \
            from None
    if not 0 <= index < count:
        raise ValueError(f"--shard={text}: i must be in 0..N-1 (the {count} shards are "
                         f"0/{count} .. {count - 1}/{count})")
    return index, count


def shard_of(cells, shard):
    """The cells a shard runs: every N-th of `cells` (a fixed order) from the i-th; all of
    them without a shard."""
    if shard is None:
        return list(cells)
    index, count = shard
    return list(cells)[index::count]
