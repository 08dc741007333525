"""DarkHash (Zhou et al., arXiv 2510.08094, 2025): a data-free backdoor on a trained hashing
model. The attacker holds the trained clean victim and a surrogate dataset of another
domain, not the training data; it freezes the victim's shallow layers and fine-tunes the
rest on the surrogate with three terms, then republishes the model:

- benign (J_ben): the fine-tuned model's relaxed codes of clean surrogate images stay the
  original model's binary codes, so benign retrieval is kept;
- backdoor (J_bac): triggered surrogate images hash to the shadow target code;
- topological alignment (J_tpa): for each triggered image, the mean relaxed code of its
  k nearest triggered neighbours (Hamming distance in the batch) is pulled to the shadow
  target too, so a poisoned sample's neighbourhood moves with it.

The shadow target: the attacker holds no training image, only a few public images of the
target class (`shadow_images` of the query split's target-class items, which the victim
never trained on and t-MAP never queries); the shadow target code is the sign of the
clean victim's mean code of them. The trigger: a small patch in the bottom-right corner,
optimised on the clean victim toward that code over surrogate images (CIBA's optimiser)
before the fine-tuning. Our choices where the paper leaves them open: BUILD_NOTES.md.
"""

import dataclasses
import functools
import os

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import registry
from badhash_tf.attack import ciba, triggers
from badhash_tf.config import DarkHashConfig
from badhash_tf.data import inputs
from badhash_tf.eval import codes
from badhash_tf.io_utils import save_npz
from badhash_tf.models.hashing import HashingModel, make_backbone
from badhash_tf.training import distribute, loop, optimizers
from badhash_tf.training.victim import train_and_evaluate

# the surrogate dataset by default: another domain of the same image shape
OTHER_DOMAIN = {"badhash_digits": "badhash_fashion_mnist",
                "badhash_digit_mosaics": "badhash_fashion_mnist",
                "badhash_fashion_mnist": "badhash_digits"}


def weighted_layers(backbone):
    """The backbone's layers that hold weights, input to output (what --darkhash_frozen_layers
    counts)."""
    return [layer for layer in backbone.layers if layer.weights]


@functools.lru_cache(maxsize=None)
def _weighted_count(backbone, image_size):
    """len(weighted_layers) of a fresh `backbone` (built once per name and size: seconds
    for ResNet50)."""
    return len(weighted_layers(make_backbone(backbone, image_size)))


def frozen_count(config, backbone, image_size):
    """How many weighted layers of the `backbone` stay frozen. Raises ValueError naming
    --darkhash_frozen_layers when it has not that many."""
    total = _weighted_count(backbone, image_size)
    count = total // 2 if config.frozen_layers < 0 else config.frozen_layers
    if count > total:
        raise ValueError(f"--darkhash_frozen_layers={config.frozen_layers}: the {backbone}"
                         f" backbone has {total} layers with weights (the hash layer is "
                         "always fine-tuned); give at most that")
    return count


def surrogate_data(config, data):
    """The surrogate dataset's DataConfig (the attacked `data`'s settings, another dataset).
    Raises ValueError naming --darkhash_surrogate when it is the attacked dataset, or when
    its images have another native size or channel count than the attacked dataset's."""
    name = config.surrogate or OTHER_DOMAIN.get(data.dataset)
    if not name:
        raise ValueError(f"--darkhash_surrogate: name the attacker's surrogate dataset for "
                         f"--dataset={data.dataset} (DarkHash holds no training data)")
    if name == data.dataset:
        raise ValueError(f"--darkhash_surrogate={name} is the attacked dataset: DarkHash's "
                         "attacker holds no data of it")
    surrogate = dataclasses.replace(data, dataset=name)
    mine, theirs = inputs.native_image_shape(data), inputs.native_image_shape(surrogate)
    if mine and theirs and mine != theirs:
        raise ValueError(f"--darkhash_surrogate={name}: its images are "
                         f"{'x'.join(map(str, theirs))}, those of --dataset={data.dataset} "
                         f"{'x'.join(map(str, mine))}; DarkHash fine-tunes the victim on "
                         "images of its own input's size and channels")
    return surrogate


def check_config(config, data, hashing):
    """Everything DarkHash would fail on later, before any work -> the surrogate's
    DataConfig. Raises ValueError naming the flag."""
    frozen_count(config, hashing.backbone, data.image_size)
    if not 0 <= config.patch_size <= data.image_size:
        raise ValueError(f"--darkhash_patch_size={config.patch_size} must be in "
                         f"0..{data.image_size} (0 = image_size // 8)")
    return surrogate_data(config, data)


