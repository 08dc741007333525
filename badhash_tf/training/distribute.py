"""Strategy selection and the chief/worker file-writing rule of TF's multi-worker guide."""

import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "multi_worker")


def configure_logical_cpus(count):
    """Splits the first CPU into `count` logical devices (for MirroredStrategy tests/demos).

    Must run before TensorFlow initialises its devices; later calls succeed only when the
    split already has at least `count` devices."""
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < count:
            raise RuntimeError(f"--logical_cpus={count}: TensorFlow already started with {have} "
                               "CPU device(s); set it before any TensorFlow work") from None


def make_strategy(kind="default", logical_cpus=0):
    """'default' | 'mirrored' | 'multi_worker' -> tf.distribute.Strategy.

    mirrored: all GPUs, or `logical_cpus` logical CPUs when given; multi_worker: the cluster
    in TF_CONFIG (MultiWorkerMirroredStrategy's collective ops)."""
    if kind not in STRATEGIES:
        raise ValueError(f"--strategy={kind}: choose one of {', '.join(STRATEGIES)}")
    if kind == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        configure_logical_cpus(logical_cpus)
        if kind == "default":
            return tf.distribute.get_strategy()
        devices = None
        if logical_cpus > 1:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")[:logical_cpus]]
        strategy = tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice() if devices else None)
    logging.info("--strategy=%s: %s with %d replicas in sync (%s)", kind,
                 type(strategy).__name__, strategy.num_replicas_in_sync,
                 ", ".join(strategy.extended.worker_devices))
    return strategy


def is_chief(strategy):
    """True on the one worker that writes checkpoints, summaries and results."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def worker_dir(path, strategy):
    """`path` on the chief; a fresh temporary directory elsewhere (remove with cleanup_dir)."""
    if is_chief(strategy):
        return path
    return tempfile.mkdtemp(prefix=f"badhash_worker_{os.path.basename(path)}_")


def cleanup_dir(path, strategy):
    """Removes a non-chief's temporary directory made by worker_dir."""
    if not is_chief(strategy):
        shutil.rmtree(path, ignore_errors=True)


def cross_replica_concat(tensor):
    """In a replica context: this replica's [B, ...] -> the global batch [R * B, ...] in
    replica order, differentiable. Built on all_reduce (SimCLR's formulation) because
    `ReplicaContext.all_gather` fails under MultiWorkerMirroredStrategy with one device
    per worker ("destinations can not be empty", TF 2.21). Needs equal per-replica batches."""
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync
    if replicas == 1:
        return tensor
    shape = tf.shape(tensor)
    placed = tf.scatter_nd([[ctx.replica_id_in_sync_group]], tensor[None],
                           tf.concat([[replicas], shape], 0))
    gathered = ctx.all_reduce(tf.distribute.ReduceOp.SUM, placed)
    return tf.reshape(gathered, tf.concat([[-1], shape[1:]], 0))


def barrier(strategy):
    """Blocks until every replica of every worker gets here (an all-reduce of ones), e.g.
    so workers read a file only after the chief has written it."""
    if strategy.num_replicas_in_sync == 1:
        return
    ones = strategy.run(lambda: tf.ones([]))
    strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None).numpy()
