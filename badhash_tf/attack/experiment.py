"""The BadHash experiment end to end, and its baselines in the same harness.

Stages (each resumes from its checkpoint, so a rerun skips finished work): the attacker's
surrogate victim; LabCLN; per variant (BadHash and each baseline) the trigger, the
poisoned set, the backdoored victim; the reference victim on the clean set; evaluation.
"""

import dataclasses
import os
import time

import numpy as np
from absl import logging

from badhash_tf import choices, fingerprints, io_utils
from badhash_tf.attack import budgeted, ciba, darkhash, poison, report, triggers
from badhash_tf.attack.ciba import CIBAConfig
from badhash_tf.attack.darkhash import DarkHashConfig
from badhash_tf.attack.layout import BASELINE_VARIANT, RunLayout
from badhash_tf.attack.victim import RetrievalConfig, train_and_evaluate
from badhash_tf.data import inputs
from badhash_tf.eval import codes, stealth
from badhash_tf.eval.backdoor import BackdoorEvaluation
from badhash_tf.training import distribute
from badhash_tf.training.gan import TARGET_CODES, Condition, GANConfig, train_generator
from badhash_tf.training.hashing import HashingConfig, train_hashing_model
from badhash_tf.training.labcln import LabCLNConfig, train_labcln
from badhash_tf.training.loop import TrainConfig

# the paper's baselines; BadHash toward the surrogate's class anchor; CIBA (BMVC 2023) and
# its ablations; the clean-label triggers SIG and Narcissus; the data-free DarkHash (2025)
BASELINES = ("patch", "no_labcln", "no_hash_loss", "badhash_anchor") + ciba.VARIANTS + (
    "sig", "narcissus", "darkhash")
BUDGETED = ("sig", "narcissus")  # fixed triggers under the run's PSNR budget (budgeted.py)
VARIANT_JSON = "variant.json"  # a finished variant: its config, target and figures
TRIGGERED_QUERIES = "triggered_queries.npz"  # its triggered queries, for defenses


