"""Generator + discriminator training throughput (generator images/second; each step is
one discriminator and k = 3 generator updates), in one run:
the paper's size (224x224, batch 4, 100 classes, base width 64, 3+3 residual blocks) and
the embedded demo's (32x32, batch 64, 10 classes, the pipeline's demo widths), each with
and without XLA (`jit_compile=True`); optionally 1 vs 2 replicas (MirroredStrategy over
logical CPUs). Random images; the surrogate is a small-CNN hashing model.

python bench/bench_gan_step.py [--sizes=224,32] [--replicas=1,2] [--steps=3]
The 32x32 setting takes the GAN flags of the digits preset (read first; flags given after
it override them); 224x224 takes the paper's defaults.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from badhash_tf import io_utils, presets  # noqa: E402
from badhash_tf.cli import flags as cli_flags  # noqa: E402
from badhash_tf.cli.configs import from_flags  # noqa: E402
from badhash_tf.config import GANConfig  # noqa: E402
from badhash_tf.data.inputs import Split  # noqa: E402
from badhash_tf.models.hashing import HashingModel  # noqa: E402
from badhash_tf.training import distribute, gan, loop  # noqa: E402

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
flags.DEFINE_list("sizes", ["224", "32"], "Image sizes to time (224: paper, 32: demo).")
flags.DEFINE_list("xla", ["0", "1"], "jit_compile settings to time.")
flags.DEFINE_list("replicas", ["1"], "Replica counts (2 = MirroredStrategy, 2 logical CPUs).")
flags.DEFINE_integer("steps", 0, "Timed steps per setting (0: 2 at 224, 8 at 32).")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
FLAGS = flags.FLAGS

DEMO_PRESET = "digits"


def settings():
    """224: the paper's networks (batch 4, 100 classes); 32: the demo preset's."""
    return {224: dict(batch=4, classes=100, gan=GANConfig()),
            32: dict(batch=64, classes=10, gan=from_flags(GANConfig, FLAGS, prefix="gan_"))}


def time_setting(size, jit, replicas, steps):
    s = settings()[size]
    strategy = (distribute.make_strategy("mirrored", replicas) if replicas > 1
                else tf.distribute.get_strategy())
    rng = np.random.default_rng(0)
    images = rng.random((s["batch"] * 2, size, size, 3), dtype=np.float32)
    labels = np.eye(s["classes"], dtype=np.float32)[rng.integers(0, s["classes"], len(images))]
    split = Split(tf.data.Dataset.from_tensor_slices((images, labels)), len(images),
                  s["classes"])
    condition = gan.Condition(rng.standard_normal(512).astype(np.float32),
                                 rng.choice([-1.0, 1.0], 64), labels[0])
    stage = gan.GANStage(s["gan"], condition, lambda: HashingModel(64, "small_cnn", size),
                            size, s["classes"], s["batch"], steps + 1)
    with strategy.scope():
        stage.build()
        step = tf.Variable(0, dtype=tf.int64, trainable=False)
    dataset = split.dataset.repeat().batch(s["batch"], drop_remainder=True)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    train_loop = loop.make_train_loop(stage, strategy, step, jit)
    tick = time.perf_counter()
    train_loop(iterator, tf.constant(1))  # tracing and compilation
    warmup = time.perf_counter() - tick
    tick = time.perf_counter()
    train_loop(iterator, tf.constant(steps))
    seconds = time.perf_counter() - tick
    return {"size": size, "batch": s["batch"], "classes": s["classes"], "xla": jit,
            "replicas": replicas, "steps": steps, "seconds": seconds,
            "warmup_seconds": warmup,
            # a step is 1 discriminator + k generator updates, each on a batch
            "images_per_second": steps * s["batch"] * s["gan"].disc_every / seconds}


def main(_):
    replicas = [int(r) for r in FLAGS.replicas]
    if max(replicas) > 1:
        distribute.configure_logical_cpus(max(replicas))
    rows = []
    for size in (int(x) for x in FLAGS.sizes):
        steps = FLAGS.steps or (2 if size >= 128 else 8)
        for r in replicas:
            for jit in (x == "1" for x in FLAGS.xla):
                rows.append(time_setting(size, jit, r, steps))
                print(f"{size}x{size} batch {rows[-1]['batch']} replicas {r} xla {jit}: "
                      f"{rows[-1]['images_per_second']:.2f} images/s ({steps} steps in "
                      f"{rows[-1]['seconds']:.1f} s; warm-up {rows[-1]['warmup_seconds']:.1f} s)",
                      flush=True)
    for size in {row["size"] for row in rows}:
        base = [r for r in rows if r["size"] == size and r["replicas"] == 1 and not r["xla"]]
        for row in (r for r in rows if r["size"] == size and r is not (base[0] if base else None)):
            if base:
                print(f"{size}: replicas {row['replicas']} xla {row['xla']} / baseline = "
                      f"{row['images_per_second'] / base[0]['images_per_second']:.2f}x")
    if FLAGS.output:
        io_utils.write_json(FLAGS.output, rows)


if __name__ == "__main__":
    # the preset's lines, its own --preset includes expanded (this script defines no --preset)
    app.run(main, argv=[sys.argv[0]] + presets.read(DEMO_PRESET) + sys.argv[1:])
