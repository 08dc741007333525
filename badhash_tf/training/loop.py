"""The training loop shared by every stage (victim, LabCLN, generator/discriminator).

Mechanics after google-research/simclr tf2: models and optimizers built in
`strategy.scope()`; a `tf.function` running `steps_per_loop` steps in a `tf.range` loop with
`strategy.run`; a CheckpointManager save and TensorBoard summaries after each loop. A stage
supplies the per-replica step; the loop owns the step counter, resume, progress, summaries
and the non-finite guard.
"""

import abc
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from keras.utils import Progbar

from badhash_tf import io_utils
from badhash_tf.training import distribute


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class Stage(abc.ABC):
    """One trainable stage. Subclasses set `name`, `metric_names` and (for `average`)
    `global_batch_size`, and implement
    `build` (called in the strategy scope), `checkpoint_items`, and `replica_step` (or
    `distributed_step`, for control flow around several replica steps)."""

    name = "stage"
    metric_names = ("loss",)

    @abc.abstractmethod
    def build(self):
        """Creates models and optimizers (and builds the optimizers' slots)."""

    @abc.abstractmethod
    def checkpoint_items(self):
        """-> dict of trackables saved with the step counter."""

    def replica_step(self, batch, step):
        """One replica's step on its slice of the global batch -> {name: scalar} whose
        SUM over replicas is the global value (scale by the global batch size). Stages
        that override distributed_step need not define it."""
        raise TypeError(f"stage {self.name!r} defines neither replica_step nor "
                        "distributed_step")

    def average(self, per_example):
        """Per-example losses [B] of this replica -> their sum over the global batch
        (`self.global_batch_size`), so the SUM over replicas is the global mean."""
        return tf.nn.compute_average_loss(per_example,
                                          global_batch_size=self.global_batch_size)

    def before_step(self, step):
        """Cross-replica hook before each step (schedules that set variables)."""
        del step  # (a body autograph can convert; a docstring alone is not one)

    def distributed_step(self, run, iterator, step):
        """One global step in cross-replica context -> {name: scalar}. `run(fn, *args)` runs
        `fn` on every replica and SUM-reduces its dict; `next(iterator)` is a global batch.
        Override to run several replica steps per step (unrolled in Python: a tf.cond around
        collective ops fails under MultiWorkerMirroredStrategy)."""
        return run(self.replica_step, next(iterator), step)

    def write_summaries(self, step):
        """Extra summaries (e.g. images) after each loop, inside the chief's writer."""
        del step


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Where checkpoints go and how long to train; `evaluate_every` > 0: steps between
    calls of run_stage's `evaluate` (loops end on those steps)."""
    model_dir: str
    train_steps: int
    steps_per_loop: int = 50
    max_to_keep: int = 3  # while training: the last checkpoints, for an exact resume
    jit_compile: bool = False
    evaluate_every: int = 0
    mixed_precision: str = "off"
    keep_checkpoints: bool = False  # a finished stage keeps every checkpoint (prune_finished)

    @classmethod
    def for_stage(cls, train, model_dir, train_steps, evaluate_every=0):
        """The one loop configuration of every stage: `train_steps` steps into `model_dir`,
        cut, compiled and computed as the training flags (`train`, a TrainConfig) say."""
        return cls(model_dir, train_steps, train.steps_per_loop,
                   jit_compile=train.jit_compile, evaluate_every=evaluate_every,
                   mixed_precision=train.mixed_precision,
                   keep_checkpoints=train.keep_checkpoints)


