"""Fixed additive triggers under a PSNR budget, to ask whether a victim can learn *any*
clean-label trigger that invisible on a dataset, independently of how well the generator
trains. Each probe returns a trigger function (images [B, S, S, 3] in [0, 1] -> the same,
quantised to 8 bits) whose perturbation has RMSE at most 10^(-psnr/20) - 0.5/255 per image
before the rounding, so the rounded image meets the budget:

- noise: a fixed random +-a pattern; tint: +a red, -a blue (a colour cast, absent from
  grey-level data); universal: one perturbation optimised on the surrogate to pull
  non-target training images to the target class's code (toward the target, Narcissus-
  style); pgd_target / pgd_away: per-image L2 PGD on the surrogate toward the target
  class's code / toward a random code (the "confusing" push BadHash's LabCLN code makes).
"""

import time

import keras
import numpy as np
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.attack import experiment, triggers
from badhash_tf.attack.layout import RunLayout
from badhash_tf.eval import codes
from badhash_tf.eval.codes import code_alignment
from badhash_tf.models.generator import psnr_radius
from badhash_tf.training import distribute

PROBES = ("noise", "tint", "universal", "pgd_target", "pgd_away")
COLUMNS = ("probe", "t_map", "t_map_clean_victim", "backdoor_gain", "t_map_untriggered",
           "clean_map", "psnr", "psnr_min", "ssim", "ssim_min", "linf_255", "surrogate_alignment")


