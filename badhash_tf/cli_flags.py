"""absl flag definitions shared by the command-line programs, and their conversion into the
library's config dataclasses. Only command-line modules import this; the library never
reads FLAGS."""

import contextlib
import dataclasses
import sys

from absl import app, flags, logging

from badhash_tf import console, io_utils

from badhash_tf.attack import ciba, darkhash
from badhash_tf.attack.experiment import (BASELINES, AttackConfig, ExperimentConfig,
                                          check_baselines)
from badhash_tf.attack.victim import RetrievalConfig
from badhash_tf.data.inputs import DataConfig
from badhash_tf.defense.harness import DefenseConfig
from badhash_tf.models import discriminator, generator
from badhash_tf.models.generator import MAX_PSNR_BUDGET
from badhash_tf.models.hashing import BACKBONES, HashingModel
from badhash_tf.training import distribute
from badhash_tf.training.distribute import STRATEGIES
from badhash_tf.training.gan import HASH_TERMS, TARGET_CODES, GANConfig
from badhash_tf.training.hashing import METHODS, HashingConfig
from badhash_tf.training.labcln import LabCLNConfig
from badhash_tf.training.loop import TrainConfig
from badhash_tf.training.pretrain import (AUGMENTS, PretrainConfig, check_compatible,
                                          read_pretrained)


def define_data_flags():
    d = DataConfig()
    flags.DEFINE_string("dataset", d.dataset, "tfds name (badhash_digits, "
                        "badhash_digit_mosaics, badhash_fashion_mnist, or a prepared catalog "
                        "dataset such as cifar10) or list:ROOT for the paper's list files.")
    flags.DEFINE_string("data_dir", d.data_dir, "tfds data_dir (default ~/tensorflow_datasets).")
    flags.DEFINE_string("source_dir", d.source_dir, "badhash_fashion_mnist: the directory of "
                        "Fashion-MNIST's four IDX files, read once when the dataset is first "
                        "built ('' = /usr/share/datasets/fashion-mnist, Debian's "
                        "dataset-fashion-mnist).")
    flags.DEFINE_integer("image_size", d.image_size, "Square input size in pixels.",
                         lower_bound=16)
    flags.DEFINE_integer("query_per_class", d.query_per_class, "Catalog datasets: query items "
                         "per class (random total x classes when multi-label).")
    flags.DEFINE_integer("train_per_class", d.train_per_class, "Catalog datasets: training "
                         "items per class.")
    flags.DEFINE_integer("protocol_seed", d.protocol_seed, "Seed of the catalog split protocol.")
    flags.DEFINE_string("cache", d.cache, "tf.data cache: memory, none, or a file prefix.")


def define_train_flags():
    t = TrainConfig()
    flags.DEFINE_integer("seed", t.seed, "Seed of weights, shuffling and sampling.",
                         lower_bound=0)
    flags.DEFINE_integer("train_steps", t.train_steps, "Training steps; > 0 overrides --epochs.",
                         lower_bound=0)
    flags.DEFINE_float("epochs", t.epochs, "Training epochs over the training split.")
    flags.register_validator("epochs", lambda v: v > 0, "--epochs must be > 0")
    flags.DEFINE_integer("global_batch_size", t.global_batch_size, "Batch over all replicas.",
                         lower_bound=1)
    flags.DEFINE_integer("steps_per_loop", t.steps_per_loop,
                         "Steps per tf.function call, between checkpoints and summaries.",
                         lower_bound=1)
    flags.DEFINE_enum("strategy", t.strategy, STRATEGIES, "tf.distribute strategy: default, "
                      "mirrored (GPUs or --logical_cpus), multi_worker (TF_CONFIG).")
    flags.DEFINE_integer("logical_cpus", t.logical_cpus, "Split the CPU into N logical devices "
                         "for --strategy=mirrored (testing and demos).", lower_bound=0)
    flags.DEFINE_bool("jit_compile", t.jit_compile, "XLA-compile the training step.")
    flags.DEFINE_bool("overwrite", t.overwrite, "Start afresh every stage of --output_dir "
                      "recorded with other flags: its directory is moved aside to "
                      "<dir>.replaced-<time>, never deleted (default: such a rerun stops, "
                      "naming the stage and the differing flags).")