def check_baselines(names):
    """Raises ValueError naming --baselines when a name is not a baseline (checked before
    any training)."""
    choices.check_choices("--baselines", names, BASELINES, allow_empty=True)


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """What the attacker does. target_label < 0: drawn from the seed. poison_count 0 and
    poison_rate 0: every target-class training image gets a poisoned copy."""
    target_label: int = -1
    poison_count: int = 0
    poison_rate: float = 0.0
    surrogate_seed_offset: int = 1000
    patch_size: int = 0  # BadNets baseline patch side; 0 = image_size // 8
    baselines: tuple = BASELINES
    samples: int = 8
    query_amplification: float = 1.0  # queries get k x the trigger's perturbation
    # also score the triggered queries at these amplifications (figures *_xK; report only)
    extra_query_amplifications: tuple = ()
    # the surrogate's starting backbone when it differs from the victims' ("" = the same)
    surrogate_backbone_weights: str = ""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one run of the pipeline."""
    data: inputs.DataConfig
    hashing: HashingConfig
    train: TrainConfig
    retrieval: RetrievalConfig
    labcln: LabCLNConfig
    gan: GANConfig
    attack: AttackConfig
    ciba: CIBAConfig = CIBAConfig()
    darkhash: DarkHashConfig = DarkHashConfig()

    @property
    def surrogate_hashing(self):
        """The attacker's surrogate: the victims' hashing config, from its own backbone."""
        weights = self.attack.surrogate_backbone_weights
        return dataclasses.replace(self.hashing, backbone_weights=weights) if weights else \
            self.hashing


def choose_target(config, num_classes, seed):
    """The target label: the configured one, or one drawn from the seed."""
    if config.target_label >= num_classes:
        raise ValueError(f"--target_label={config.target_label}: the dataset has "
                         f"{num_classes} classes (0..{num_classes - 1})")
    if config.target_label >= 0:
        return config.target_label
    return int(np.random.default_rng(seed).integers(num_classes))


def split_arrays(split):
    """A split -> (images [N, S, S, 3] float32, labels [N, C] float32)."""
    images, labels = [], []
    for x, y in inputs.eval_dataset(split):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


class StageClock:
    """Wall seconds per stage, for report.json."""

    def __init__(self):
        self.seconds = {}

    def run(self, name, fn, *args, **kwargs):
        tick = time.time()
        logging.info("stage %s ...", name)
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.time() - tick, 2)
        logging.info("stage %s done in %.1f s", name, self.seconds[name])
        return out


@dataclasses.dataclass
class Setting:
    """What every variant of a run shares: the training split, the target label, the
    number of poisoned copies and the target-class images they come from (images, labels,
    positions in the split), the attacker's surrogate, the reference victim's metrics and
    the evaluation harness; the CIBA patch once a CIBA variant has made it."""
    train_split: inputs.Split
    target: int
    count: int
    target_images: tuple
    surrogate: object
    reference_metrics: dict
    evaluation: BackdoorEvaluation
    ciba_patch: tuple = None  # (patch, anchor) shared by the CIBA variants, made once


def prepare(config, layout, strategy, clock):
    """The stages every variant builds on, in the run directory `layout`: the surrogate and
    the reference victim (trained or restored) and the non-target queries -> Setting."""
    c = config
    check_baselines(c.attack.baselines)
    splits = load_splits(c)
    target, available, count = check_sizes(c, splits)
    train_split, query_split = splits["--train_split"], splits["--query_split"]
    logging.info("target label %d: %d poisoned copies of %d target-class training images",
                 target, count, available)
    surrogate_train = dataclasses.replace(
        c.train, seed=c.train.seed + c.attack.surrogate_seed_offset)
    surrogate, _ = clock.run("surrogate", train_hashing_model, train_split, c.data,
                             c.surrogate_hashing, surrogate_train, layout.surrogate, strategy)
    reference, reference_metrics, reference_codes = clock.run(
        "reference_victim", train_and_evaluate, c.data, c.hashing, c.train, c.retrieval,
        layout.reference_victim, strategy)
    query_images, query_labels = split_arrays(query_split)
    non_target = query_labels[:, target] == 0
    k = min(c.retrieval.map_top_k, len(reference_codes["database"][0]))
    evaluation = BackdoorEvaluation(target, k, (query_images[non_target],
                                                query_labels[non_target]),
                                    reference, reference_codes)
    return Setting(train_split, target, count,
                   poison.target_class_images(train_split, target, count), surrogate,
                   reference_metrics, evaluation)


def target_condition(config, setting, layout, strategy, clock):
    """Trains (or restores) LabCLN on the training labels in `layout.labcln` -> the
    generator's Condition for the setting's target label."""
    c, split = config, setting.train_split
    label_rows = np.concatenate([y.numpy() for _, y in inputs.eval_dataset(split)])
    labcln, _ = clock.run("labcln", train_labcln, label_rows, c.hashing.bits, c.labcln,
                          c.train, layout.labcln, strategy)
    target_row = np.eye(split.num_classes, dtype=np.float32)[setting.target]
    feature, code = labcln.condition(target_row)
    if c.gan.target_code not in TARGET_CODES:
        raise ValueError(f"--gan_target_code={c.gan.target_code}: choose one of "
                         f"{', '.join(TARGET_CODES)}")
    if c.gan.target_code == "class_anchor":
        code = codes.class_anchor(setting.surrogate, *split_arrays(split), setting.target)
    return Condition(feature, code, target_row)


# variants with a trained generator
GENERATED = ("badhash", "badhash_anchor", "no_labcln", "no_hash_loss")


def stage_fingerprints(config, layout, variants, shared=True, extra=None):
    """{stage directory: fingerprint} of a run's stages in `layout` (fingerprints.py): the
    shared surrogate, reference victim and LabCLN (when `shared`), and one per variant
    (its generator, poisoned set and victim depend on the same flags, and on `extra`
    {"section.field": value}, e.g. a probe's PSNR)."""
    c = config
    flat = fingerprints.flatten(data=c.data, hashing=c.hashing, train=c.train,
                                retrieval=c.retrieval, labcln=c.labcln, gan=c.gan,
                                attack=c.attack, ciba=c.ciba, darkhash=c.darkhash)
    victim = fingerprints.select(flat, "data.", "hashing.", "train.", "retrieval.")
    own = lambda name: (("labcln.", "gan.") if name in GENERATED else
                        ("ciba.",) if name in ciba.VARIANTS else
                        ("darkhash.",) if name == "darkhash" else
                        ("gan.psnr_budget", "gan.relaxed_logit_scale") if name in BUDGETED
                        else ())
    stages = {layout.variant(name): fingerprints.select(
        flat, "data.", "hashing.", "train.", "retrieval.", "attack.", *own(name))
        | (extra or {}) for name in variants}
    if shared:
        surrogate = fingerprints.flatten(hashing=c.surrogate_hashing)
        stages[layout.surrogate] = fingerprints.select(
            flat, "data.", "train.", "retrieval.train_split",
            "attack.surrogate_seed_offset") | surrogate
        stages[layout.reference_victim] = victim
        stages[layout.labcln] = fingerprints.select(
            flat, "data.", "train.", "retrieval.train_split", "hashing.bits", "labcln.")
    return stages


def check_stages(root, stages, config, strategy):
    """fingerprints.check_and_record for this run, before any work (every worker checks;
    the chief moves stages aside and records; the others wait for it)."""
    c = config
    fingerprints.check_and_record(root, stages, c.train.overwrite, distribute.is_chief(strategy),
                                  fingerprints.defaults(
                                      data=c.data, hashing=c.hashing, train=c.train,
                                      retrieval=c.retrieval, labcln=c.labcln, gan=c.gan,
                                      attack=c.attack, ciba=c.ciba, darkhash=c.darkhash))
    distribute.barrier(strategy)


def load_splits(config):
    """Every split the run reads, loaded and checked (inputs.check_splits) -> {flag: Split}.
    Raises ValueError / FileNotFoundError naming the flag, file and line."""
    r = config.retrieval
    return inputs.check_splits(config.data, {"--train_split": r.train_split,
                                             "--query_split": r.query_split,
                                             "--database_split": r.database_split})


def check_data(config):
    """Every split the run reads (load_splits) and every size that depends on their lengths
    (check_sizes), before any work -> {flag: Split}. Raises ValueError / FileNotFoundError
    naming the flag, file and line."""
    splits = load_splits(config)
    check_sizes(config, splits)
    return splits


def check_sizes(config, splits):
    """The sizes that depend on the splits' lengths, checked before the first stage (else
    they fail after hours of earlier stages): the victims' and the GAN's batches against
    the training items, the target label and the poisoned copies against its training
    images, and that some query is not of the target class -> (target label, its training
    images, poisoned copies). Raises ValueError naming the flag."""
    c, train = config, splits["--train_split"]
    where = f"the {train.size} items of --train_split={c.retrieval.train_split}"
    batches = {"--global_batch_size": c.train.global_batch_size}
    if c.gan.batch_size:
        batches["--gan_batch_size"] = c.gan.batch_size
    for flag, batch in batches.items():
        if batch > train.size:
            raise ValueError(f"{flag}={batch} exceeds {where}")
    target = choose_target(c.attack, train.num_classes, c.train.seed)
    available = poison.count_with_label(train, target)
    count = poison.poison_count_for(train.size, available, c.attack.poison_count,
                                    c.attack.poison_rate)
    query = splits["--query_split"]
    if poison.count_with_label(query, target) == query.size:
        raise ValueError(f"--query_split={c.retrieval.query_split}: every query carries the "
                         f"target label {target}, so none can be triggered toward it")
    return target, available, count


def check_run(config, output_dir, strategy):
    """The pipeline's checks before any work: its baselines, every split it reads, and that
    no stage in `output_dir` was made with other flags (see check_stages)."""
    check_baselines(config.attack.baselines)
    check_data(config)
    if "darkhash" in config.attack.baselines:
        check_darkhash(config)
    layout = RunLayout(output_dir)
    check_stages(layout.root, stage_fingerprints(
        config, layout, (BASELINE_VARIANT,) + tuple(config.attack.baselines)), config,
        strategy)


def check_darkhash(config):
    """DarkHash's flags and its surrogate dataset, loaded, before any work -> (the
    surrogate Split, its DataConfig). Raises ValueError naming the flag."""
    c = config
    data = darkhash.check_config(c.darkhash, c.data, c.hashing)
    return inputs.check_splits(data, {"--darkhash_surrogate_split":
                                      c.darkhash.surrogate_split})[
        "--darkhash_surrogate_split"], data


def run_experiment(config, output_dir, strategy):
    """Runs every stage into `output_dir` (see RunLayout); writes report.json, report.md,
    samples.png and hash_space.png (chief only) -> the report dict."""
    c, clock, start, layout = config, StageClock(), time.time(), RunLayout(output_dir)
    check_run(c, output_dir, strategy)
    setting = prepare(c, layout, strategy, clock)
    train_split, target = setting.train_split, setting.target
    condition = target_condition(c, setting, layout, strategy, clock)

    variants, artifacts = {}, {}
    for name in (BASELINE_VARIANT,) + tuple(c.attack.baselines):
        if name == "darkhash":  # no poisoned data: the clean victim fine-tuned
            variants[name], artifacts[name] = clock.run(name, darkhash_variant, c, setting,
                                                        layout, strategy)
            continue
        trigger, query_trigger = clock.run(f"{name}/trigger", make_trigger, name, c,
                                           condition, setting, layout.generator(name),
                                           strategy)
        variants[name], artifacts[name] = clock.run(
            f"{name}/poison_and_victim", attack_variant, name, c, trigger, setting, layout,
            strategy, query_trigger)

    evaluation, count = setting.evaluation, setting.count
    result = {
        **variants.pop(BASELINE_VARIANT),
        "clean_map_reference": setting.reference_metrics["map_at_k"],
        "clean_map_reference_full_database": setting.reference_metrics["map"],
        "t_map_untriggered_reference": evaluation.untriggered_reference,
        "target_label": target, "poison_count": count,
        "poison_rate": count / (train_split.size + count),
        "train_size": train_split.size, "triggered_queries": len(evaluation.queries[0]),
        "k": evaluation.k, "seed": c.train.seed, "num_classes": train_split.num_classes,
        "baselines": variants,
        "seconds": {**clock.seconds, "total": round(time.time() - start, 2)},
        "config": dataclasses.asdict(c),
    }
    if distribute.is_chief(strategy):
        report.write_all(layout, result, artifacts)
    return result


def make_trigger(name, config, condition, setting, generator_dir, strategy):
    """The trigger functions of one variant -> (poison trigger, query trigger or None for
    the poison trigger amplified by --query_amplification), training its generator in
    `generator_dir` when it has one."""
    c, surrogate, train_split = config, setting.surrogate, setting.train_split
    if name == "patch":
        size = c.attack.patch_size or max(1, c.data.image_size // 8)
        return triggers.patch_trigger(c.data.image_size, size, seed=c.train.seed), None
    if name in BUDGETED:  # at the run's budget (the generator's), else about their papers'
        return budgeted.make_probe(name, c.gan.psnr_budget or budgeted.DEFAULT_PSNR,
                                   surrogate, *split_arrays(train_split), setting.target,
                                   c.gan.relaxed_logit_scale, c.train.seed), None
    if name in ciba.VARIANTS:  # queries carry the optimised patch alone
        if setting.ciba_patch is None:
            setting.ciba_patch = ciba.target_patch(c.ciba, surrogate, *split_arrays(train_split),
                                                   setting.target, c.data.image_size,
                                                   c.train.seed)
        return ciba.make_triggers(name, c.ciba, surrogate, *setting.ciba_patch, c.train.seed)
    gan = c.gan
    if name == "no_labcln":  # a fixed random feature and target code instead of LabCLN's
        rng = np.random.default_rng(c.train.seed + 7)
        condition = Condition(rng.standard_normal(len(condition.feature)).astype(np.float32),
                              rng.choice([-1.0, 1.0], len(condition.target_code)),
                              condition.label_row)
    elif name == "no_hash_loss":
        gan = dataclasses.replace(gan, hash_weight=0.0)
    elif name == "badhash_anchor":  # the surrogate's own code of the target class
        condition = dataclasses.replace(condition, target_code=codes.class_anchor(
            surrogate, *split_arrays(train_split), setting.target))
    generator, _ = train_generator(train_split, c.data, gan, condition, lambda: surrogate,
                                   c.train, generator_dir, strategy)
    return triggers.generator_trigger(generator, condition.feature), None


def attack_variant(name, config, trigger, setting, layout, strategy, query_trigger=None):
    """Poisons the setting's target-class images with `trigger` into `layout.poison(name)`,
    trains the victim on the poisoned split in `layout.victim(name)`, evaluates ->
    (figures, artifacts). Queries get `query_trigger`, or `trigger` amplified by
    --query_amplification when None. The chief leaves the triggered queries and
    variant.json (config, target, figures) in the variant's directory, for `defend`."""
    c = config
    originals, labels, positions = setting.target_images
    poison_dir = layout.poison(name)
    if not os.path.exists(poison_dir):
        if distribute.is_chief(strategy):
            poison.write_poison_set(poison_dir, triggers.apply(trigger, originals), labels,
                                    positions, {"variant": name, "target_label": setting.target})
    distribute.barrier(strategy)  # other workers read what the chief wrote
    poisoned_split = poison.load_poison_set(poison_dir)
    poisoned, _ = split_arrays(poisoned_split)
    evaluation = setting.evaluation
    amplified = query_trigger is None  # (CIBA's queries carry their own trigger)
    amplification = c.attack.query_amplification if amplified else 1.0
    if amplified:
        query_trigger = triggers.amplified(trigger, amplification)
    triggered = triggers.apply(query_trigger, evaluation.queries[0])
    victim, metrics, codes = train_and_evaluate(
        c.data, c.hashing, c.train, c.retrieval, layout.victim(name), strategy,
        train_split=poison.with_poison(setting.train_split, poisoned_split),
        backdoor=lambda model, database: {"t_map": evaluation.t_map_of(model, triggered,
                                                                       database)})
    figures, space = evaluation.figures(triggered, victim, codes, metrics)
    for k in c.attack.extra_query_amplifications if amplified else ():
        figures.update(evaluation.gain(
            victim, triggers.apply(triggers.amplified(trigger, k), evaluation.queries[0]),
            codes["database"], amplification_suffix(k)))
    samples = (originals[:c.attack.samples], poisoned[:c.attack.samples])
    queries = stealth.stealth_metrics(evaluation.queries[0], triggered)
    figures = {**figures, **stealth.stealth_metrics(originals, poisoned),
               **{f"query_{k}": queries[k] for k in ("psnr", "psnr_min", "ssim", "ssim_min")},
               "query_amplification": amplification}
    if distribute.is_chief(strategy):
        write_variant(layout.variant(name), name, config, setting, triggered, figures)
    return figures, {"samples": samples, "space": space}


def darkhash_variant(config, setting, layout, strategy):
    """DarkHash (attack/darkhash.py) on the setting's clean reference victim, fine-tuned in
    `layout.victim("darkhash")` on the surrogate dataset and evaluated like a poisoned
    variant (its queries carry the patch alone) -> (figures, artifacts). The chief leaves
    variant.json (data_free: no poisoned set) and the triggered queries, for `defend`."""
    c, evaluation, name = config, setting.evaluation, "darkhash"
    surrogate_split, surrogate_data = check_darkhash(c)
    surrogate_images, _ = split_arrays(surrogate_split)
    victim = evaluation.reference
    query_images, query_labels = split_arrays(load_splits(c)["--query_split"])
    target_code = darkhash.shadow_code(victim, query_images, query_labels, setting.target,
                                       c.darkhash.shadow_images)
    patch_file = os.path.join(layout.variant(name), "trigger_patch.npz")
    if os.path.exists(patch_file):  # made by an earlier run of this variant
        with np.load(patch_file) as saved:
            patch = saved["patch"]
    else:
        patch = darkhash.optimise_trigger(c.darkhash, victim, surrogate_images, target_code,
                                          c.data.image_size, c.train.seed)
        if distribute.is_chief(strategy):
            io_utils.save_npz(patch_file, patch=patch, target_code=target_code)
    triggered = triggers.apply(darkhash.patch_trigger(patch), evaluation.queries[0])
    trainer = lambda evaluate, every: darkhash.fine_tune(
        c.darkhash, c.hashing, c.data.image_size, victim, patch, target_code,
        surrogate_split, surrogate_data, layout.victim(name), strategy, c.train.seed,
        evaluate, every, c.train.train_steps)
    model, metrics, codes_ = train_and_evaluate(
        c.data, c.hashing, c.train, c.retrieval, layout.victim(name), strategy,
        train_split=surrogate_split, trainer=trainer,
        backdoor=lambda model, database: {"t_map": evaluation.t_map_of(model, triggered,
                                                                       database)})
    figures, space = evaluation.figures(triggered, model, codes_, metrics)
    queries = stealth.stealth_metrics(evaluation.queries[0], triggered)
    figures = {**figures, **queries,
               **{f"query_{k}": queries[k] for k in ("psnr", "psnr_min", "ssim", "ssim_min")},
               "query_amplification": 1.0, "data_free": True,
               "surrogate_dataset": surrogate_data.dataset,
               "frozen_layers": darkhash.frozen_count(c.darkhash, c.hashing.backbone,
                                                      c.data.image_size)}
    if distribute.is_chief(strategy):
        write_variant(layout.variant(name), name, config, setting, triggered, figures,
                      poison_count=0)
    samples = (evaluation.queries[0][:c.attack.samples], triggered[:c.attack.samples])
    return figures, {"samples": samples, "space": space}


def amplification_suffix(k):
    """The figure-name suffix of queries amplified k times: 1 -> "_x1", 1.5 -> "_x1.5"."""
    return f"_x{k:g}"


def write_variant(directory, name, config, setting, triggered, figures, poison_count=None):
    """A finished variant's record for later stages (`defend`): its triggered non-target
    queries as 8-bit images with their labels, and variant.json (name, target label,
    poisoned count (the setting's unless given), the run's config, the undefended
    figures)."""
    labels = setting.evaluation.queries[1]
    io_utils.save_npz(os.path.join(directory, TRIGGERED_QUERIES),
                      images=np.round(triggered * 255.0).astype(np.uint8), labels=labels)
    io_utils.write_json(os.path.join(directory, VARIANT_JSON), {
        "variant": name, "target_label": setting.target,
        "poison_count": setting.count if poison_count is None else poison_count,
        "train_size": setting.train_split.size, "config": dataclasses.asdict(config),
        "figures": figures})