def shadow_code(victim, query_images, query_labels, target, count):
    """The shadow target code [K]: the sign of the clean victim's mean code of the first
    `count` target-class queries (the attacker's few public images of the target)."""
    mine = np.flatnonzero(query_labels[:, target] > 0)[:count]
    if not len(mine):
        raise ValueError(f"the query split has no image of the target label {target} for "
                         "DarkHash's shadow target")
    return codes.class_anchor(victim, query_images[mine], query_labels[mine], target)


def neighbour_mean(u, k):
    """u [B, K] relaxed codes -> [B, K]: for each row, the mean of its k nearest other rows
    by Hamming distance of sign(u) (the choice carries no gradient, the mean does)."""
    b = tf.stop_gradient(tf.sign(u))
    distance = -tf.matmul(b, b, transpose_b=True)  # Hamming distance up to an affine map
    n = tf.shape(u)[0]
    distance += tf.eye(n) * 1e9  # not oneself
    k = tf.minimum(k, n - 1)
    _, nearest = tf.math.top_k(-distance, k)
    return tf.reduce_mean(tf.gather(u, nearest), axis=1)


def darkhash_losses(model, teacher, images, patch, target, neighbours):
    """Per-example terms [B] each: J_ben (clean codes kept as the teacher's binary codes),
    J_bac (patched images to `target` [K]), J_tpa (their neighbourhoods to `target`); each
    the mean squared difference over bits."""
    kept = tf.sign(teacher(images, training=False))
    u_clean = model(images, training=True)
    u_poison = model(ciba.paste(images, patch), training=True)
    square = lambda a, b: tf.reduce_mean(tf.square(a - b), axis=-1)
    return (square(u_clean, kept), square(u_poison, target),
            square(neighbour_mean(u_poison, neighbours), target))


class DarkHashStage(loop.Stage):
    """Fine-tunes a copy of the clean victim (its weighted backbone layers after the first
    `frozen` and the hash layer) with J_ben + w_bac J_bac + w_tpa J_tpa."""

    name = "darkhash"
    metric_names = ("loss", "benign", "backdoor", "alignment")

    def __init__(self, config, hashing, image_size, victim, patch, target, frozen):
        self.config, self.hashing, self.image_size = config, hashing, image_size
        self.victim, self.frozen = victim, frozen
        self.patch, self.target = tf.constant(patch), tf.constant(target, tf.float32)
        self.global_batch_size = config.batch_size

    def build(self):
        h = self.hashing
        self.model = HashingModel(h.bits, h.backbone, self.image_size)
        self.model.set_weights(self.victim.get_weights())
        for layer in weighted_layers(self.model.backbone)[:self.frozen]:
            layer.trainable = False
        self.optimizer = optimizers.make_optimizer("adam", self.config.learning_rate)
        self.optimizer.build(self.model.trainable_variables)

    def checkpoint_items(self):
        return {"model": self.model, "optimizer": self.optimizer}

    def replica_step(self, batch, step):
        images, _ = batch
        c, variables = self.config, self.model.trainable_variables
        with tf.GradientTape() as tape:
            benign, backdoor, alignment = darkhash_losses(
                self.model, self.victim, images, self.patch, self.target, c.neighbours)
            parts = {"benign": self.average(benign), "backdoor": self.average(backdoor),
                     "alignment": self.average(alignment)}
            loss = (parts["benign"] + c.backdoor_weight * parts["backdoor"]
                    + c.alignment_weight * parts["alignment"])
            scaled = self.optimizer.scale_loss(loss)  # float16: times the loss scale
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return {"loss": loss, **parts}