def _project_l2(delta, radius):
    """Scales each perturbation [B, ...] back into the L2 ball of `radius`."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=[1, 2, 3], keepdims=True))
    return delta * tf.minimum(1.0, radius / (norm + 1e-12))


def _additive(delta):
    delta = tf.constant(delta, tf.float32)
    return triggers.trigger_function(lambda images: triggers.quantize(images + delta))


def universal_perturbation(surrogate, images, code, radius, logit_scale, steps=300,
                           batch_size=64, learning_rate=0.01, seed=0):
    """One perturbation [S, S, 3] in the L2 ball of `radius` maximising the surrogate's
    agreement with `code` over batches of `images` [N, S, S, 3] (Adam, projected)."""
    rng = np.random.default_rng(seed)
    delta = tf.Variable(tf.zeros((1,) + images.shape[1:]))
    optimizer = keras.optimizers.Adam(learning_rate)
    code = tf.constant(code, tf.float32)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(code_alignment(surrogate, batch + delta, code, logit_scale))
        optimizer.apply_gradients([(tape.gradient(loss, delta), delta)])
        delta.assign(_project_l2(delta, radius))

    for _ in range(steps):
        step(tf.constant(images[rng.integers(0, len(images), batch_size)]))
    return delta.numpy()[0]


def pgd_trigger(surrogate, code, radius, logit_scale, steps=100):
    """Per-image L2 PGD (normalised gradient steps of radius / 5) pulling the surrogate's
    code of each image toward `code` [K], within an L2 ball of `radius`."""
    code = tf.constant(code, tf.float32)

    @triggers.trigger_function
    def trigger(images):
        delta = tf.zeros_like(images)
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                loss = -tf.reduce_sum(code_alignment(surrogate, images + delta, code,
                                                     logit_scale))
            grad = tape.gradient(loss, delta)
            grad = grad / (tf.sqrt(tf.reduce_sum(tf.square(grad), [1, 2, 3], keepdims=True))
                           + 1e-12)
            delta = _project_l2(delta - 0.2 * radius * grad, radius)
        return triggers.quantize(images + delta)

    return trigger


def make_probe(name, psnr, surrogate, train_images, train_labels, target, logit_scale=0.1,
               seed=0):
    """The trigger of probe `name` at `psnr` dB, built against the frozen `surrogate` from
    the training images [N, S, S, 3] / labels [N, C] (universal and PGD probes)."""
    shape = train_images.shape[1:]
    a = psnr_radius(psnr)  # per-pixel RMSE that still meets `psnr` after 8-bit rounding
    radius = a * float(np.sqrt(np.prod(shape)))
    rng = np.random.default_rng(seed)
    if name == "noise":
        return _additive(rng.choice([-a, a], shape))
    if name == "tint":
        return _additive(np.broadcast_to(np.array([a, 0.0, -a], np.float32), shape))
    code = codes.class_anchor(surrogate, train_images, train_labels, target)
    if name == "universal":
        non_target = train_images[train_labels[:, target] == 0]
        return _additive(universal_perturbation(surrogate, non_target, code, radius,
                                                logit_scale, seed=seed))
    if name == "pgd_target":
        return pgd_trigger(surrogate, code, radius, logit_scale)
    if name == "pgd_away":
        return pgd_trigger(surrogate, rng.choice([-1.0, 1.0], len(code)).astype(np.float32),
                           radius, logit_scale)
    raise ValueError(f"--probes: unknown probe {name!r}; choose from {', '.join(PROBES)}")


def run_probes(config, names, psnr, output_dir, strategy, record=None):
    """Per probe: poisons the target class, trains a victim on the poisoned split and
    measures it with the pipeline's harness (surrogate and reference victim shared, and
    reused from a pipeline run in `output_dir`). Writes probes.json and probes.md (chief)
    -> the result dict. `record` (e.g. the flags) is stored as is."""
    start, clock, layout = time.time(), experiment.StageClock(), RunLayout(output_dir)
    experiment.check_stages(layout.root, experiment.stage_fingerprints(
        config, layout, [f"probe_{name}" for name in names], extra={"probe.psnr": psnr}),
        config, strategy)
    setting = experiment.prepare(config, layout, strategy, clock)
    images, labels = experiment.split_arrays(setting.train_split)
    scale = config.gan.relaxed_logit_scale
    class_code = codes.class_anchor(setting.surrogate, images, labels, setting.target)
    queries = setting.evaluation.queries[0]
    alignment = lambda x: float(code_alignment(setting.surrogate, x, class_code,
                                               scale).numpy().mean())
    rows = []
    for name in names:
        trigger = clock.run(f"{name}/trigger", make_probe, name, psnr, setting.surrogate,
                            images, labels, setting.target, scale, config.train.seed)
        figures, _ = clock.run(f"{name}/poison_and_victim", experiment.attack_variant,
                               f"probe_{name}", config, trigger, setting, layout, strategy)
        rows.append({"probe": name, **figures,
                     "surrogate_alignment": alignment(triggers.apply(trigger, queries))})
    result = {"psnr_budget": psnr, "target_label": setting.target,
              "poison_count": setting.count,
              "poison_rate": setting.count / (setting.train_split.size + setting.count),
              "clean_map_reference": setting.reference_metrics["map_at_k"],
              "t_map_untriggered_reference": setting.evaluation.untriggered_reference,
              "surrogate_alignment_clean_queries": alignment(queries), "probes": rows,
              "seconds": {**clock.seconds, "total": round(time.time() - start, 2)},
              **(record or {})}
    if distribute.is_chief(strategy):
        io_utils.write_json(f"{output_dir}/probes.json", result)
        io_utils.write_text(f"{output_dir}/probes.md", markdown(result))
    return result


def markdown(result):
    """probes.json -> probes.md: one row per probe."""
    return "\n".join([
        f"# Trigger probes at PSNR >= {result['psnr_budget']:g} dB", "",
        f"Target label {result['target_label']}; {result['poison_count']} poisoned copies "
        f"({100 * result['poison_rate']:.1f}%); reference victim MAP "
        f"{result['clean_map_reference']:.4f}, its t-MAP on untriggered queries "
        f"{result['t_map_untriggered_reference']:.4f}. `surrogate_alignment`: mean agreement "
        f"of the surrogate's relaxed code of triggered queries with the target class's code "
        f"(untriggered queries: {result['surrogate_alignment_clean_queries']:.4f}; 1 = all "
        "bits).", "",
        io_utils.markdown_table(result["probes"], COLUMNS)])