@contextlib.contextmanager
def dtype_policy(mixed_precision):
    """Keras' global dtype policy while a stage's models are built ("off": float32): layers
    keep the policy they were made under, so the stage's models compute in it while models
    built elsewhere (exports, later stages' readers) stay float32."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if mixed_precision == "off" else mixed_precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclasses.dataclass
class LoopResult:
    """What a run did: final step, the per-step metrics of this call, wall seconds, and the
    periodic evaluations of the whole run ([{"step": s, **figures}], resumed ones too)."""
    step: int
    history: dict
    seconds: float
    resumed_from: int
    evaluations: list = dataclasses.field(default_factory=list)
    timing: dict = dataclasses.field(default_factory=dict)  # seconds per part of the loop


EVALUATIONS = "evaluations.json"  # periodic evaluations, beside the checkpoints


def _load_evaluations(model_dir, up_to_step):
    """The periodic evaluations a run recorded up to its restored step."""
    path = os.path.join(model_dir, EVALUATIONS)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [e for e in json.load(f) if e["step"] <= up_to_step]


def run_stage(stage, make_dataset, strategy, config, evaluate=None):
    """Builds `stage` in `strategy.scope()`, restores its last checkpoint, and trains it to
    `config.train_steps`. `make_dataset(start_step)` -> tf.data.Dataset of global batches.
    `evaluate(step)` -> {figure: float}, when given, runs on every worker each
    `config.evaluate_every` steps (the chief records it in evaluations.json).
    Raises NonFiniteLossError (keeping the last good checkpoint) on a NaN/Inf metric."""
    start_time = time.time()
    with strategy.scope(), dtype_policy(config.mixed_precision):
        stage.build()
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        checkpoint = tf.train.Checkpoint(step=step, **stage.checkpoint_items())
        weights = tf.train.Checkpoint(step=step, **_weights_only(stage.checkpoint_items()))
    ckpt_dir = distribute.worker_dir(config.model_dir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, config.max_to_keep)
    # Every worker restores the chief's latest checkpoint (shared filesystem), as in TF's
    # multi-worker guide; non-chief workers save to throwaway directories.
    restored = restore_latest_intact(checkpoint, config.model_dir, weights)
    resumed_from = int(step.numpy())
    if restored:
        logging.info("%s: resumed from %s at step %d", stage.name, restored, resumed_from)
    if _is_final_weights(restored) and resumed_from < config.train_steps:
        raise ValueError(
            f"{config.model_dir} holds a finished stage's final weights only (step "
            f"{resumed_from}; its optimizer state was pruned), so it cannot train on to "
            f"{config.train_steps} steps exactly: start it afresh (move it aside), or train "
            "with --keep_checkpoints to keep every checkpoint of finished stages")
    history = {name: [] for name in stage.metric_names}
    evaluations = _load_evaluations(config.model_dir, resumed_from)
    if resumed_from >= config.train_steps:
        distribute.cleanup_dir(ckpt_dir, strategy)
        return LoopResult(resumed_from, history, time.time() - start_time, resumed_from,
                          evaluations)

    summary_dir = distribute.worker_dir(f"{config.model_dir}/summaries", strategy)
    timing = {"build_and_restore": time.time() - start_time}
    try:
        history = _train(stage, make_dataset, strategy, config, step, manager,
                         summary_dir, history, resumed_from, evaluate, evaluations, timing)
        if not config.keep_checkpoints:
            with _PartClock(timing)("checkpoints"):
                prune_finished(weights, ckpt_dir)
    finally:  # a non-chief's throwaway directories go, whatever happened
        distribute.cleanup_dir(summary_dir, strategy)
        distribute.cleanup_dir(ckpt_dir, strategy)
    seconds = time.time() - start_time
    logging.info("%s: finished at step %d in %.1f s (%s); weights sha256 %s", stage.name,
                 int(step.numpy()), seconds,
                 ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timing.items()),
                 weights_digest(stage.checkpoint_items()))
    return LoopResult(int(step.numpy()), history, seconds, resumed_from, evaluations, timing)


FINAL_WEIGHTS = "weights"  # prefix of a finished stage's one checkpoint (prune_finished)


def _weights_only(items):
    """A stage's checkpoint items without its optimizers (their slots double or triple a
    model's size, and nothing trains a finished stage on)."""
    return {k: v for k, v in items.items() if not isinstance(v, keras.optimizers.Optimizer)}


def _is_final_weights(path):
    return bool(path) and os.path.basename(path).startswith(f"{FINAL_WEIGHTS}-")