def define_hashing_flags():
    h = HashingConfig()
    flags.DEFINE_enum("method", h.method, METHODS, "Deep-hashing loss.")
    flags.DEFINE_enum("backbone", h.backbone, BACKBONES, "Backbone network.")
    flags.DEFINE_integer("bits", h.bits, "Hash code length (16/32/48/64 in the paper).",
                         lower_bound=1)
    flags.DEFINE_string("backbone_weights", h.backbone_weights,
                        "The backbone's starting weights: a local Keras .weights.h5 file, or "
                        "'imagenet' (ResNet50 only: keras.applications fetches and caches "
                        "them on first use, the one download any program makes).")
    flags.DEFINE_enum("optimizer", h.optimizer, ("adam", "rmsprop"), "Optimizer.")
    flags.DEFINE_float("learning_rate", h.learning_rate, "Learning rate.")
    flags.DEFINE_float("weight_decay", h.weight_decay, "L2 weight decay added to the gradient "
                       "(torch's weight_decay, as the release's RMSprop; 0 = none).")
    flags.DEFINE_float("hashnet_alpha", h.hashnet_alpha, "HashNet inner-product scale.")
    flags.DEFINE_float("dpsh_quantization", h.dpsh_quantization, "DPSH quantization weight.")
    flags.DEFINE_float("csq_quantization", h.csq_quantization, "CSQ quantization weight.")
    flags.DEFINE_integer("hashnet_step_continuation", h.hashnet_step_continuation, "HashNet: "
                         "epochs per continuation step (tanh scale sqrt(epoch // this + 1)).",
                         lower_bound=1)
    flags.DEFINE_bool("require_backbone_weights", False, "Fail unless --backbone_weights or "
                      "--pretrained_backbone is given (the paper's presets: its victims "
                      "fine-tune ImageNet-pretrained backbones; training ResNet50/VGG11 from "
                      "scratch is not its experiment).")
    flags.DEFINE_string("pretrained_backbone", None, "A `python -m badhash_tf.pretrain` output "
                        "directory: the surrogate, the reference victim and every backdoored "
                        "victim start from its backbone (hash head new) and fine-tune it.")
    flags.DEFINE_string("victim_pretrained_backbone", None, "Another pretrain output for the "
                        "victims only (reference and backdoored; the attacker's surrogate "
                        "keeps --pretrained_backbone): a pool mismatch between attacker and "
                        "victim.")
    r = RetrievalConfig()
    flags.DEFINE_string("train_split", r.train_split, "Training split, e.g. train or train[:64].")
    flags.DEFINE_string("query_split", r.query_split, "Query split.")
    flags.DEFINE_string("database_split", r.database_split, "Database split.")
    flags.DEFINE_integer("map_top_k", r.map_top_k, "k of MAP@k (1000 for ImageNet in the paper).",
                         lower_bound=1)
    flags.DEFINE_integer("precision_k", r.precision_k, "k of precision@k.", lower_bound=1)
    flags.DEFINE_integer("eval_every_epochs", r.eval_every_epochs, "Evaluate victims every N "
                         "epochs for the release's best-so-far map_best / t_map_best (0 = "
                         "final only).", lower_bound=0)


def start_program(argv, flag_values):
    """What every training program does first: our console, no stray arguments (an
    app.UsageError), and the line saying what --train_steps overrides."""
    console.configure(flag_values.verbosity)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    warn_train_steps(flag_values)


