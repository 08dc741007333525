"""Training a deep-hashing model (victim or surrogate) with the shared loop."""

import keras
import numpy as np
import tensorflow as tf

from badhash_tf.config import METHODS
from badhash_tf.data import inputs
from badhash_tf.losses import hashing as losses
from badhash_tf.models.hashing import HashingModel
from badhash_tf.training import distribute, loop, optimizers



class HashingStage(loop.Stage):
    """Trains a HashingModel with HashNet, CSQ or DPSH on (image, multi-hot label) batches."""

    name = "hashing"

    def __init__(self, config, num_classes, image_size, global_batch_size, epoch_size,
                 initialize=None):
        if config.method not in METHODS:
            raise ValueError(f"--method={config.method}: choose one of {', '.join(METHODS)}")
        self.config, self.num_classes = config, num_classes
        self.image_size, self.global_batch_size = image_size, global_batch_size
        self.epoch_size = epoch_size  # training items per epoch
        self.initialize = initialize  # model -> None, before training (e.g. fine-tuning)

    def build(self):
        c = self.config
        self.model = HashingModel(c.bits, c.backbone, self.image_size, c.backbone_weights)
        if self.initialize:
            self.initialize(self.model)
        self.optimizer = optimizers.make_optimizer(c.optimizer, c.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        centers = losses.hash_centers(self.num_classes, c.bits, c.center_seed)
        tie = np.random.default_rng(c.center_seed + 1).choice([-1.0, 1.0], c.bits)
        self.centers = tf.constant(centers)
        self.tie_center = tf.constant(tie, tf.float32)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def before_step(self, step):
        """Sets the tanh scale of the epoch `step` falls in (the method's continuation)."""
        epoch = step * self.global_batch_size // self.epoch_size
        self.model.scale.assign(optimizers.tanh_scale(
            self.config.method, epoch, self.config.hashnet_step_continuation))

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
                objective += optimizers.coupled_l2(variables, self.config.weight_decay,
                                        tf.distribute.get_strategy().num_replicas_in_sync)
            scaled = self.optimizer.scale_loss(objective)  # float16: times the loss scale
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {"loss": loss}


def train_hashing_model(train_split, data_config, config, train_config, model_dir, strategy,
                        evaluate=None, evaluate_every_epochs=0, initialize=None):
    """Trains (or resumes) a hashing model on `train_split` -> (HashingModel, LoopResult).
    `evaluate(model)` -> {figure: float}, when given, runs every `evaluate_every_epochs`
    epochs (the release evaluates every 5 and reports the best). `initialize(model)`, when
    given, sets the new model's weights before training (a checkpoint restores over it)."""
    stage = HashingStage(config, train_split.num_classes, data_config.image_size,
                         train_config.global_batch_size, train_split.size, initialize)
    make_dataset = lambda start: inputs.train_dataset(
        train_split, data_config, train_config.global_batch_size, train_config.seed, start)
    every = 0
    if evaluate and evaluate_every_epochs > 0:
        every = max(1, round(evaluate_every_epochs * train_split.size /
                             train_config.global_batch_size))
    keras.utils.set_random_seed(train_config.seed)
    result = loop.run_stage(stage, make_dataset, strategy, loop.LoopConfig.for_stage(
        train_config, model_dir, train_config.steps_for(train_split.size), every),
        evaluate=lambda step: evaluate(stage.model))
    return stage.model, result
