"""Pretraining a hashing backbone as a classifier on a public pool, and reading its output.

The paper's surrogate and victims fine-tune one public ImageNet-pretrained backbone; here a
backbone is pretrained on an embedded pool (another dataset, or the attacked dataset's own
database split, never its query split) and written as `backbone.weights.h5` with
`pretrain.json` (pool, split, epochs, held-out top-1), for `--pretrained_backbone=DIR`.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.config import AUGMENTS
from badhash_tf.data import inputs
from badhash_tf.losses import classification as losses
from badhash_tf.models.classifier import BackboneClassifier
from badhash_tf.training import distribute, loop, optimizers

BACKBONE_WEIGHTS = "backbone.weights.h5"
PRETRAIN_JSON = "pretrain.json"
PRETRAIN_MD = "pretrain.md"


def augment(images, seed, shift, flip):
    """Per-image random translation by up to `shift` pixels (reflect padding, then a crop)
    and, with `flip`, left-right mirroring of about half the images: [B, S, S, 3] ->
    [B, S, S, 3]. Stateless and seeded by `seed` [2] int32, so a resumed run augments
    exactly as an uninterrupted one."""
    size = tf.shape(images)[1]
    batch = tf.shape(images)[0]
    if shift:
        padded = tf.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]], "REFLECT")
        offsets = tf.random.stateless_uniform([batch, 2], seed, 0, 2 * shift + 1, tf.int32)
        grid = tf.range(size)[None, :]
        rows, cols = offsets[:, :1] + grid, offsets[:, 1:] + grid  # [B, S] each
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
    if flip:
        mirror = tf.random.stateless_uniform([batch], seed + [0, 1]) < 0.5
        images = tf.where(mirror[:, None, None, None], images[:, :, ::-1], images)
    return images


class ClassifierStage(loop.Stage):
    """Trains a BackboneClassifier with softmax cross-entropy on (image, label) batches."""

    name = "pretrain"
    metric_names = ("loss", "accuracy")

    def __init__(self, config, num_classes, image_size, global_batch_size, seed):
        if config.augment not in AUGMENTS:
            raise ValueError(f"--augment={config.augment}: choose one of {', '.join(AUGMENTS)}")
        self.config, self.num_classes, self.image_size = config, num_classes, image_size
        self.global_batch_size, self.seed = global_batch_size, seed

    def build(self):
        c = self.config
        self.model = BackboneClassifier(self.num_classes, c.backbone, self.image_size)
        self.optimizer = optimizers.make_optimizer(c.optimizer, c.learning_rate)
        self.optimizer.build(self.model.trainable_variables)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def replica_step(self, batch, step):
        images, labels = batch
        c = self.config
        if c.augment != "none":
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            seed = tf.stack([tf.cast(self.seed, tf.int32),
                             tf.cast(step, tf.int32) * 64 + tf.cast(replica, tf.int32)])
            images = augment(images, seed, c.shift, c.augment == "translate_flip")
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = self.average(losses.softmax_cross_entropy(logits, labels))
            objective = loss
            if c.weight_decay:
                objective += optimizers.coupled_l2(
                    variables, c.weight_decay,
                    tf.distribute.get_strategy().num_replicas_in_sync)
            scaled = self.optimizer.scale_loss(objective)  # float16: times the loss scale
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {"loss": loss, "accuracy": self.average(losses.top1_correct(logits, labels))}


def split_heldout(split, heldout, seed):
    """A pool Split -> (training Split, held-out Split of `heldout` items drawn with `seed`).
    Raises ValueError naming --heldout when the pool is too small to keep a training part."""
    if not 0 < heldout < split.size:
        raise ValueError(f"--heldout={heldout}: give 1 to {split.size - 1} (the pool has "
                         f"{split.size} items)")
    mask = np.zeros(split.size, bool)
    mask[np.random.default_rng(seed).choice(split.size, heldout, replace=False)] = True
    keep = tf.constant(mask)

    def part(held):
        def chosen(i, example):
            del example
            return tf.equal(tf.gather(keep, i), held)

        def drop_index(i, example):
            del i
            return example
        return split.dataset.enumerate().filter(chosen).map(drop_index)
    return (inputs.Split(part(False), split.size - heldout, split.num_classes),
            inputs.Split(part(True), heldout, split.num_classes))


def top1_accuracy(model, split):
    """Share of `split`'s items whose highest logit is one of their labels -> float."""
    correct = [losses.top1_correct(model(x, training=False), y).numpy()
               for x, y in inputs.eval_dataset(split)]
    return float(np.concatenate(correct).mean())