def warn_train_steps(flag_values):
    """Says at start-up which flag wins: --train_steps > 0 runs every stage for that many
    steps, so the epoch and step counts of this program's stages are not used."""
    steps = flag_values.train_steps
    unused = [f"--{n}={flag_values[n].value:g}" for n in ("epochs", "gan_epochs",
                                                          "labcln_steps", "darkhash_steps")
              if n in flag_values]
    if steps > 0 and unused:
        logging.warning("--train_steps=%d runs every stage for %d steps: %s not used (the "
                        "stage fingerprints record them as overridden)", steps, steps,
                        ", ".join(unused) + (" is" if len(unused) == 1 else " are"))


@contextlib.contextmanager
def output_dir_lock(directory, strategy):
    """The run directory's one-writer lock (io_utils.run_dir_lock; the chief's, as only it
    writes there) around a program's work; a held lock or a --output_dir that is a file
    is an app.UsageError naming it. Take it before the first write (stages.json included)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(io_utils.run_dir_lock(
                directory, distribute.is_chief(strategy), logging.warning))
        except (io_utils.RunDirLockedError, NotADirectoryError) as e:
            raise app.UsageError(str(e)) from None
        yield


ATTACK_PREFIXES = ("gan_", "labcln_", "ciba_", "darkhash_")
ATTACK_FLAGS = ("target_label", "poison_count", "poison_rate", "surrogate_seed_offset",
                "patch_size", "baselines", "samples", "query_amplification",
                "extra_query_amplification")


def parse_victim_flags(argv):
    """absl's flag parsing for the victim-only programs (train_victim), with a hint where
    an attack preset was given: its attack flag named and the victim presets said. A bad
    flag ends the program as absl's parser does (one line, exit code 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
        name = getattr(e, "flagname", "")
        if name.startswith(ATTACK_PREFIXES) or name in ATTACK_FLAGS:
            message += (f": --{name} is an attack flag (pipeline, frontier, probe_triggers), "
                        "likely from an attack preset such as flags/digits.cfg; this program "
                        "trains a victim alone and takes the victim presets: "
                        "flags/digits_victim.cfg, flags/fashion_victim.cfg, "
                        "flags/imagenet100.cfg, ...")
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def parse_seeds(values):
    """--seeds values -> distinct non-negative ints, checked before anything is written.
    Raises app.UsageError naming --seeds."""
    given = ",".join(values)
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--seeds={given}: give integers") from None
    if any(s < 0 for s in seeds):
        raise app.UsageError(f"--seeds={given}: seeds must be >= 0 (NumPy's and Keras' seeds)")
    if len(set(seeds)) != len(seeds):
        raise app.UsageError(f"--seeds={given} repeats a seed: each seed is one run "
                             "directory (seed_N)")
    return seeds


def check_replicas(flag_values, strategy):
    """Every batch flag must split evenly over the strategy's replicas (checked before any
    work). Raises app.UsageError naming the flag."""
    replicas = strategy.num_replicas_in_sync
    for name in ("global_batch_size", "gan_batch_size"):
        if name in flag_values and flag_values[name].value % replicas:
            raise app.UsageError(f"--{name}={flag_values[name].value} does not split over the "
                                 f"{replicas} replicas of --strategy={flag_values.strategy}: "
                                 f"give a multiple of {replicas}")


def backbone_files(flag_values):
    """--backbone_weights, --pretrained_backbone and --victim_pretrained_backbone -> (the
    victims' weights file, the attacker's surrogate's) or None for a random start, each
    pretrain output read and checked against the run. Raises app.UsageError naming the
    flag."""
    f = flag_values
    if f.backbone_weights and (f.pretrained_backbone or f.victim_pretrained_backbone):
        raise app.UsageError("--backbone_weights and --pretrained_backbone / "
                             "--victim_pretrained_backbone both name a starting backbone: "
                             "give one")
    if f.victim_pretrained_backbone and not f.pretrained_backbone:
        raise app.UsageError("--victim_pretrained_backbone needs --pretrained_backbone (the "
                             "attacker's): a mismatch study starts both from pretrained "
                             "backbones")
    files = {}
    for flag in ("pretrained_backbone", "victim_pretrained_backbone"):
        if f[flag].value:
            try:
                record = read_pretrained(f[flag].value, f"--{flag}")
                check_compatible(record, f"--{flag}={f[flag].value}", f.backbone,
                                 f.image_size, f.dataset, f.query_split)
            except ValueError as e:
                raise app.UsageError(str(e)) from None
            files[flag] = record["weights"]
    attacker = files.get("pretrained_backbone") or f.backbone_weights
    return files.get("victim_pretrained_backbone") or attacker, attacker


