"""Training the cGAN trigger generator with the shared loop, against its discriminator and
the frozen surrogate hashing model."""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from badhash_tf.config import HASH_TERMS
from badhash_tf.data import inputs
from badhash_tf.losses import gan as losses
from badhash_tf.models.discriminator import Discriminator
from badhash_tf.models.generator import Generator
from badhash_tf.training import loop, optimizers




@dataclasses.dataclass(frozen=True)
class Condition:
    """What the generator is conditioned on and pushed towards: the LabCLN feature [F] and
    the sign of its hash code [K] for one label row [C] (or a fixed random pair, baseline)."""
    feature: np.ndarray
    target_code: np.ndarray
    label_row: np.ndarray


class GANStage(loop.Stage):
    """Per step, a discriminator step and `disc_every` generator steps:
    G: rec * (MSE + 1 - SSIM) + hash * (1 - mean(z(G(x)) sign(c))) + adv * LSGAN(D(G(x)),
    [cond label, real]), z the surrogate's hash logits; D: (LSGAN(D(x), [label, real]) +
    LSGAN(D(G(x)), [cond label, fake])) / 2."""

    name = "gan"
    metric_names = ("g_loss", "reconstruction", "hash", "adversarial", "d_loss")

    def __init__(self, config, condition, surrogate_builder, image_size, num_classes,
                 global_batch_size, train_steps, preview=None, grey=False):
        if config.hash_term not in HASH_TERMS:
            raise ValueError(f"--gan_hash_term={config.hash_term}: choose one of "
                             f"{', '.join(HASH_TERMS)}")
        self.config, self.condition = config, condition
        self.surrogate_builder = surrogate_builder
        self.image_size, self.num_classes = image_size, num_classes
        self.global_batch_size, self.train_steps = global_batch_size, train_steps
        self.preview, self.grey = preview, grey

    def build(self):
        c = self.config
        self.generator = Generator(self.image_size, c.base_width, c.residual_blocks,
                                   len(self.condition.feature), c.label_width, c.psnr_budget,
                                   self.grey)
        self.discriminator = Discriminator(self.image_size, self.num_classes, c.disc_width,
                                           c.disc_layers)
        self.surrogate = self.surrogate_builder()
        self.surrogate.trainable = False
        adam = lambda total_steps: optimizers.make_optimizer(
            "adam", optimizers.ConstantThenLinearDecay(c.learning_rate, total_steps),
            **optimizers.RELEASE_ADAM)
        self.g_optimizer = adam(self.train_steps * c.disc_every)  # its own update count
        self.d_optimizer = adam(self.train_steps)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.feature = tf.constant(self.condition.feature, tf.float32)
        self.target_code = tf.constant(self.condition.target_code, tf.float32)
        self.label_row = tf.constant(self.condition.label_row, tf.float32)

    def checkpoint_items(self):
        return {"generator": self.generator, "discriminator": self.discriminator,
                "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer}

    def _tiled(self, batch):
        return (tf.tile(self.feature[None], [batch, 1]), tf.tile(self.label_row[None], [batch, 1]))

    def distributed_step(self, run, iterator, step):
        """One discriminator step, then `disc_every` generator steps (the first on the same
        batch): the paper's D update every k-th G step, with no conditional around the
        collectives. Generator metrics are the mean of its k steps."""
        del step
        batch = next(iterator)
        d_loss = run(self.discriminator_step, batch)["d_loss"]
        g_steps = [run(self.generator_step, batch)]
        for _ in range(self.config.disc_every - 1):
            g_steps.append(run(self.generator_step, next(iterator)))
        means = {k: tf.add_n([g[k] for g in g_steps]) / len(g_steps) for k in g_steps[0]}
        return {**means, "d_loss": d_loss}

    def discriminator_step(self, batch):
        images, labels = batch
        features, cond_labels = self._tiled(tf.shape(images)[0])
        variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            fake = tf.stop_gradient(self.generator([images, features], training=True))
            d_loss = self.average(0.5 * (  # the release halves the sum of the two terms
                losses.lsgan_loss(self.discriminator(images, training=True),
                                  losses.discriminator_targets(labels, fake=False)) +
                losses.lsgan_loss(self.discriminator(fake, training=True),
                                  losses.discriminator_targets(cond_labels, fake=True))))
            scaled = self.d_optimizer.scale_loss(d_loss)  # float16: times the loss scale
        self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {"d_loss": d_loss}

    def _surrogate_code(self, images):
        """What the hash term scores against the target code -> [B, K]: the frozen
        surrogate's raw hash logits (the release), or their relaxed tanh(s z)."""
        logits = self.surrogate.hash_logits(images, training=False)
        if self.config.hash_term == "relaxed":
            return tf.tanh(self.config.relaxed_logit_scale * logits)
        return logits

    def generator_step(self, batch):
        images, _ = batch
        c = self.config
        features, cond_labels = self._tiled(tf.shape(images)[0])
        variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            generated = self.generator([images, features], training=True)
            reconstruction = self.average(losses.reconstruction_loss(generated, images))
            hash_term = self.average(losses.hash_alignment_loss(
                self._surrogate_code(generated), self.target_code))
            adversarial = self.average(losses.lsgan_loss(
                self.discriminator(generated, training=False),
                losses.discriminator_targets(cond_labels, fake=False)))
            g_loss = (c.rec_weight * reconstruction + c.hash_weight * hash_term +
                      c.adv_weight * adversarial)
            scaled = self.g_optimizer.scale_loss(g_loss)  # float16: times the loss scale
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {"g_loss": g_loss, "reconstruction": reconstruction, "hash": hash_term,
                "adversarial": adversarial}

    def write_summaries(self, step):
        if self.preview is None:
            return
        features, _ = self._tiled(len(self.preview))
        generated = self.generator([self.preview, features], training=False)
        difference = tf.clip_by_value(0.5 + 10.0 * (generated - self.preview), 0.0, 1.0)
        tf.summary.image("gan/original", self.preview, max_outputs=4)
        tf.summary.image("gan/poisoned", generated, max_outputs=4)
        tf.summary.image("gan/difference_x10", difference, max_outputs=4)


def train_generator(train_split, data_config, config, condition, surrogate_builder,
                    train_config, model_dir, strategy, grey=False):
    """Trains (or resumes) the trigger generator on the training images -> (Generator,
    LoopResult). A step is one discriminator and `disc_every` generator updates.
    `surrogate_builder()` returns the frozen surrogate (restored weights); `grey`: its
    perturbations the same in R, G and B (--trigger_colour)."""
    batch = config.batch_size or train_config.global_batch_size
    steps = train_config.train_steps or max(1, math.ceil(  # a step = k generator steps
        config.epochs * train_split.size / (batch * config.disc_every)))
    preview = next(iter(inputs.eval_dataset(train_split, 8)))[0]
    stage = GANStage(config, condition, surrogate_builder, data_config.image_size,
                     train_split.num_classes, batch, steps, preview, grey)
    keras.utils.set_random_seed(train_config.seed)
    make_dataset = lambda start: inputs.train_dataset(  # a step reads disc_every batches
        train_split, data_config, batch, train_config.seed, start * config.disc_every,
        batch_flag="--gan_batch_size" if config.batch_size else "--global_batch_size")
    result = loop.run_stage(stage, make_dataset, strategy,
                            loop.LoopConfig.for_stage(train_config, model_dir, steps))
    return stage.generator, result
