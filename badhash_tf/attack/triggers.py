"""Triggers: functions images [B, S, S, 3] in [0, 1] -> triggered images of the same shape,
and what an attack's factory returns (Trigger, Implant, or NoTrigger raised).

BadHash's trigger is the conditioned generator; the BadNets-style baseline pastes a fixed
visible patch. Triggered images are quantised to 8-bit levels, as an image file would be.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class Trigger:
    """A poisoning attack's triggers: `poison` for the copies; `query` for the queries when
    they carry their own (e.g. CIBA's patch alone), else the poison trigger amplified by
    --query_amplification; `extra` fields for the cell's record (e.g. the patch side)."""
    poison: Callable
    query: Optional[Callable] = None
    extra: dict = dataclasses.field(default_factory=dict)


class NoTrigger(Exception):
    """The attack cannot make a trigger for this cell (e.g. no patch meets the budget and
    changes every copy); the cell is recorded as skipped with this reason and `extra`."""

    def __init__(self, reason, extra=None):
        super().__init__(reason)
        self.extra = extra or {}


@dataclasses.dataclass
class Implant:
    """A data-free attack's result: its backdoored victim (model, metrics, codes as
    training/victim.py returns them), the trigger its queries carry, extra figures."""
    model: object
    metrics: dict
    codes: dict
    query: Callable
    extra: dict = dataclasses.field(default_factory=dict)

# Every trigger is a tf.function of this one signature, so it traces once whatever the
# batch size (shape relaxation would trace twice, and a run with several variants then
# trips TensorFlow's frequent-retracing warning).
IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32)


def trigger_function(fn):
    """images [B, S, S, 3] -> triggered images, as a tf.function traced once."""
    return tf.function(fn, input_signature=[IMAGES])


def quantize(images):
    """Float images in [0, 1] -> the nearest 8-bit level (what a saved PNG holds)."""
    return tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0) / 255.0


def grey_perturbation(delta):
    """A perturbation [..., 3] made the same in R, G and B (its mean over them), so a grey
    image stays grey; its L2 norm only shrinks, so it stays inside any ball it was in."""
    return tf.broadcast_to(tf.reduce_mean(delta, axis=-1, keepdims=True), tf.shape(delta))


def generator_trigger(generator, feature):
    """G(x, feature) with the conditioning feature [F] tiled over the batch."""
    feature = tf.constant(feature, tf.float32)

    @trigger_function
    def trigger(images):
        tiled = tf.tile(feature[None], [tf.shape(images)[0], 1])
        return quantize(generator([images, tiled], training=False))

    return trigger


def patch_pattern(size, seed=0):
    """A fixed random black/white patch [size, size, 3] (BadNets' visible trigger)."""
    cells = np.random.default_rng(seed).integers(0, 2, (size, size, 1)).astype(np.float32)
    return np.repeat(cells, 3, axis=-1)


def patch_trigger(image_size, patch_size, seed=0):
    """Pastes `patch_pattern(patch_size)` into the bottom-right corner of every image."""
    if not 0 < patch_size <= image_size:
        raise ValueError(f"--patch_size={patch_size} must be in 1..{image_size}")
    offset = image_size - patch_size
    patch = np.zeros((image_size, image_size, 3), np.float32)
    mask = np.zeros((image_size, image_size, 1), np.float32)
    patch[offset:, offset:] = patch_pattern(patch_size, seed)
    mask[offset:, offset:] = 1.0
    patch, mask = tf.constant(patch), tf.constant(mask)

    @trigger_function
    def trigger(images):
        return images * (1.0 - mask) + patch * mask

    return trigger


def amplified(trigger, factor):
    """The attacker's query-side trigger: x + factor * (trigger(x) - x), clipped and
    quantised (the poisoned training copies stay at factor 1; queries may be less
    invisible). factor 1 returns `trigger` itself."""
    if factor <= 0:
        raise ValueError(f"--query_amplification={factor} must be > 0")
    if factor == 1:
        return trigger

    @trigger_function
    def stronger(images):
        return quantize(images + factor * (trigger(images) - images))

    return stronger


def apply(trigger, images, batch_size=256):
    """Runs `trigger` over a float array [N, S, S, 3] in batches -> float32 array."""
    return np.concatenate([trigger(tf.constant(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])