def hashing_config(flag_values):
    """HashingConfig from the flags, starting from the victims' backbone (backbone_files)."""
    victim, _ = backbone_files(flag_values)
    return dataclasses.replace(from_flags(HashingConfig, flag_values), backbone_weights=victim)


def check_backbone_weights(flag_values):
    """Start-up check of the pretrained-backbone rule; warns where a paper backbone starts
    from scratch. Raises app.UsageError naming the flag."""
    paths = set(backbone_files(flag_values)) - {None, ""}
    if paths:
        for path in paths:
            try:  # the file must hold this backbone's weights: load them once, now
                HashingModel(flag_values.bits, flag_values.backbone, flag_values.image_size,
                             path)
            except (ValueError, FileNotFoundError) as e:
                raise app.UsageError(str(e)) from None
            except Exception as e:  # imagenet: keras.applications could not fetch them
                raise app.UsageError(f"--backbone_weights={path}: keras.applications could "
                                     f"not fetch the ImageNet weights ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:200]}); give a local "
                                     ".weights.h5 file where there is no internet") from None
        return
    if flag_values.require_backbone_weights:
        raise app.UsageError(
            f"--backbone_weights is required here (--require_backbone_weights): the paper's "
            f"victims and surrogate fine-tune an ImageNet-pretrained {flag_values.backbone}. "
            "Give a local Keras .weights.h5 file (or --pretrained_backbone=DIR), or "
            "--norequire_backbone_weights to train from scratch knowingly.")
    if flag_values.backbone in ("vgg11", "resnet50"):
        logging.warning("--backbone=%s starts from random weights (no --backbone_weights): "
                        "the paper fine-tunes ImageNet-pretrained backbones, and its figures "
                        "are not comparable with a from-scratch run.", flag_values.backbone)


def from_flags(config_class, flag_values, prefix=""):
    """Builds `config_class` from the flags named like its fields (with `prefix`)."""
    return config_class(**{f.name: flag_values[prefix + f.name].value
                           for f in dataclasses.fields(config_class)
                           if prefix + f.name in flag_values})


def experiment_config(flag_values, seed=None, baselines=None):
    """The attack programs' flags -> ExperimentConfig; `seed` replaces --seed and
    `baselines` (a tuple) replaces --baselines when given."""
    train = from_flags(TrainConfig, flag_values)
    if seed is not None:
        train = dataclasses.replace(train, seed=seed)
    attack = from_flags(AttackConfig, flag_values)
    if "extra_query_amplification" in flag_values:
        attack = dataclasses.replace(attack, extra_query_amplifications=tuple(
            flag_values.extra_query_amplification))
    victim_weights, surrogate_weights = backbone_files(flag_values)
    if surrogate_weights != victim_weights:  # "" = the surrogate starts as the victims do
        attack = dataclasses.replace(attack, surrogate_backbone_weights=surrogate_weights)
    gan = from_flags(GANConfig, flag_values, prefix="gan_")
    try:  # the checks the library makes later, before any work
        check_baselines(attack.baselines if baselines is None else baselines)
        generator.check_image_size(flag_values.image_size)
        discriminator.check_image_size(flag_values.image_size, gan.disc_layers)
        ciba.patch_side(flag_values.image_size, flag_values.ciba_patch_size)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    hashing = dataclasses.replace(from_flags(HashingConfig, flag_values),
                                  backbone_weights=victim_weights)
    return ExperimentConfig(
        data=from_flags(DataConfig, flag_values), hashing=hashing,
        train=train, retrieval=from_flags(RetrievalConfig, flag_values),
        labcln=from_flags(LabCLNConfig, flag_values, prefix="labcln_"),
        gan=from_flags(GANConfig, flag_values, prefix="gan_"),
        ciba=from_flags(ciba.CIBAConfig, flag_values, prefix="ciba_"),
        darkhash=from_flags(darkhash.DarkHashConfig, flag_values, prefix="darkhash_"),
        attack=dataclasses.replace(attack, baselines=tuple(
            attack.baselines if baselines is None else baselines)))