def prune_finished(weights, model_dir):
    """A finished stage keeps one checkpoint: `weights` (the step and the models, no
    optimizer state) written as weights-<step>, made the directory's latest, and only then
    the training checkpoints deleted (a crash in between leaves both, never neither)."""
    state = tf.train.get_checkpoint_state(model_dir)
    before = list(state.all_model_checkpoint_paths) if state else []
    weights.save_counter  # (made now, so that it is written and a restore matches it)
    step = int(weights.step.numpy())
    path = weights.write(os.path.join(model_dir, f"{FINAL_WEIGHTS}-{step}"))
    # the state file names it relative to the directory (as CheckpointManager does, so a
    # run directory can move), whether `model_dir` is absolute or relative; atomic
    name = os.path.basename(path)
    io_utils.write_text(os.path.join(model_dir, "checkpoint"),
                        f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    for old in before:
        if os.path.abspath(old) != os.path.abspath(path):
            for f in tf.io.gfile.glob(f"{old}.index") + tf.io.gfile.glob(f"{old}.data-*"):
                tf.io.gfile.remove(f)


def restore_latest_intact(checkpoint, model_dir, weights=None):
    """Restores the newest checkpoint in `model_dir` that reads back whole -> its path, or
    None when there is none; a finished stage's final weights (prune_finished) into
    `weights` when given (the step and models alone). A truncated or corrupt newer one is
    passed over with a warning naming it (it is overwritten when that step is saved
    again); when none reads back, the error names them all rather than training from
    scratch over them."""
    state = tf.train.get_checkpoint_state(model_dir)
    paths = list(reversed(state.all_model_checkpoint_paths)) if state else []
    failures = []
    for i, path in enumerate(paths):
        target = weights if weights is not None and _is_final_weights(path) else checkpoint
        try:
            # (expect_partial: a reader may restore part of what was saved, e.g. the model
            # without its optimizer)
            target.restore(path).assert_existing_objects_matched().expect_partial()
            return path
        except (tf.errors.OpError, ValueError, IndexError, KeyError, AssertionError) as e:
            failures.append(f"{path} ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            logging.warning("checkpoint %s is unreadable (%s); %s", path, failures[-1],
                            f"trying the one before it, {paths[i + 1]}" if i + 1 < len(paths)
                            else "there is no earlier checkpoint")
    if failures:
        raise RuntimeError(
            f"no checkpoint in {model_dir} reads back: {'; '.join(failures)}. This stage "
            f"must be trained again (its other outputs need its weights): move it aside, "
            f"`mv {model_dir} {model_dir}.broken`, and rerun the same command; every other "
            "finished stage is reused.")
    return None


def _train(stage, make_dataset, strategy, config, step, manager, summary_dir,
           history, resumed_from, evaluate, evaluations, timing):
    """The loop proper: train, check, save, summarise, evaluate, report, until
    train_steps. Adds the seconds of each part to `timing`."""
    clock = _PartClock(timing)
    with clock("input_and_tracing_setup"):
        iterator = iter(strategy.experimental_distribute_dataset(make_dataset(resumed_from)))
        train_loop = make_train_loop(stage, strategy, step, config.jit_compile)
        writer = tf.summary.create_file_writer(summary_dir)
    progress = _Progress(stage.name, config.train_steps, resumed_from)
    every = config.evaluate_every if evaluate else 0
    while (current := int(step.numpy())) < config.train_steps:
        n = min(config.steps_per_loop, config.train_steps - current)
        if every:  # end this loop on the next evaluation step
            n = min(n, every - current % every)
        tick = time.time()
        with clock("first_call_with_tracing" if current == resumed_from else "training"):
            values = {k: v.numpy() for k, v in train_loop(iterator, tf.constant(n)).items()}
        rate = n / max(time.time() - tick, 1e-9)
        _check_finite(stage.name, values, current, manager.latest_checkpoint)
        done = int(step.numpy())
        if every and done % every == 0:  # recorded before the checkpoint that covers it
            with clock("evaluations"):
                evaluations.append({"step": done, **evaluate(done)})
                if distribute.is_chief(strategy):
                    io_utils.write_json(os.path.join(config.model_dir, EVALUATIONS),
                                        evaluations)
        with clock("checkpoints"):
            manager.save(checkpoint_number=step)
        for name, series in values.items():
            history[name].extend(series.tolist())
        with clock("summaries"), writer.as_default(step=done):
            for name, series in values.items():
                tf.summary.scalar(f"{stage.name}/{name}", float(np.mean(series)))
            tf.summary.scalar(f"{stage.name}/steps_per_second", rate)
            if evaluations and evaluations[-1]["step"] == done:
                for name, value in evaluations[-1].items():
                    tf.summary.scalar(f"{stage.name}/eval/{name}", value)
            stage.write_summaries(step)
        progress.update(done, values, rate)
    writer.close()
    return history


class _PartClock:
    """`with clock(part):` adds the block's wall seconds to `timing[part]`."""

    def __init__(self, timing):
        self.timing = timing

    @contextlib.contextmanager
    def __call__(self, part):
        tick = time.time()
        try:
            yield
        finally:
            self.timing[part] = self.timing.get(part, 0.0) + time.time() - tick


def weights_digest(items):
    """sha256 (16 hex digits) of the values of every variable in `items` ({name: Keras
    model, optimizer or tf.Variable}): every worker logs it, so a user sees that all
    replicas ended identical."""
    digest = hashlib.sha256()
    for name in sorted(items):
        item = items[name]
        variables = [item] if isinstance(item, tf.Variable) else item.variables
        for variable in variables:
            digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()[:16]


def make_train_loop(stage, strategy, step, jit_compile):
    """-> tf.function train_loop(distributed iterator, steps) -> {metric: [steps]} running
    `stage` (already built in `strategy.scope()`) and advancing the `step` variable."""
    compiled = {}

    def run(fn, *args):
        """Runs `fn` (compiled once, XLA when asked) on every replica; SUMs its dict."""
        if fn not in compiled:
            compiled[fn] = tf.function(fn, jit_compile=jit_compile or None)
        outputs = strategy.run(compiled[fn], args=args)
        return {k: tf.cast(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None),
                           tf.float32) for k, v in outputs.items()}

    @tf.function
    def train_loop(iterator, steps):
        """Runs `steps` steps -> {metric: [steps] float32}, reduced over replicas."""
        rows = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            stage.before_step(step)
            outputs = stage.distributed_step(run, iterator, step)
            rows = rows.write(i, tf.stack([outputs[k] for k in stage.metric_names]))
            step.assign_add(1)
        table = rows.stack()
        return {k: table[:, j] for j, k in enumerate(stage.metric_names)}

    return train_loop


