"""Hamming-ranking MAP, every implementation on the same data in one run, and the encoding
throughput of a hashing model (where evaluation time really goes).

python bench/bench_retrieval.py  (10,000 queries x 100,000 database items, 64 bits)
Whole-database MAP: the packed path (XOR + popcount, counting sort) against the previous
vectorised path (float matrix product + radix sort of uint16) and the per-query loop (the
definition). MAP@k (k = 1000, the paper's ImageNet protocol): the packed path (histogram
cut-off) against the previous path (argpartition) and a port of the official release's
`CalcTopMap` loop. Prints times, ratios, the packed path's peak memory, and checks that
every MAP agrees.
"""

import os
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from badhash_tf import io_utils  # noqa: E402
from badhash_tf.eval import retrieval  # noqa: E402

flags.DEFINE_integer("queries", 10_000, "Number of queries.")
flags.DEFINE_integer("database", 100_000, "Number of database items.")
flags.DEFINE_integer("bits", 64, "Code length.")
flags.DEFINE_integer("classes", 100, "Single-label classes.")
flags.DEFINE_float("flip", 0.2, "Probability a bit differs from its class centre.")
flags.DEFINE_integer("top_k", 1000, "k of MAP@k.")
flags.DEFINE_bool("slow", True, "Also time the per-query loops (minutes at full size).")
flags.DEFINE_integer("encode_images", 2048, "Images encoded for the throughput figure "
                     "(0 = skip).")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
FLAGS = flags.FLAGS


def synthetic(n, centres, flip, rng):
    """Codes near their class centre and one-hot labels: [n, K] int8, [n, C] float32."""
    classes = rng.integers(0, len(centres), n)
    flips = rng.random((n, centres.shape[1])) < flip
    codes = np.where(flips, -centres[classes], centres[classes]).astype(np.int8)
    return codes, np.eye(len(centres), dtype=np.float32)[classes]