def pretrain_backbone(data_config, config, train_config, output_dir, strategy, record=None,
                      pool=None):
    """Trains (or resumes) the classifier on the pool `data_config.dataset`'s
    `config.pool_split` less `config.heldout` items, measures top-1 on those, and writes
    backbone.weights.h5, pretrain.json and pretrain.md into `output_dir` (chief) -> the
    pretrain.json dict. `record` (e.g. the command line's flags) is stored in it as is;
    `pool`: the pool's Split, when loaded already."""
    pool = pool or inputs.check_splits(data_config, {"--pool_split": config.pool_split})[
        "--pool_split"]
    train_split, heldout = split_heldout(pool, config.heldout, config.heldout_seed)
    stage = ClassifierStage(config, pool.num_classes, data_config.image_size,
                            train_config.global_batch_size, train_config.seed)
    make_dataset = lambda start: inputs.train_dataset(
        train_split, data_config, train_config.global_batch_size, train_config.seed, start)
    heldout_data = inputs.Split(heldout.dataset.cache(), heldout.size, heldout.num_classes)
    epoch_steps = max(1, round(train_split.size / train_config.global_batch_size))
    keras.utils.set_random_seed(train_config.seed)
    result = loop.run_stage(stage, make_dataset, strategy, loop.LoopConfig.for_stage(
        train_config, output_dir, train_config.steps_for(train_split.size), epoch_steps),
        evaluate=lambda step: {"heldout_top1": top1_accuracy(stage.model, heldout_data)})
    model = stage.model
    top1 = top1_accuracy(model, heldout_data)
    out = {"pool": data_config.dataset, "pool_split": config.pool_split,
           "heldout": config.heldout, "train_items": train_split.size,
           "num_classes": pool.num_classes, "backbone": config.backbone,
           "image_size": data_config.image_size, "epochs": train_config.epochs,
           "train_steps": result.step, "heldout_top1": top1,
           "final_loss": result.history["loss"][-1] if result.history["loss"] else None,
           "evaluations": result.evaluations, "seconds": result.seconds,
           "config": dataclasses.asdict(config), "data": dataclasses.asdict(data_config),
           "train": dataclasses.asdict(train_config), **(record or {})}
    if distribute.is_chief(strategy):
        weights = os.path.join(output_dir, BACKBONE_WEIGHTS)
        with io_utils.atomic_path(weights, ".weights.h5") as tmp:
            model.backbone.save_weights(tmp)
        out["weights_sha256"] = io_utils.file_sha256(weights)
        io_utils.write_json(os.path.join(output_dir, PRETRAIN_JSON), out)
        io_utils.write_text(os.path.join(output_dir, PRETRAIN_MD), io_utils.markdown_table(
            [{**out, "heldout_top1": round(top1, 4), "seconds": round(result.seconds, 1)}],
            ["pool", "pool_split", "train_items", "heldout", "backbone", "image_size",
             "epochs", "train_steps", "heldout_top1", "seconds"]))
    return out


def read_pretrained(directory, flag):
    """A pretrain output directory -> its pretrain.json dict, with "weights" the path of
    its backbone.weights.h5. Raises ValueError naming `flag` when it is not one."""
    path = os.path.join(directory, PRETRAIN_JSON)
    weights = os.path.join(directory, BACKBONE_WEIGHTS)
    if not os.path.isdir(directory):
        raise ValueError(f"{flag}={directory}: no such directory (give a "
                         "`python -m badhash_tf.pretrain` output directory)")
    for needed in (path, weights):
        if not os.path.isfile(needed):
            raise ValueError(f"{flag}={directory}: {os.path.basename(needed)} is missing (not "
                             "a finished `python -m badhash_tf.pretrain` output directory)")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{flag}={directory}: {path} does not read back ({e})") from None
    return {**record, "weights": weights}


def check_compatible(record, flag, backbone, image_size, dataset, query_split):
    """Raises ValueError naming `flag` when a pretrained backbone (read_pretrained) does not
    fit the run: another --backbone or --image_size, or pretrained on the attacked
    dataset's query split (the pool may overlap the database, never the queries)."""
    if record.get("backbone") != backbone or record.get("image_size") != image_size:
        raise ValueError(f"{flag}: pretrained as --backbone={record.get('backbone')} at "
                         f"--image_size={record.get('image_size')}; this run uses "
                         f"--backbone={backbone} at --image_size={image_size}")
    if record.get("pool") == dataset and record.get("pool_split", "").split("[")[0] in (
            query_split.split("[")[0], "query", "test"):
        raise ValueError(f"{flag}: pretrained on {dataset}'s {record['pool_split']} split, "
                         "which holds this run's queries (pretrain on the database split or "
                         "another dataset)")
