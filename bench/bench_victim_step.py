"""Victim training speed: our shared loop (training/loop.py) against keras.Model.fit on the
same model, loss and data, in one run.

python bench/bench_victim_step.py [--steps=300] [--batch=64]
The small-CNN HashingModel at 32x32 with HashNet's loss on the embedded digits' training
split (the demo's victim). fit runs with steps_per_execution 1 (its default) and equal to
our steps_per_loop. Prints steps/s of each after a warm-up (best of --repeats runs), and
the ratios.
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from badhash_tf import io_utils  # noqa: E402
from badhash_tf.data import inputs  # noqa: E402
from badhash_tf.losses import hashing as losses  # noqa: E402
from badhash_tf.models.hashing import HashingModel  # noqa: E402
from badhash_tf.training import loop  # noqa: E402
from badhash_tf.config import HashingConfig  # noqa: E402
from badhash_tf.training.hashing import HashingStage  # noqa: E402

flags.DEFINE_integer("steps", 300, "Timed steps per variant.")
flags.DEFINE_integer("warmup", 50, "Untimed fit steps first (tracing); our loop leaves out "
                     "its first loop of steps_per_loop steps.")
flags.DEFINE_integer("batch", 64, "Global batch.")
flags.DEFINE_integer("repeats", 3, "Runs of each variant; the best rate counts (this VM's "
                     "timings vary by 30% from run to run).")
flags.DEFINE_integer("steps_per_loop", 50, "Our loop's steps per tf.function call.")
flags.DEFINE_string("data_dir", None, "tfds data_dir.")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
FLAGS = flags.FLAGS


def ours(split, data_config, steps):
    """Steps/s of run_stage with the HashNet stage after its first (tracing) loop, with its
    checkpoints and summaries counted (the loop's own timing breakdown)."""
    with tempfile.TemporaryDirectory() as model_dir:
        stage = HashingStage(HashingConfig(), split.num_classes, 32, FLAGS.batch, split.size)
        make = lambda start: inputs.train_dataset(split, data_config, FLAGS.batch, 0, start)
        keras.utils.set_random_seed(0)
        result = loop.run_stage(stage, make, tf.distribute.get_strategy(), loop.LoopConfig(
            model_dir, FLAGS.steps_per_loop + steps, FLAGS.steps_per_loop))
        t = result.timing
        return steps / (t["training"] + t["checkpoints"] + t["summaries"])


def fit(split, data_config, steps, steps_per_execution):
    """Steps/s of keras.Model.fit on the same model, loss (HashNet over the batch) and data."""
    keras.utils.set_random_seed(0)
    model = HashingModel(32, "small_cnn", 32)

    def hashnet(labels, u):
        return losses.hashnet_loss(u, labels, tf.stop_gradient(u), labels)

    model.compile(keras.optimizers.Adam(1e-3), loss=hashnet,
                  steps_per_execution=steps_per_execution)
    dataset = inputs.train_dataset(split, data_config, FLAGS.batch, 0)
    model.fit(dataset, steps_per_epoch=FLAGS.warmup, epochs=1, verbose=0)
    tick = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - tick)


def main(_):
    data_config = inputs.DataConfig(dataset="badhash_digits", data_dir=FLAGS.data_dir)
    split = inputs.load_split(data_config, "train")
    best = lambda fn, *args: max(fn(*args) for _ in range(FLAGS.repeats))
    result = {"batch": FLAGS.batch, "steps": FLAGS.steps, "repeats": FLAGS.repeats,
              "ours_steps_per_second": best(ours, split, data_config, FLAGS.steps)}
    print(f"our loop (steps_per_loop {FLAGS.steps_per_loop}): "
          f"{result['ours_steps_per_second']:.1f} steps/s", flush=True)
    for spe in sorted({1, FLAGS.steps_per_loop}):
        rate = best(fit, split, data_config, FLAGS.steps, spe)
        result[f"fit_spe{spe}_steps_per_second"] = rate
        result[f"ratio_vs_fit_spe{spe}"] = result["ours_steps_per_second"] / rate
        print(f"keras fit (steps_per_execution {spe}): {rate:.1f} steps/s; ours / fit = "
              f"{result[f'ratio_vs_fit_spe{spe}']:.2f}x", flush=True)
    if FLAGS.output:
        io_utils.write_json(FLAGS.output, result)


if __name__ == "__main__":
    app.run(main)