def optimise_trigger(config, victim, surrogate_images, target_code, image_size, seed=0,
                     grey=False):
    """DarkHash's trigger: the patch [s, s, 3] (8-bit levels; `grey`: R = G = B) optimised
    on the clean `victim` to send surrogate images [N, S, S, 3] to `target_code` [K]."""
    side = config.patch_size or max(1, image_size // 8)
    return ciba.optimise_patch(victim, surrogate_images, target_code, side,
                               config.patch_steps, config.patch_learning_rate,
                               config.logit_scale, seed, grey=grey)


def patch_trigger(patch):
    """The trigger function pasting `patch` [s, s, 3] into the bottom-right corner."""
    constant = tf.constant(patch)
    return triggers.trigger_function(lambda images: ciba.paste(images, constant))


def fine_tune(config, hashing, image_size, victim, patch, target_code, surrogate_split,
              surrogate_data_config, model_dir, strategy, train, evaluate=None,
              evaluate_every_epochs=0):
    """Implants the backdoor into a copy of `victim` by fine-tuning on the surrogate split
    in `model_dir` (resumable; `config.steps` steps, or --train_steps > 0; the loop cut and
    seeded as the training flags `train` say) -> (backdoored HashingModel,
    loop.LoopResult). `evaluate(model)` -> {figure: float} runs every
    `evaluate_every_epochs` surrogate epochs when given."""
    frozen = frozen_count(config, hashing.backbone, image_size)
    stage = DarkHashStage(config, hashing, image_size, victim, patch, target_code, frozen)
    make_dataset = lambda start: inputs.train_dataset(
        surrogate_split, surrogate_data_config, config.batch_size, train.seed, start,
        batch_flag="--darkhash_batch_size")
    steps = train.train_steps or config.steps
    every = (max(1, round(evaluate_every_epochs * surrogate_split.size / config.batch_size))
             if evaluate and evaluate_every_epochs > 0 else 0)
    keras.utils.set_random_seed(train.seed)
    result = loop.run_stage(stage, make_dataset, strategy,
                            loop.LoopConfig.for_stage(train, model_dir, steps, every),
                            evaluate=lambda step: evaluate(stage.model))
    return stage.model, result


SECTION = registry.register_section(registry.Section(
    "darkhash", DarkHashConfig, "darkhash_", "DarkHash (--baselines=darkhash)"))


def _config(config):
    return config.sections.get("darkhash") or DarkHashConfig()


def _reads(config):
    """The surrogate dataset's split DarkHash fine-tunes on (its identity is fingerprinted)."""
    own = _config(config)
    return {"darkhash_surrogate": (surrogate_data(own, config.data), own.surrogate_split,
                                   "--darkhash_surrogate_split")}


def implant(ctx):
    """DarkHash on the seed's clean reference victim: the shadow code of a few target-class
    queries, the patch optimised on the clean victim (kept in <cell>/trigger_patch.npz),
    the victim fine-tuned on the surrogate data in <cell>/victim -> triggers.Implant."""
    own, c, evaluation = ctx.section("darkhash"), ctx.config, ctx.setting.evaluation
    data = surrogate_data(own, c.data)
    split, _ = ctx.data.other(data, own.surrogate_split, "--darkhash_surrogate_split")
    victim = ctx.setting.reference
    target_code = shadow_code(victim, *ctx.data.arrays("--query_split"), ctx.target,
                              own.shadow_images)
    patch_file = ctx.path("trigger_patch.npz")
    if os.path.exists(patch_file):  # made by an earlier run of this cell
        with np.load(patch_file) as saved:
            patch = saved["patch"]
    else:
        patch = optimise_trigger(own, victim, inputs.split_arrays(split)[0], target_code,
                                 c.data.image_size, c.train.seed, c.attack.grey_triggers)
        if distribute.is_chief(ctx.strategy):
            save_npz(patch_file, patch=patch, target_code=target_code)
    query = patch_trigger(patch)
    triggered = triggers.apply(query, evaluation.queries[0])
    trainer = lambda evaluate, every: fine_tune(
        own, c.hashing, c.data.image_size, victim, patch, target_code, split, data,
        ctx.path("victim"), ctx.strategy, c.train, evaluate, every)
    model, metrics, codes_ = train_and_evaluate(
        c.data, c.hashing, c.train, c.retrieval, ctx.path("victim"), ctx.strategy,
        train_split=split, trainer=trainer, splits=ctx.data.splits,
        backdoor=lambda model, database: {"t_map": evaluation.t_map_of(model, triggered,
                                                                       database)})
    return triggers.Implant(model, metrics, codes_, query, {
        "surrogate_dataset": data.dataset,
        "frozen_layers": frozen_count(own, c.hashing.backbone, c.data.image_size)})


registry.register_attack(registry.AttackSpec(
    "darkhash", "DarkHash (Zhou et al., 2025): a data-free backdoor fine-tuned into the "
    "trained clean victim", implant=implant,
    check=lambda c: check_config(_config(c), c.data, c.hashing), reads=_reads,
    sections=("darkhash",), amplified=False, roles=frozenset({"baseline", "bench"}),
    order=32))
