"""Training and evaluating a deep-hashing model (victim or surrogate) with the shared loop."""

import dataclasses
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.data import pipeline
from badhash_tf.eval import retrieval
from badhash_tf.losses import hashing as losses
from badhash_tf.models.hashing import HashingModel
from badhash_tf.training import distribute, loop

METHODS = ("hashnet", "csq", "dpsh")
BACKBONE_WEIGHTS = "backbone.weights.h5"  # written beside metrics.json


@dataclasses.dataclass(frozen=True)
class HashingConfig:
    """The hashing model and its loss. Paper: RMSprop lr 1e-5, wd 1e-5, pretrained backbone;
    the embedded preset trains a small CNN from scratch with Adam 1e-3."""
    method: str = "hashnet"
    backbone: str = "small_cnn"
    bits: int = 32
    backbone_weights: Optional[str] = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    hashnet_alpha: float = 0.1
    dpsh_quantization: float = 0.1
    csq_quantization: float = 1e-4
    sharpen_every: int = 200  # tanh scale = sqrt(1 + 0.005 * step), updated this often
    center_seed: int = 0


def make_optimizer(name, learning_rate, weight_decay=0.0, **kwargs):
    """'adam' | 'rmsprop' -> a Keras 3 optimizer (decoupled weight decay when > 0)."""
    wd = weight_decay or None
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=wd, **kwargs)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, weight_decay=wd, **kwargs)
    raise ValueError(f"--optimizer={name}: choose adam or rmsprop")