def previous_map(q, d, ql, dl, top_k=None, elements_per_batch=1 << 24):
    """The previous vectorised path: distances by float32 matrix product, a stable radix
    sort of uint16 distances (or argpartition of distance * N + index for top k)."""
    q, d = q.astype(np.float32), d.astype(np.float32)
    n = len(d)
    k = n if top_k is None else min(top_k, n)
    rows = max(1, elements_per_batch // n)
    aps = []
    for start in range(0, len(q), rows):
        dist = (0.5 * (q.shape[1] - q[start:start + rows] @ d.T)).astype(np.uint16)
        if k < n:
            keys = dist.astype(np.int64) * n + np.arange(n)
            top = np.argpartition(keys, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(top, np.argsort(
                np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
        else:
            order = np.argsort(dist, axis=1, kind="stable")
        relevant = np.take_along_axis((ql[start:start + rows] @ dl.T) > 0, order, axis=1)
        hit_rows, ranks = np.nonzero(relevant)  # row-major: each row's ranks in order
        found = np.bincount(hit_rows, minlength=len(relevant))
        first = np.concatenate([[0], np.cumsum(found)[:-1]])
        nth = np.arange(1, len(hit_rows) + 1) - first[hit_rows]
        sums = np.bincount(hit_rows, weights=nth / (ranks + 1.0), minlength=len(relevant))
        aps.append(np.where(found > 0, sums / np.maximum(found, 1), 0.0))
    return float(np.concatenate(aps).mean())


def official_top_map(q, d, ql, dl, top_k):
    """A port of the release's `CalcTopMap` (utils/hamming_matching.py): per query, the
    relevance of the whole database by a label product, distances by a code product, an
    argsort, AP over the top k. Its argsort is made stable here (the release's quicksort
    orders ties arbitrarily), so the MAPs can be compared exactly."""
    total = 0.0
    for i in range(len(q)):
        gnd = (ql[i] @ dl.T > 0).astype(np.float32)
        hamm = 0.5 * (q.shape[1] - q[i].astype(np.float32) @ d.T.astype(np.float32))
        tgnd = gnd[np.argsort(hamm, kind="stable")][:top_k]
        tsum = int(tgnd.sum())
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.flatnonzero(tgnd == 1) + 1.0
        total += np.mean(count / tindex)
    return total / len(q)


def timed(fn, *args, **kwargs):
    tick = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - tick


def encode_throughput(images, bits, image_size, backbone):
    """Images/s of `encode` (model.predict + sign) for a hashing model."""
    import tensorflow as tf

    from badhash_tf.models.hashing import HashingModel
    from badhash_tf.eval.codes import encode
    model = HashingModel(bits, backbone, image_size)
    data = np.random.default_rng(0).random((images, image_size, image_size, 3), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((data, np.zeros((images, 1), np.float32)))
    encode(model, dataset.take(256).batch(256))  # warm-up (tracing)
    _, seconds = timed(encode, model, dataset.batch(256))
    return images / seconds


def main(_):
    rng = np.random.default_rng(0)
    centres = rng.choice(np.array([-1, 1], np.int8), (FLAGS.classes, FLAGS.bits))
    q, ql = synthetic(FLAGS.queries, centres, FLAGS.flip, rng)
    d, dl = synthetic(FLAGS.database, centres, FLAGS.flip, rng)
    k = FLAGS.top_k
    result = {"queries": FLAGS.queries, "database": FLAGS.database, "bits": FLAGS.bits,
              "top_k": k, "cores": os.cpu_count()}
    tracemalloc.start()
    result["map"], result["packed_seconds"] = timed(retrieval.mean_average_precision,
                                                    q, d, ql, dl)
    result["packed_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    print(f"whole database, packed: MAP {result['map']:.6f} in {result['packed_seconds']:.2f} s "
          f"(peak {result['packed_peak_mib']:.0f} MiB beyond the codes)", flush=True)
    result["map_at_k"], result["packed_top_k_seconds"] = timed(
        retrieval.mean_average_precision, q, d, ql, dl, k)
    print(f"MAP@{k}, packed: {result['map_at_k']:.6f} in "
          f"{result['packed_top_k_seconds']:.2f} s", flush=True)
    checks = {}
    checks["previous"], result["previous_seconds"] = timed(previous_map, q, d, ql, dl)
    checks["previous_top_k"], result["previous_top_k_seconds"] = timed(
        previous_map, q, d, ql, dl, k)
    print(f"previous vectorised: {result['previous_seconds']:.2f} s, MAP@{k} "
          f"{result['previous_top_k_seconds']:.2f} s", flush=True)
    if FLAGS.slow:
        checks["loop"], result["loop_seconds"] = timed(
            retrieval.mean_average_precision_loop, q, d, ql, dl)
        print(f"per-query loop (definition): {result['loop_seconds']:.2f} s", flush=True)
        checks["official_top_k"], result["official_top_k_seconds"] = timed(
            official_top_map, q, d, ql, dl, k)
        print(f"official CalcTopMap loop, MAP@{k}: {result['official_top_k_seconds']:.2f} s",
              flush=True)
    for name, value in checks.items():
        want = result["map_at_k"] if name.endswith("top_k") else result["map"]
        if not np.isclose(value, want, rtol=0, atol=1e-9):
            raise SystemExit(f"MAPs disagree: {name} {value} vs packed {want}")
    ratio = lambda slow, fast: result[slow] / result[fast]
    result["speedup_vs_previous"] = ratio("previous_seconds", "packed_seconds")
    result["speedup_top_k_vs_previous"] = ratio("previous_top_k_seconds", "packed_top_k_seconds")
    if FLAGS.slow:
        result["speedup_vs_loop"] = ratio("loop_seconds", "packed_seconds")
        result["speedup_top_k_vs_official"] = ratio("official_top_k_seconds",
                                                    "packed_top_k_seconds")
    print(f"every MAP agrees ({len(checks)} checks). Speed-ups of the packed path, "
          f"{FLAGS.queries} queries x {FLAGS.database} items, {FLAGS.bits} bits, "
          f"{os.cpu_count()} cores:")
    for key in ("speedup_vs_loop", "speedup_top_k_vs_official", "speedup_vs_previous",
                "speedup_top_k_vs_previous"):
        if key in result:
            print(f"  {key}: {result[key]:.1f}x")
    if FLAGS.encode_images:
        for backbone, size in (("small_cnn", 32), ("resnet50", 224)):
            count = FLAGS.encode_images if size == 32 else max(64, FLAGS.encode_images // 16)
            rate = encode_throughput(count, FLAGS.bits, size, backbone)
            result[f"encode_{backbone}_{size}_images_per_second"] = rate
            print(f"encoding throughput, {backbone} at {size}x{size}: {rate:.0f} images/s "
                  f"(the database alone takes {FLAGS.database / rate:.0f} s)", flush=True)
    if FLAGS.output:
        io_utils.write_json(FLAGS.output, result)


if __name__ == "__main__":
    app.run(main)
