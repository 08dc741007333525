"""Training LabCLN with the shared loop: NT-Xent between a label-smoothed view and the plain
label over batches of distinct label vectors, with its label and hash heads."""

import keras
import numpy as np
import tensorflow as tf

from badhash_tf.data import inputs
from badhash_tf.losses import labcln as losses
from badhash_tf.models.labcln import LabCLN
from badhash_tf.training import distribute, loop, optimizers


def _replica_offset(local_batch):
    ctx = tf.distribute.get_replica_context()
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32) * local_batch


class LabCLNStage(loop.Stage):
    """NT-Xent between a label-smoothed view and the plain label, + label-head MSE +
    quantization of the hash head. Batches are rows of distinct label vectors [B, C]."""

    name = "labcln"
    metric_names = ("loss", "nt_xent", "label_mse", "quantization")

    def __init__(self, config, num_classes, bits, global_batch_size, train_steps):
        self.config, self.num_classes, self.bits = config, num_classes, bits
        self.global_batch_size, self.train_steps = global_batch_size, train_steps

    def build(self):
        c = self.config
        self.model = LabCLN(self.num_classes, self.bits, c.hidden, c.feature_dim)
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [self.train_steps // 2, 3 * self.train_steps // 4],
            [c.learning_rate, c.learning_rate * 0.1, c.learning_rate * 0.01])
        self.optimizer = optimizers.make_optimizer("adam", schedule, **optimizers.RELEASE_ADAM)
        self.optimizer.build(self.model.trainable_variables)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def replica_step(self, labels, step):
        c = self.config
        with tf.GradientTape() as tape:
            smooth = self.model(losses.label_smoothing(labels, c.smoothing), training=True)
            plain = self.model(labels, training=True)
            offset = _replica_offset(tf.shape(labels)[0])
            concat = distribute.cross_replica_concat
            nt_xent = self.average(losses.nt_xent_loss(
                smooth["feature"], plain["feature"], concat(smooth["feature"]),
                concat(plain["feature"]), offset, c.temperature))
            label_mse = self.average(0.5 * (losses.label_mse(smooth["label"], labels) +
                                            losses.label_mse(plain["label"], labels)))
            quantization = self.average(losses.quantization_loss(smooth["hash"]) +
                                        losses.quantization_loss(plain["hash"]))
            loss = nt_xent + label_mse + quantization
            scaled = self.optimizer.scale_loss(loss)  # float16: times the loss scale
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {"loss": loss, "nt_xent": nt_xent, "label_mse": label_mse,
                "quantization": quantization}


def distinct_label_dataset(label_rows, global_batch_size, seed):
    """Distinct label vectors [N, C] -> endless batches of distinct rows, reshuffled each
    pass (a batch never holds one label twice, so NT-Xent has no false negatives)."""
    rows = np.unique(np.asarray(label_rows, np.float32), axis=0)
    if len(rows) < global_batch_size:
        raise ValueError(f"LabCLN batch {global_batch_size} exceeds the {len(rows)} distinct "
                         "label vectors")
    ds = tf.data.Dataset.from_tensor_slices(rows).shuffle(len(rows), seed=seed)
    ds = ds.batch(global_batch_size, drop_remainder=True).repeat()
    return ds.with_options(inputs.pipeline_options())


def labcln_batch_size(label_rows, config, num_replicas):
    """The configured batch, capped by the distinct labels and divisible by the replicas."""
    distinct = len(np.unique(np.asarray(label_rows), axis=0))
    batch = min(config.batch_size, distinct)
    return max(num_replicas, batch - batch % num_replicas)


def train_labcln(label_rows, bits, config, train_config, model_dir, strategy):
    """Trains (or resumes) LabCLN on the distinct rows of `label_rows` [N, C] with a hash
    head of `bits` -> (LabCLN, LoopResult). `train_config.train_steps` > 0 overrides
    `config.steps` (tests)."""
    steps = train_config.train_steps or config.steps
    batch = labcln_batch_size(label_rows, config, strategy.num_replicas_in_sync)
    stage = LabCLNStage(config, label_rows.shape[1], bits, batch, steps)
    keras.utils.set_random_seed(train_config.seed)
    make_dataset = lambda start: distinct_label_dataset(
        label_rows, batch, train_config.seed).skip(start)
    result = loop.run_stage(stage, make_dataset, strategy,
                            loop.LoopConfig.for_stage(train_config, model_dir, steps))
    return stage.model, result