def _check_finite(name, values, start_step, last_checkpoint):
    for metric, series in values.items():
        bad = np.flatnonzero(~np.isfinite(series))
        if bad.size:
            raise NonFiniteLossError(
                f"{name}: {metric} became {series[bad[0]]} at step {start_step + bad[0] + 1}; "
                f"training stopped and the last good checkpoint is kept "
                f"({last_checkpoint or 'none saved yet'}). Lower the learning rate (with "
                f"--overwrite, which starts this stage afresh: its checkpoints keep the old "
                f"rate) or check the input data.")


class _Progress:
    """A Keras progress bar on a terminal; a log line per loop with rates otherwise."""

    def __init__(self, name, target, start):
        self.name, self.target = name, target
        self.bar = Progbar(target, stateful_metrics=None) if sys.stdout.isatty() else None
        if self.bar:
            self.bar.update(start)

    def update(self, step, values, rate):
        means = {k: float(np.mean(v)) for k, v in values.items()}
        if self.bar:
            self.bar.update(step, list(means.items()))
            return
        shown = " ".join(f"{k}={v:.4f}" for k, v in means.items())
        logging.info("%s step %d/%d (%d%%) %s  %.1f steps/s", self.name, step, self.target,
                     math.floor(100 * step / self.target), shown, rate)
