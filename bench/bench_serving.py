"""Latency of an exported generator SavedModel on this CPU: batch 1 and batch 64, median
over repeated calls of the `poison` signature (uint8 in, uint8 out), after warm-up.

python bench/bench_serving.py --saved_model=export/models/badhash_generator/1
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from badhash_tf import io_utils  # noqa: E402

flags.DEFINE_string("saved_model", None, "An exported generator version directory.")
flags.DEFINE_list("batches", ["1", "64"], "Batch sizes.")
flags.DEFINE_integer("repeats", 20, "Timed calls per batch size.")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
flags.mark_flag_as_required("saved_model")
FLAGS = flags.FLAGS


def main(_):
    tick = time.perf_counter()
    signature = tf.saved_model.load(FLAGS.saved_model).signatures["poison"]
    print(f"load: {time.perf_counter() - tick:.2f} s")
    size = signature.structured_input_signature[1]["images"].shape[1] or 32
    meta = os.path.join(FLAGS.saved_model, "assets.extra", "badhash_metadata.json")
    if os.path.exists(meta):
        size = json.load(open(meta))["image_size"]
    rows = []
    for batch in (int(b) for b in FLAGS.batches):
        images = tf.constant(np.random.default_rng(0).integers(
            0, 256, (batch, size, size, 3)).astype(np.uint8))
        for _ in range(3):
            signature(images=images)
        times = []
        for _ in range(FLAGS.repeats):
            tick = time.perf_counter()
            signature(images=images)["poisoned"].numpy()
            times.append(time.perf_counter() - tick)
        median = float(np.median(times))
        rows.append({"batch": batch, "image_size": size, "median_ms": 1000 * median,
                     "p90_ms": 1000 * float(np.percentile(times, 90)),
                     "images_per_second": batch / median})
        print(f"batch {batch:3d} at {size}x{size}: median {1000 * median:.2f} ms, p90 "
              f"{rows[-1]['p90_ms']:.2f} ms, {batch / median:.0f} images/s")
    if FLAGS.output:
        io_utils.write_json(FLAGS.output, rows)


if __name__ == "__main__":
    app.run(main)