def used_flags(flag_values):
    """-> {name: value} of every flag this program defines (for flags.json)."""
    return {name: flag_values[name].value
            for module, defined in flag_values.flags_by_module_dict().items()
            if module.startswith("badhash_tf") or module.endswith("__main__")
            for name in (f.name for f in defined)}


def define_pretrain_flags():
    """The pretraining program's own flags (beside the data and training flags: --dataset
    names the pool)."""
    p = PretrainConfig()
    flags.DEFINE_enum("backbone", p.backbone, BACKBONES, "Backbone network to pretrain.")
    flags.DEFINE_enum("optimizer", p.optimizer, ("adam", "rmsprop"), "Optimizer.")
    flags.DEFINE_float("learning_rate", p.learning_rate, "Learning rate.")
    flags.DEFINE_float("weight_decay", p.weight_decay, "Coupled L2 weight decay (0 = none).")
    flags.DEFINE_string("pool_split", p.pool_split, "Split of the pool --dataset to learn "
                        "from (database: as ImageNet holds ImageNet-100's images, the pool may "
                        "overlap a retrieval database, never its queries).")
    flags.DEFINE_integer("heldout", p.heldout, "Pool items held out for the top-1 figure.",
                         lower_bound=1)
    flags.DEFINE_integer("heldout_seed", p.heldout_seed, "Seed of the held-out draw.")
    flags.DEFINE_enum("augment", p.augment, AUGMENTS, "Augmentation: translate (up to "
                      "--shift pixels), translate_flip (also left-right mirrors; not for "
                      "digits), none.")
    flags.DEFINE_integer("shift", p.shift, "Largest translation in pixels.", lower_bound=0)


def define_defense_flags():
    """The defenses' strengths (defend, bench); --seed is each program's own."""
    d = DefenseConfig()
    flags.DEFINE_integer("jpeg_quality", d.jpeg_quality, "jpeg: re-encoding quality.",
                         lower_bound=1, upper_bound=100)
    flags.DEFINE_float("blur_sigma", d.blur_sigma, "blur: Gaussian sigma in pixels.",
                       lower_bound=0.1)
    flags.DEFINE_float("resize_factor", d.resize_factor, "resize: shrink to this share of the "
                       "side, then back.", lower_bound=0.05, upper_bound=1.0)
    flags.DEFINE_integer("bit_depth", d.bit_depth, "bit_depth: bits per channel kept.",
                         lower_bound=1, upper_bound=8)
    flags.DEFINE_float("removal_fraction", d.removal_fraction, "spectral, clustering: share of "
                       "each label removed before retraining.", lower_bound=0.0, upper_bound=0.95)
    flags.DEFINE_float("clean_fraction", d.clean_fraction, "finetune, fine_pruning, strip: the "
                       "defender's clean subset, as a share of the clean training split.",
                       lower_bound=0.001, upper_bound=1.0)
    flags.DEFINE_float("finetune_epochs", d.finetune_epochs, "finetune, fine_pruning: epochs "
                       "over the clean subset.", lower_bound=0.01)
    flags.DEFINE_float("prune_fraction", d.prune_fraction, "fine_pruning: share of the last "
                       "conv's channels pruned (least active on clean data).", lower_bound=0.0,
                       upper_bound=0.99)
    flags.DEFINE_integer("strip_blends", d.strip_blends, "strip: clean images blended with each "
                         "query.", lower_bound=2)
    flags.DEFINE_float("strip_alpha", d.strip_alpha, "strip: the query's weight in a blend.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("cleanse_steps", d.cleanse_steps, "neural_cleanse: Adam steps per "
                         "candidate label's reversed trigger.", lower_bound=1)
    flags.DEFINE_float("cleanse_l1_weight", d.cleanse_l1_weight, "neural_cleanse: weight of "
                       "the mask's mean L1 against the code agreement.", lower_bound=0.0)


