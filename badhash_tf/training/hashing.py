"""Training and evaluating a deep-hashing model (victim or surrogate) with the shared loop."""

import dataclasses
import math
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
    weight_decay: float = 0.0  # coupled L2, torch's `weight_decay` (the release: 1e-5)
    hashnet_alpha: float = 0.1
    dpsh_quantization: float = 0.1
    csq_quantization: float = 1e-4
    hashnet_step_continuation: int = 20  # epochs per HashNet continuation step
    center_seed: int = 0


def make_optimizer(name, learning_rate):
    """'adam' | 'rmsprop' -> a Keras 3 optimizer. RMSprop as torch's default, which the
    release uses: rho (torch's alpha) 0.99 and eps 1e-8 outside the square root (Keras
    adds epsilon inside it: 1e-16 there is the same to within 1e-8)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, rho=0.99, epsilon=1e-16)
    raise ValueError(f"--optimizer={name}: choose adam or rmsprop")


def tanh_scale(method, epoch, step_continuation=20):
    """The scale s of the hash layer's tanh(s z) in epoch `epoch` (from 0), as the release's
    trainers set it: HashNet's continuation sqrt(epoch // step_continuation + 1); CSQ's
    plain tanh (1). DPSH, absent from the release, keeps 1 as in its own paper (a tanh
    relaxation with a quantization term, no continuation)."""
    if method == "hashnet":
        return math.sqrt(epoch // step_continuation + 1)
    return 1.0


def coupled_l2(variables, weight_decay, num_replicas):
    """torch's `weight_decay` (wd * w added to every gradient) as a loss term of this
    replica: 0.5 * wd * sum ||w||^2 / replicas, since replica gradients are summed."""
    return 0.5 * weight_decay / num_replicas * tf.add_n(
        [tf.reduce_sum(tf.square(v)) for v in variables])


class HashingStage(loop.Stage):
    """Trains a HashingModel with HashNet, CSQ or DPSH on (image, multi-hot label) batches."""

    name = "hashing"

    def __init__(self, config, num_classes, image_size, global_batch_size, epoch_size):
        if config.method not in METHODS:
            raise ValueError(f"--method={config.method}: choose one of {', '.join(METHODS)}")
        self.config, self.num_classes = config, num_classes
        self.image_size, self.global_batch_size = image_size, global_batch_size
        self.epoch_size = epoch_size  # training items per epoch

    def build(self):
        c = self.config
        self.model = HashingModel(c.bits, c.backbone, self.image_size, c.backbone_weights)
        self.optimizer = make_optimizer(c.optimizer, c.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        centers = losses.hash_centers(self.num_classes, c.bits, c.center_seed)
        tie = np.random.default_rng(c.center_seed + 1).choice([-1.0, 1.0], c.bits)
        self.centers = tf.constant(centers)
        self.tie_center = tf.constant(tie, tf.float32)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def before_step(self, step):
        """Sets the tanh scale of the epoch `step` falls in (the method's continuation)."""
        if self.config.method == "hashnet":
            epoch = step * self.global_batch_size // self.epoch_size
            continuation = self.config.hashnet_step_continuation
            self.model.scale.assign(tf.sqrt(tf.cast(epoch // continuation + 1, tf.float32)))

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
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            u = self.model(images, training=True)
            loss = self.average(self.per_example_loss(u, labels))
            objective = loss
            if self.config.weight_decay:
                objective += coupled_l2(variables, self.config.weight_decay,
                                        tf.distribute.get_strategy().num_replicas_in_sync)
        self.optimizer.apply_gradients(zip(tape.gradient(objective, variables), variables))
        return {"loss": loss}


def train_hashing_model(train_split, data_config, config, train_config, model_dir, strategy,
                        evaluate=None, evaluate_every_epochs=0):
    """Trains (or resumes) a hashing model on `train_split` -> (HashingModel, LoopResult).
    `evaluate(model)` -> {figure: float}, when given, runs every `evaluate_every_epochs`
    epochs (the release evaluates every 5 and reports the best)."""
    stage = HashingStage(config, train_split.num_classes, data_config.image_size,
                         train_config.global_batch_size, train_split.size)
    make_dataset = lambda start: pipeline.train_dataset(
        train_split, data_config, train_config.global_batch_size, train_config.seed, start)
    every = 0
    if evaluate and evaluate_every_epochs > 0:
        every = max(1, round(evaluate_every_epochs * train_split.size /
                             train_config.global_batch_size))
    keras.utils.set_random_seed(train_config.seed)
    result = loop.run_stage(stage, make_dataset, strategy, loop.LoopConfig(
        model_dir, train_config.steps_for(train_split.size), train_config.steps_per_loop,
        jit_compile=train_config.jit_compile, evaluate_every=every),
        evaluate=lambda step: evaluate(stage.model))
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
    """Which splits are queried and ranked, the k of the top-k figures, and how often (in
    epochs) a victim is evaluated during training for the best-so-far figures."""
    train_split: str = "train"
    query_split: str = "query"
    database_split: str = "database"
    map_top_k: int = 1000
    precision_k: int = 100
    eval_every_epochs: int = 5


def best_of(evaluations, final):
    """The release's "best over the evaluations every 5 epochs": `final` {figure: float}
    (figures `map_at_k`, `t_map`) and the periodic `evaluations` -> {map_best, t_map_best}:
    each figure's maximum over all of them."""
    names = {"map_at_k": "map_best", "t_map": "t_map_best"}
    return {names[k]: max([e[k] for e in evaluations if k in e] + [v])
            for k, v in final.items() if k in names}


def train_and_evaluate(data_config, config, train_config, retrieval_config, output_dir,
                       strategy, train_split=None, record=None, backdoor=None):
    """Trains a hashing model into `output_dir` and evaluates it: writes codes.npz,
    metrics.json, metrics.md and backbone.weights.h5 there (chief only) -> (model, metrics
    dict, codes) with codes = {"query": (codes, labels), "database": (codes, labels)}.
    `train_split` overrides the configured one (e.g. a poisoned split); `record` (e.g. the
    command line's flags) is stored in metrics.json as is. Every `eval_every_epochs` the
    model's MAP@k (and `backdoor(model, database codes)` -> {"t_map": float}, if given) is
    measured; metrics gain the release's best-so-far `map_best` (and `t_map_best`)."""
    r = retrieval_config
    train_split = train_split or pipeline.load_split(data_config, r.train_split)
    query_data, database_data = (
        pipeline.eval_dataset(pipeline.load_split(data_config, name), cache=data_config.cache)
        for name in (r.query_split, r.database_split))

    def encode_splits(model):
        return {"query": encode(model, query_data), "database": encode(model, database_data)}

    def periodic(model):
        codes = encode_splits(model)
        (qc, ql), (dc, dl) = codes["query"], codes["database"]
        figures = {"map_at_k": retrieval.mean_average_precision(qc, dc, ql, dl, r.map_top_k)}
        return {**figures, **(backdoor(model, codes["database"]) if backdoor else {})}

    model, result = train_hashing_model(train_split, data_config, config, train_config,
                                        output_dir, strategy, periodic, r.eval_every_epochs)
    codes = encode_splits(model)
    metrics = retrieval_metrics(codes["query"], codes["database"], r.map_top_k, r.precision_k)
    final = {"map_at_k": metrics["map_at_k"],
             **(backdoor(model, codes["database"]) if backdoor else {})}
    metrics.update(best_of(result.evaluations, final))
    metrics.update(seconds=result.seconds, train_steps=result.step,
                   resumed_from=result.resumed_from, train_examples=train_split.size,
                   final_loss=result.history["loss"][-1] if result.history["loss"] else None,
                   loss_history=result.history["loss"], evaluations=result.evaluations,
                   config=dataclasses.asdict(config), data=dataclasses.asdict(data_config),
                   train=dataclasses.asdict(train_config), **(record or {}))
    if distribute.is_chief(strategy):
        with io_utils.atomic_path(f"{output_dir}/{BACKBONE_WEIGHTS}", ".weights.h5") as tmp:
            model.backbone.save_weights(tmp)  # reusable as --backbone_weights (pretraining)
        query, database = codes["query"], codes["database"]
        io_utils.save_npz(f"{output_dir}/codes.npz", query_codes=query[0], query_labels=query[1],
                          db_codes=database[0], db_labels=database[1])
        io_utils.write_json(f"{output_dir}/metrics.json", metrics)
        io_utils.write_text(f"{output_dir}/metrics.md", io_utils.markdown_table(
            [{"method": config.method, "bits": config.bits, "backbone": config.backbone,
              **{k: metrics[k] for k in ("map", "map_at_k", "map_best", "k",
                                         "precision_at_k")},
              "seconds": round(metrics["seconds"], 1)}],
            ["method", "bits", "backbone", "map", "map_at_k", "map_best", "k",
             "precision_at_k", "seconds"]))
    return model, metrics, codes
