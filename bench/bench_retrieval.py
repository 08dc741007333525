"""Times the vectorised MAP against the per-query NumPy loop, in one run.

python bench/bench_retrieval.py  (10,000 queries x 100,000 database items, 64 bits)
Prints both timings, the speed-up ratio, and checks the two MAPs agree.
"""

import time

import numpy as np
from absl import app, flags

from badhash_tf import io_utils
from badhash_tf.eval import retrieval

flags.DEFINE_integer("queries", 10_000, "Number of queries.")
flags.DEFINE_integer("database", 100_000, "Number of database items.")
flags.DEFINE_integer("bits", 64, "Code length.")
flags.DEFINE_integer("classes", 100, "Single-label classes.")
flags.DEFINE_float("flip", 0.2, "Probability a bit differs from its class centre.")
flags.DEFINE_integer("top_k", 0, "MAP@k (0 = whole database).")
flags.DEFINE_string("output", None, "Optional JSON file for the timings.")
FLAGS = flags.FLAGS


def synthetic(n, centres, flip, rng):
    """Codes near their class centre and one-hot labels: [n, K] int8, [n, C] float32."""
    classes = rng.integers(0, len(centres), n)
    flips = rng.random((n, centres.shape[1])) < flip
    codes = np.where(flips, -centres[classes], centres[classes]).astype(np.int8)
    return codes, np.eye(len(centres), dtype=np.float32)[classes]


def main(_):
    rng = np.random.default_rng(0)
    centres = rng.choice(np.array([-1, 1], np.int8), (FLAGS.classes, FLAGS.bits))
    q, ql = synthetic(FLAGS.queries, centres, FLAGS.flip, rng)
    d, dl = synthetic(FLAGS.database, centres, FLAGS.flip, rng)
    top_k = FLAGS.top_k or None
    tick = time.perf_counter()
    fast = retrieval.mean_average_precision(q, d, ql, dl, top_k=top_k)
    fast_s = time.perf_counter() - tick
    print(f"vectorised: MAP {fast:.6f} in {fast_s:.2f} s", flush=True)
    tick = time.perf_counter()
    slow = retrieval.mean_average_precision_loop(q, d, ql, dl, top_k=top_k)
    slow_s = time.perf_counter() - tick
    print(f"per-query loop: MAP {slow:.6f} in {slow_s:.2f} s")
    if not np.isclose(fast, slow, atol=1e-6):
        raise SystemExit(f"MAPs disagree: {fast} vs {slow}")
    result = {"queries": FLAGS.queries, "database": FLAGS.database, "bits": FLAGS.bits,
              "top_k": top_k, "map": fast, "vectorised_seconds": fast_s,
              "loop_seconds": slow_s, "speedup": slow_s / fast_s}
    print(f"speed-up: {slow_s / fast_s:.1f}x  ({FLAGS.queries} queries x {FLAGS.database} "
          f"items, {FLAGS.bits} bits, top_k={top_k})")
    if FLAGS.output:
        io_utils.write_json(FLAGS.output, result)


if __name__ == "__main__":
    app.run(main)
