"""Model repair: the defender fine-tunes the victim on a small clean subset, optionally after
fine-pruning (Liu et al., 2018): the least active channels of the backbone's last
convolution on clean data are removed (their kernel, bias and following normalisation's
scale and offset held at zero through the fine-tuning by Keras variable constraints)."""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import io_utils, registry
from badhash_tf.data import inputs
from badhash_tf.training.victim import train_and_evaluate


def last_conv(backbone):
    """The backbone's last Conv2D -> (conv layer, the normalisation right after it or None,
    the layer whose output is the conv's activated output)."""
    layers = backbone.layers
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"backbone {backbone.name} has no Conv2D layer to prune")
    i = convs[-1]
    conv, after = layers[i], layers[i + 1:i + 3]
    norm = next((l for l in after[:1] if isinstance(
        l, (keras.layers.GroupNormalization, keras.layers.BatchNormalization))), None)
    activated = conv
    if keras.activations.serialize(conv.activation) in ("linear", None):
        activated = next((l for l in after if isinstance(
            l, (keras.layers.ReLU, keras.layers.Activation))), conv)
    return conv, norm, activated


def channel_activity(model, images, batch_size=256):
    """Mean activated output of each channel of the last conv over `images` [N, S, S, 3]
    (clean data) -> [C]."""
    _, _, activated = last_conv(model.backbone)
    probe = keras.Model(model.backbone.inputs[0], activated.output)
    out = probe.predict(images, batch_size=batch_size, verbose=0)
    return out.mean(axis=(0, 1, 2))


def prune_mask(activity, fraction):
    """1 for kept channels, 0 for the round(fraction x C) least active [C] float32."""
    mask = np.ones(len(activity), np.float32)
    mask[np.argsort(activity, kind="stable")[:round(fraction * len(activity))]] = 0.0
    return mask


def apply_prune(model, mask):
    """Zeroes the pruned channels of the last conv (kernel [..., C], bias, the following
    normalisation's gamma and beta) and keeps them at zero under any optimizer step."""
    conv, norm, _ = last_conv(model.backbone)
    variables = [conv.kernel] + ([conv.bias] if conv.use_bias else [])
    if norm is not None:
        variables += [v for v in (getattr(norm, "gamma", None), getattr(norm, "beta", None))
                      if v is not None]
    for variable in variables:
        keep = keras.ops.convert_to_tensor(mask, variable.dtype)
        variable.assign(variable * keep)
        variable.constraint = lambda value, keep=keep: value * keep


def pruned_channels(model):
    """Channels of the last conv whose kernel is all zero -> count."""
    kernel = keras.ops.convert_to_numpy(last_conv(model.backbone)[0].kernel)
    return int(np.sum(np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)))


def initializer(weights_path, mask=None):
    """-> initialize(model) for train_hashing_model: load the victim's full weights from
    `weights_path` (a .weights.h5 file), then prune with `mask` when given."""

    def initialize(model):
        model.load_weights(weights_path)
        if mask is not None:
            apply_prune(model, mask)

    return initialize


def _defense(name):
    """Fine-tunes the attacked victim on the defender's clean subset in `out` (after
    pruning the least active channels of its last conv for fine_pruning)."""
    def run(defender, out):
        v, c = defender.variant, defender.config
        weights = os.path.join(out, "initial.weights.h5")
        if not os.path.exists(weights):
            with io_utils.atomic_path(weights, ".weights.h5") as tmp:
                v.victim.save_weights(tmp)
        mask, extra = None, {}
        if name == "fine_pruning":
            mask = prune_mask(channel_activity(v.victim, defender.clean_subset[0]),
                              c.prune_fraction)
            extra = {"prune_fraction": c.prune_fraction, "channels": len(mask),
                     "pruned_channels": int((mask == 0).sum())}
        subset = inputs.Split(tf.data.Dataset.from_tensor_slices(defender.clean_subset),
                              len(defender.clean_subset[0]), defender.clean_subset[1].shape[1])
        train = dataclasses.replace(v.train, epochs=c.finetune_epochs, train_steps=0,
                                    global_batch_size=min(v.train.global_batch_size,
                                                          subset.size))
        model, metrics, codes = train_and_evaluate(
            v.data, v.hashing, train, defender.final_only(), out, defender.strategy,
            train_split=subset, initialize=initializer(weights, mask),
            splits=defender.eval_splits)
        if mask is not None:
            extra["pruned_after_finetune"] = pruned_channels(model)
        return {"t_map": defender.t_map(model, v.triggered[0], codes["database"]),
                "clean_map": metrics["map_at_k"], "clean_subset": subset.size,
                "finetune_epochs": c.finetune_epochs, **extra}
    return run


registry.register_defense(registry.DefenseSpec(
    "finetune", "fine-tuning the victim on a small clean subset", "repair",
    _defense("finetune"), fields=("clean_fraction", "finetune_epochs"), order=20))
registry.register_defense(registry.DefenseSpec(
    "fine_pruning", "pruning the last conv's least active channels, then fine-tuning "
    "(Liu et al., 2018)", "repair", _defense("fine_pruning"),
    fields=("clean_fraction", "finetune_epochs", "prune_fraction"), order=21))