def define_attack_flags():
    a = AttackConfig()
    flags.DEFINE_integer("target_label", a.target_label, "Target class; < 0 draws it from "
                         "--seed.")
    flags.DEFINE_integer("poison_count", a.poison_count, "Poisoned copies to add; 0 = see "
                         "--poison_rate.", lower_bound=0)
    flags.DEFINE_float("poison_rate", a.poison_rate, "Poisoned share of the poisoned training "
                       "set; 0 with --poison_count=0 = every target-class training image.")
    flags.DEFINE_integer("surrogate_seed_offset", a.surrogate_seed_offset, "The attacker's "
                         "surrogate trains with --seed plus this.")
    flags.DEFINE_integer("patch_size", a.patch_size, "BadNets baseline patch side (0 = "
                         "image_size // 8).", lower_bound=0)
    flags.DEFINE_list("baselines", list(a.baselines), f"Baselines to run: {', '.join(BASELINES)}.")
    flags.DEFINE_integer("samples", a.samples, "Images shown in samples.png.", lower_bound=1)
    flags.DEFINE_float("query_amplification", a.query_amplification, "Scale the trigger's "
                       "perturbation of the queries by this (the attacker's own queries may "
                       "be less invisible than the poisoned copies; 1 = the same trigger).")
    flags.register_validator("query_amplification", lambda v: v > 0,
                             "--query_amplification must be > 0")
    flags.DEFINE_multi_float("extra_query_amplification", [], "Also score the triggered "
                             "queries at this amplification (repeatable; figures t_map_xK, "
                             "t_map_clean_victim_xK, backdoor_gain_xK; the victims are the "
                             "same), e.g. 1 for the paper's protocol beside x3.")
    flags.register_validator("extra_query_amplification", lambda v: all(k > 0 for k in v),
                             "--extra_query_amplification must be > 0")
    _define_prefixed(LabCLNConfig(), "labcln_", "LabCLN", "the release's value")
    _define_prefixed(GANConfig(), "gan_", "Generator/discriminator",
                     "the release's value, or off / its behaviour for options beyond the paper")
    _define_prefixed(ciba.CIBAConfig(), "ciba_", "CIBA", "the CIBA paper's patch size and "
                     "epsilon; our optimisation steps and rates")
    _define_prefixed(darkhash.DarkHashConfig(), "darkhash_", "DarkHash (--baselines=darkhash;"
                     " surrogate '' = Fashion-MNIST for the digits, the digits for "
                     "Fashion-MNIST; frozen layers -1 = the shallow half of the backbone's "
                     "weighted layers)",
                     "our reading of the paper; BUILD_NOTES.md")
    flags.register_validator("gan_hash_term", lambda v: v in HASH_TERMS,
                             f"--gan_hash_term: choose one of {', '.join(HASH_TERMS)}")
    flags.register_validator("gan_target_code", lambda v: v in TARGET_CODES,
                             f"--gan_target_code: choose one of {', '.join(TARGET_CODES)}")
    flags.register_validator("gan_psnr_budget", lambda v: v == 0 or 0 < v < MAX_PSNR_BUDGET,
                             f"--gan_psnr_budget: 0 (off) or a PSNR in dB below "
                             f"{MAX_PSNR_BUDGET:.1f}")


def _define_prefixed(config, prefix, what, source):
    """One flag per field of a config dataclass, named prefix + field; `source` says where
    its defaults come from (presets in flags/ set the embedded demo's)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        define = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
                  str: flags.DEFINE_string}[type(value)]
        define(prefix + field.name, value,
               f"{what}: {field.name.replace('_', ' ')} ({source}).")