class HashingStage(loop.Stage):
    """Trains a HashingModel with HashNet, CSQ or DPSH on (image, multi-hot label) batches."""

    name = "hashing"

    def __init__(self, config, num_classes, image_size, global_batch_size):
        if config.method not in METHODS:
            raise ValueError(f"--method={config.method}: choose one of {', '.join(METHODS)}")
        self.config, self.num_classes = config, num_classes
        self.image_size, self.global_batch_size = image_size, global_batch_size

    def build(self):
        c = self.config
        self.model = HashingModel(c.bits, c.backbone, self.image_size, c.backbone_weights)
        self.optimizer = make_optimizer(c.optimizer, c.learning_rate, c.weight_decay)
        self.optimizer.build(self.model.trainable_variables)
        centers = losses.hash_centers(self.num_classes, c.bits, c.center_seed)
        tie = np.random.default_rng(c.center_seed + 1).choice([-1.0, 1.0], c.bits)
        self.centers = tf.constant(centers)
        self.tie_center = tf.constant(tie, tf.float32)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def before_step(self, step):
        every = self.config.sharpen_every
        sharpened = tf.cast(step // every * every, tf.float32)
        self.model.scale.assign(tf.sqrt(1.0 + 0.005 * sharpened))

    def per_example_loss(self, u, labels):
        """u [B, K], labels [B, C] (this replica's rows) -> [B]."""
        c = self.config
        if c.method == "csq":
            targets = losses.center_targets(labels, self.centers, self.tie_center)
            return losses.csq_loss(u, targets, c.csq_quantization)
        u_all = tf.stop_gradient(distribute.cross_replica_concat(u))
        labels_all = distribute.cross_replica_concat(labels)
        if c.method == "hashnet":
            return losses.hashnet_loss(u, labels, u_all, labels_all, c.hashnet_alpha)
        return losses.dpsh_loss(u, labels, u_all, labels_all, c.dpsh_quantization)

    def replica_step(self, batch, step):
        images, labels = batch
        with tf.GradientTape() as tape:
            u = self.model(images, training=True)
            loss = self.average(self.per_example_loss(u, labels))
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


def train_hashing_model(train_split, data_config, config, train_config, model_dir, strategy):
    """Trains (or resumes) a hashing model on `train_split` -> (HashingModel, LoopResult)."""
    stage = HashingStage(config, train_split.num_classes, data_config.image_size,
                         train_config.global_batch_size)
    make_dataset = lambda start: pipeline.train_dataset(
        train_split, data_config, train_config.global_batch_size, train_config.seed, start)
    keras.utils.set_random_seed(train_config.seed)
    result = loop.run_stage(stage, make_dataset, strategy, loop.LoopConfig(
        model_dir, train_config.steps_for(train_split.size), train_config.steps_per_loop,
        jit_compile=train_config.jit_compile))
    return stage.model, result


def encode(model, dataset):
    """Binary codes of an ordered batched dataset of (images, labels) -> (codes int8 [N, K]
    of +-1, labels [N, C])."""
    # model.predict, which distributes correctly; a one-pass predict_on_batch loop returns
    # each row once per replica under Mirrored/MultiWorker strategies (scale-out tests).
    u = model.predict(dataset.map(lambda images, labels: images), verbose=0)
    labels = np.concatenate([y.numpy() for _, y in dataset])
    return np.where(u >= 0, 1, -1).astype(np.int8), labels


def retrieval_metrics(query, database, top_k, precision_k):
    """(codes, labels) pairs -> {map, map_at_k, k, precision_at_k, precision_k}."""
    (qc, ql), (dc, dl) = query, database
    return {
        "map": retrieval.mean_average_precision(qc, dc, ql, dl),
        "map_at_k": retrieval.mean_average_precision(qc, dc, ql, dl, top_k=top_k),
        "k": min(top_k, len(dc)),
        "precision_at_k": retrieval.precision_at_k(qc, dc, ql, dl, precision_k),
        "precision_k": min(precision_k, len(dc)),
    }


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """Which splits are queried and ranked, and the k of the top-k figures."""
    train_split: str = "train"
    query_split: str = "query"
    database_split: str = "database"
    map_top_k: int = 1000
    precision_k: int = 100


def train_and_evaluate(data_config, config, train_config, retrieval_config, output_dir,
                       strategy, train_split=None, record=None):
    """Trains a hashing model into `output_dir` and evaluates it: writes codes.npz,
    metrics.json, metrics.md and backbone.weights.h5 there (chief only) -> (model, metrics
    dict, codes) with codes = {"query": (codes, labels), "database": (codes, labels)}.
    `train_split` overrides the configured one (e.g. a poisoned split); `record` (e.g. the
    command line's flags) is stored in metrics.json as is."""
    r = retrieval_config
    train_split = train_split or pipeline.load_split(data_config, r.train_split)
    model, result = train_hashing_model(train_split, data_config, config, train_config,
                                        output_dir, strategy)
    query = encode(model, pipeline.eval_dataset(pipeline.load_split(data_config, r.query_split)))
    database = encode(model, pipeline.eval_dataset(
        pipeline.load_split(data_config, r.database_split)))
    metrics = retrieval_metrics(query, database, r.map_top_k, r.precision_k)
    metrics.update(seconds=result.seconds, train_steps=result.step,
                   resumed_from=result.resumed_from, train_examples=train_split.size,
                   final_loss=result.history["loss"][-1] if result.history["loss"] else None,
                   loss_history=result.history["loss"],
                   config=dataclasses.asdict(config), data=dataclasses.asdict(data_config),
                   train=dataclasses.asdict(train_config), **(record or {}))
    if distribute.is_chief(strategy):
        with io_utils.atomic_path(f"{output_dir}/{BACKBONE_WEIGHTS}", ".weights.h5") as tmp:
            model.backbone.save_weights(tmp)  # reusable as --backbone_weights (pretraining)
        io_utils.save_npz(f"{output_dir}/codes.npz", query_codes=query[0], query_labels=query[1],
                          db_codes=database[0], db_labels=database[1])
        io_utils.write_json(f"{output_dir}/metrics.json", metrics)
        io_utils.write_text(f"{output_dir}/metrics.md", io_utils.markdown_table(
            [{"method": config.method, "bits": config.bits, "backbone": config.backbone,
              **{k: metrics[k] for k in ("map", "map_at_k", "k", "precision_at_k")},
              "seconds": round(metrics["seconds"], 1)}],
            ["method", "bits", "backbone", "map", "map_at_k", "k", "precision_at_k", "seconds"]))
    return model, metrics, {"query": query, "database": database}
