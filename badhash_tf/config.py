"""Every setting of the library as frozen config dataclasses, one per section, each field
carrying its command-line help (cli/flags.py generates the flags from them; the library
never reads FLAGS). Their defaults are the paper's (the official release's); presets in
flags/ set the embedded data's. The bottom layer: it imports nothing of the package.

A field's metadata (`setting`): "help", optional "lower"/"upper" bounds, "choices" (an
enum), "check" (predicate, message), "flag" (its flag name when not prefix + field name;
None: not a flag, e.g. a value the programs derive), "define" False (read from a flag the
program defines itself); for the fingerprints (fingerprints.py) "fingerprint" False (does
not change results), "file" (a file recorded by its bytes), "overridden_by_train_steps".
"""

import dataclasses
import math
from typing import Optional

METHODS = ("hashnet", "csq", "dpsh")  # deep-hashing losses
BACKBONES = ("small_cnn", "vgg11", "resnet50")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("off", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies (off: float32)
OPTIMIZERS = ("adam", "rmsprop")
HASH_TERMS = ("logits", "relaxed")
TARGET_CODES = ("labcln", "class_anchor")
AUGMENTS = ("none", "translate", "translate_flip")
TRIGGER_COLOURS = ("auto", "grey", "colour")  # auto: grey when the training images are grey
ROUNDING = 0.5 / 255.0  # the largest change 8-bit rounding makes to a value in [0, 1]
MAX_PSNR_BUDGET = -20.0 * math.log10(2 * ROUNDING)  # 48.1 dB: rounding alone may reach it
# Code lengths past this are refused: the paper's are 16-64; 4096 bits already make every
# database code 512 bytes packed and a victim's hash layer 4096 x the backbone's width.
MAX_BITS = 4096


def setting(default, help, **meta):
    """A config field with its command-line help and checks (see the module docstring)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a sequence default")
    return dataclasses.field(default=default, metadata={"help": help, **meta})


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, where, at which size; protocol counts apply to catalog datasets only."""
    dataset: str = setting("badhash_digits", "tfds name (badhash_digits, badhash_digit_mosaics"
                           ", badhash_fashion_mnist, or a prepared catalog dataset such as "
                           "cifar10) or list:ROOT for the paper's list files.")
    data_dir: Optional[str] = setting(None, "tfds data_dir (default ~/tensorflow_datasets).",
                                      fingerprint=False)
    source_dir: str = setting("", "badhash_fashion_mnist: the directory of Fashion-MNIST's four"
                              " IDX files, read once when the dataset is first built ('' = "
                              "/usr/share/datasets/fashion-mnist, Debian's "
                              "dataset-fashion-mnist).", fingerprint=False)
    image_size: int = setting(32, "Square input size in pixels.", lower=16)
    query_per_class: int = setting(100, "Catalog datasets: query items per class (random "
                                   "total x classes when multi-label).")
    train_per_class: int = setting(500, "Catalog datasets: training items per class.")
    protocol_seed: int = setting(0, "Seed of the catalog split protocol.")
    cache: str = setting("memory", "tf.data cache: memory, none, or a file prefix.",
                         fingerprint=False)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What every training stage shares: seed, length, batch, how the loop is cut, where it
    runs, and whether stages recorded with other settings are started afresh."""
    seed: int = setting(0, "Seed of weights, shuffling and sampling.", lower=0)
    train_steps: int = setting(0, "Training steps; > 0 overrides --epochs.", lower=0)
    epochs: float = setting(1.0, "Training epochs over the training split.",
                            check=(lambda v: v > 0, "--epochs must be > 0"),
                            overridden_by_train_steps=True)
    global_batch_size: int = setting(64, "Batch over all replicas.", lower=1)
    steps_per_loop: int = setting(50, "Steps per tf.function call, between checkpoints and "
                                  "summaries.", lower=1, fingerprint=False)
    strategy: str = setting("default", "tf.distribute strategy: default, mirrored (GPUs or "
                            "--logical_cpus), multi_worker (TF_CONFIG).", choices=STRATEGIES,
                            fingerprint=False)
    logical_cpus: int = setting(0, "Split the CPU into N logical devices for "
                                "--strategy=mirrored (testing and demos).", lower=0,
                                fingerprint=False)
    jit_compile: bool = setting(False, "XLA-compile the training step.", fingerprint=False)
    keep_checkpoints: bool = setting(
        False, "Keep every checkpoint of a finished stage (default: only its final weights, "
        "without optimizer state: what later stages, exports and reruns read; a stage that "
        "is still training keeps its last 3 checkpoints, for an exact resume).",
        fingerprint=False)
    mixed_precision: str = setting(
        "off", "Keras mixed precision for every training stage: layers compute in float16 "
        "(with dynamic loss scaling) or bfloat16, variables, losses, codes and metrics stay "
        "float32, exports too. For GPUs with tensor cores (float16: Volta and later; "
        "bfloat16: Ampere and later, TPUs); on a CPU it is slower and only tested.",
        choices=PRECISIONS)
    overwrite: bool = setting(False, "Start afresh every stage of --output_dir recorded with "
                              "other flags or data: its directory is moved aside to "
                              "<dir>.replaced-<time>, never deleted, and so are the run's "
                              "previous reports (default: such a rerun stops, naming the "
                              "stage and what differs).", fingerprint=False)

    def steps_for(self, num_examples):
        """Training steps for a split of `num_examples` items."""
        if self.train_steps > 0:
            return self.train_steps
        return max(1, math.ceil(self.epochs * num_examples / self.global_batch_size))


@dataclasses.dataclass(frozen=True)
class HashingConfig:
    """The hashing model and its loss. Paper: RMSprop lr 1e-5, wd 1e-5, pretrained backbone;
    the embedded preset trains a small CNN from scratch with Adam 1e-3."""
    method: str = setting("hashnet", "Deep-hashing loss.", choices=METHODS)
    backbone: str = setting("small_cnn", "Backbone network.", choices=BACKBONES)
    bits: int = setting(32, f"Hash code length (16/32/48/64 in the paper; at most {MAX_BITS}).",
                        lower=1, check=(lambda v: v <= MAX_BITS, f"--bits: at most {MAX_BITS} "
                                        "(the paper's codes are 16 to 64 bits; longer ones "
                                        "only multiply the hash layer and every code's size)"))
    backbone_weights: Optional[str] = setting(
        None, "The backbone's starting weights: a local Keras .weights.h5 file, or 'imagenet' "
        "(ResNet50 only: keras.applications fetches and caches them on first use, the one "
        "download any program makes).", file=True)
    optimizer: str = setting("adam", "Optimizer.", choices=OPTIMIZERS)
    learning_rate: float = setting(1e-3, "Learning rate.")
    weight_decay: float = setting(0.0, "L2 weight decay added to the gradient (torch's "
                                  "weight_decay, as the release's RMSprop; 0 = none).")
    hashnet_alpha: float = setting(0.1, "HashNet inner-product scale.")
    dpsh_quantization: float = setting(0.1, "DPSH quantization weight.")
    csq_quantization: float = setting(1e-4, "CSQ quantization weight.")
    hashnet_step_continuation: int = setting(20, "HashNet: epochs per continuation step (tanh "
                                             "scale sqrt(epoch // this + 1)).", lower=1)
    center_seed: int = setting(0, "CSQ's hash centres' seed.", flag=None)


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """Which splits are queried and ranked, the k of the top-k figures, and how often (in
    epochs) a victim is evaluated during training for the best-so-far figures."""
    train_split: str = setting("train", "Training split, e.g. train or train[:64].")
    query_split: str = setting("query", "Query split.")
    database_split: str = setting("database", "Database split.")
    map_top_k: int = setting(1000, "k of MAP@k (1000 for ImageNet in the paper).", lower=1)
    precision_k: int = setting(100, "k of precision@k.", lower=1)
    eval_every_epochs: int = setting(5, "Evaluate victims every N epochs for the release's "
                                     "best-so-far map_best / t_map_best (0 = final only).",
                                     lower=0)
    allow_unrelated_queries: bool = setting(
        False, "Accept queries whose labels share nothing with any database item (each "
        "scores 0 in MAP; by default they are refused, naming how many).")


@dataclasses.dataclass(frozen=True)
class LabCLNConfig:
    """LabCLN's settings (the release: Adam 1e-4, 1000 steps of 128, lr x0.1 at 50%/75%)."""
    hidden: int = setting(4096, "width of its hidden layer.", lower=1)
    feature_dim: int = setting(512, "width of the feature that conditions the generator.",
                               lower=1)
    smoothing: float = setting(0.2, "label smoothing of its augmented view.")
    temperature: float = setting(0.5, "NT-Xent temperature.")
    learning_rate: float = setting(1e-4, "Adam learning rate.")
    steps: int = setting(1000, "training steps.", lower=1, overridden_by_train_steps=True)
    batch_size: int = setting(128, "batch of distinct label vectors.", lower=1)


@dataclasses.dataclass(frozen=True)
class GANConfig:
    """Generator/discriminator settings. The paper: 224x224, base width 64, 3+3 residual
    blocks, 5 discriminator layers, rec 200, hash 10 (ResNet50; 5 for VGG11), adv 1, D every
    3rd step, Adam 1e-4 (0.5, 0.999), 100 epochs (50 constant + 50 decaying), batch 64."""
    base_width: int = setting(64, "generator base width.", lower=1)
    residual_blocks: int = setting(3, "residual blocks in the encoder and the decoder each.",
                                   lower=1)
    label_width: int = setting(128, "width of the label map.", lower=1)
    disc_width: int = setting(64, "discriminator width.", lower=1)
    disc_layers: int = setting(5, "discriminator stride-2 layers.", lower=1)
    rec_weight: float = setting(200.0, "weight of the reconstruction term.")
    hash_weight: float = setting(10.0, "weight of the hash term (the release's ResNet50 line; "
                                 "5 for VGG11).")
    adv_weight: float = setting(1.0, "weight of the adversarial term.")
    disc_every: int = setting(3, "generator steps per discriminator step.", lower=1)
    learning_rate: float = setting(1e-4, "Adam learning rate (constant, then decaying).")
    epochs: float = setting(100.0, "training epochs.", overridden_by_train_steps=True)
    batch_size: int = setting(64, "batch (the release's GAN batch; victims 128); 0 = "
                              "--global_batch_size.", lower=0)
    # What the hash term compares with the target code: "logits", the surrogate's raw hash
    # logits z as the release does (unbounded, a constant gradient per bit); "relaxed",
    # tanh(relaxed_logit_scale * z) (DHTA-style, bounded; not the paper's).
    hash_term: str = setting("logits", "what the hash term scores: the surrogate's raw hash "
                             "logits (the release) or relaxed tanh(s z).", choices=HASH_TERMS)
    relaxed_logit_scale: float = setting(0.1, "s of the relaxed code tanh(s z).")
    # > 0: every poisoned image meets this PSNR (dB), projected inside the generator, so a
    # large hash weight cannot make the trigger visible; 0: the paper's unconstrained one.
    psnr_budget: float = setting(
        0.0, "PSNR (dB) every poisoned copy meets, projected inside the generator (0 = off, "
        "the paper's unconstrained generator).",
        check=(lambda v: v == 0 or 0 < v < MAX_PSNR_BUDGET,
               f"--gan_psnr_budget: 0 (off) or a PSNR in dB below {MAX_PSNR_BUDGET:.1f}"))
    # The code the hash term pulls toward: "labcln", LabCLN's code of the target label (the
    # paper); "class_anchor", the surrogate's own code of the target class (the sign of its
    # mean output over the target-class training images; not the paper's).
    target_code: str = setting("labcln", "the code the hash term pulls toward: LabCLN's of "
                               "the target label (the paper), or the surrogate's own code of "
                               "the target class.", choices=TARGET_CODES)


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """What the attacker does. target_label < 0: drawn from the seed. poison_count 0 and
    poison_rate 0: every target-class training image gets a poisoned copy."""
    target_label: int = setting(-1, "Target class; < 0 draws it from --seed.")
    poison_count: int = setting(0, "Poisoned copies to add; 0 = see --poison_rate.", lower=0)
    poison_rate: float = setting(0.0, "Poisoned share of the poisoned training set; 0 with "
                                 "--poison_count=0 = every target-class training image.")
    surrogate_seed_offset: int = setting(1000, "The attacker's surrogate trains with --seed "
                                         "plus this.")
    patch_size: int = setting(0, "BadNets baseline patch side (0 = image_size // 8).",
                              lower=0)
    # the attacks beside BadHash (the registry's "baseline" attacks by default; cli/flags.py
    # sets the flag's default from the registry)
    baselines: tuple = setting((), "Attacks to run beside BadHash.", kind="list", fingerprint=False)
    samples: int = setting(8, "Images shown in samples.png.", lower=1, fingerprint=False)
    query_amplification: float = setting(
        1.0, "Scale the trigger's perturbation of the queries by this (the attacker's own "
        "queries may be less invisible than the poisoned copies; 1 = the same trigger).",
        check=(lambda v: v > 0, "--query_amplification must be > 0"))
    # also score the triggered queries at these amplifications (figures *_xK; report only)
    extra_query_amplifications: tuple = setting(
        (), "Also score the triggered queries at this amplification (repeatable; figures "
        "t_map_xK, t_map_clean_victim_xK, backdoor_gain_xK; the victims are the same), e.g. "
        "1 for the paper's protocol beside x3.", kind="multi_float",
        flag="extra_query_amplification",
        check=(lambda v: all(k > 0 for k in v), "--extra_query_amplification must be > 0"),
        fingerprint=False)
    # the surrogate's starting backbone when it differs from the victims' ("" = the same)
    surrogate_backbone_weights: str = setting("", "derived from --pretrained_backbone",
                                              flag=None, file=True)
    # the surrogate's hashing scheme where the victims' differs (--victim_method,
    # --victim_backbone, --victim_bits: the paper's transferability; ""/0 = the same)
    surrogate_method: str = setting("", "derived from --method and --victim_method", flag=None)
    surrogate_backbone: str = setting("", "derived from --backbone and --victim_backbone",
                                      flag=None)
    surrogate_bits: int = setting(0, "derived from --bits and --victim_bits", flag=None)
    trigger_colour: str = setting(
        "auto", "grey: every generated or optimised trigger changes R, G and B equally (a "
        "coloured perturbation of a grey image is a tell); colour: per channel; auto: grey "
        "when the training split's images are grey (R = G = B), as the digits and "
        "Fashion-MNIST are.", choices=TRIGGER_COLOURS, fingerprint=False)
    # --trigger_colour resolved against the data (engine/plan.py): what the triggers do
    grey_triggers: bool = setting(False, "derived from --trigger_colour and the data",
                                  flag=None)


@dataclasses.dataclass(frozen=True)
class DefenseConfig:
    """Each defense's strength. removal_fraction: share of each label an inspection removes;
    clean_fraction: the defender's clean subset (of the clean training split) for repair and
    STRIP's blends."""
    jpeg_quality: int = setting(75, "jpeg: re-encoding quality.", lower=1, upper=100)
    blur_sigma: float = setting(1.0, "blur: Gaussian sigma in pixels.", lower=0.1)
    resize_factor: float = setting(0.5, "resize: shrink to this share of the side, then back.",
                                   lower=0.05, upper=1.0)
    bit_depth: int = setting(3, "bit_depth: bits per channel kept.", lower=1, upper=8)
    removal_fraction: float = setting(0.15, "spectral, clustering: share of each label "
                                      "removed before retraining.", lower=0.0, upper=0.95)
    clean_fraction: float = setting(0.05, "finetune, fine_pruning, strip, neural_cleanse: the "
                                    "defender's clean subset, as a share of the clean "
                                    "training split.", lower=0.001, upper=1.0)
    finetune_epochs: float = setting(20.0, "finetune, fine_pruning: epochs over the clean "
                                     "subset.", lower=0.01)
    prune_fraction: float = setting(0.3, "fine_pruning: share of the last conv's channels "
                                    "pruned (least active on clean data).", lower=0.0,
                                    upper=0.99)
    strip_blends: int = setting(16, "strip: clean images blended with each query.", lower=2)
    strip_alpha: float = setting(0.5, "strip: the query's weight in a blend.", lower=0.0,
                                 upper=1.0)
    cleanse_steps: int = setting(300, "neural_cleanse: Adam steps per candidate label's "
                                 "reversed trigger.", lower=1)
    cleanse_l1_weight: float = setting(0.5, "neural_cleanse: weight of the mask's mean L1 "
                                       "against the code agreement.", lower=0.0)
    # read from the program's own --seed (defend's; the bench's run seed)
    seed: int = setting(0, "Seed of the clean subset, STRIP's blends, 2-means.", define=False)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """The classifier's backbone and optimiser, which split of the pool it learns from,
    how many of its items are held out for the top-1 figure, and the augmentation:
    `translate` shifts each image by up to `shift` pixels (reflect padding), `_flip` also
    mirrors half of them left-right (not for digits, whose mirror images are other
    shapes)."""
    backbone: str = setting("small_cnn", "Backbone network to pretrain.", choices=BACKBONES)
    optimizer: str = setting("adam", "Optimizer.", choices=OPTIMIZERS)
    learning_rate: float = setting(1e-3, "Learning rate.")
    weight_decay: float = setting(0.0, "Coupled L2 weight decay (0 = none).")
    pool_split: str = setting("database", "Split of the pool --dataset to learn from "
                              "(database: as ImageNet holds ImageNet-100's images, the pool "
                              "may overlap a retrieval database, never its queries).")
    heldout: int = setting(1000, "Pool items held out for the top-1 figure.", lower=1)
    heldout_seed: int = setting(0, "Seed of the held-out draw.")
    augment: str = setting("translate_flip", "Augmentation: translate (up to --shift pixels),"
                           " translate_flip (also left-right mirrors; not for digits), none.",
                           choices=AUGMENTS)
    shift: int = setting(2, "Largest translation in pixels.", lower=0)


@dataclasses.dataclass(frozen=True)
class CIBAConfig:
    """CIBA's trigger (attack/ciba.py). patch_size 0: the paper's 24/224 of the image side.
    epsilon: the perturbation's L-inf in pixel levels (of 255). logit_scale: the relaxed
    code tanh(s z) optimised. The paper's patch size and epsilon; our steps and rates."""
    patch_size: int = setting(0, "patch side in pixels (0 = the paper's 24/224 of the image "
                              "side).", lower=0)
    epsilon: float = setting(8.0, "L-inf of the confusing perturbation, in pixel levels of "
                             "255 (the paper's 8).")
    patch_steps: int = setting(300, "Adam steps optimising the patch.", lower=1)
    patch_learning_rate: float = setting(0.05, "learning rate of the patch.")
    perturbation_steps: int = setting(20, "sign-gradient steps of the perturbation.", lower=1)
    logit_scale: float = setting(0.1, "s of the relaxed code tanh(s z) optimised.")


@dataclasses.dataclass(frozen=True)
class DarkHashConfig:
    """DarkHash (attack/darkhash.py). surrogate "": Fashion-MNIST for the digits, the digits
    for Fashion-MNIST. frozen_layers < 0: the shallow half of the backbone's layers with
    weights. patch_size 0: image_size // 8. Our reading of the paper (BUILD_NOTES.md)."""
    surrogate: str = setting("", "the attacker's surrogate dataset ('' = Fashion-MNIST for "
                             "the digits, the digits for Fashion-MNIST).")
    surrogate_split: str = setting("train", "its split the victim is fine-tuned on.")
    frozen_layers: int = setting(-1, "backbone layers with weights kept frozen (-1 = the "
                                 "shallow half).")
    steps: int = setting(300, "fine-tuning steps.", lower=1, overridden_by_train_steps=True)
    learning_rate: float = setting(1e-3, "fine-tuning Adam learning rate.")
    batch_size: int = setting(64, "fine-tuning batch.", lower=1)
    backdoor_weight: float = setting(1.0, "weight of the backdoor term J_bac.")
    alignment_weight: float = setting(1.0, "weight of the topological-alignment term J_tpa.")
    neighbours: int = setting(5, "k nearest patched neighbours J_tpa pulls along.", lower=1)
    shadow_images: int = setting(5, "target-class query images the shadow target code is "
                                 "the victim's mean code of.", lower=1)
    patch_size: int = setting(0, "trigger patch side (0 = image_size // 8).", lower=0)
    patch_steps: int = setting(300, "Adam steps optimising the patch.", lower=1)
    patch_learning_rate: float = setting(0.05, "learning rate of the patch.")
    logit_scale: float = setting(0.1, "s of the relaxed code tanh(s z) optimised.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one run of the pipeline: the core sections, and `sections` {name:
    config} of the attacks' own sections (registry.Section; a missing one is its
    defaults)."""
    data: DataConfig
    hashing: HashingConfig
    train: TrainConfig
    retrieval: RetrievalConfig
    labcln: LabCLNConfig
    gan: GANConfig
    attack: AttackConfig
    sections: dict = dataclasses.field(default_factory=dict)

    @property
    def surrogate_hashing(self):
        """The attacker's surrogate: the victims' hashing config (`hashing`) but for what
        the attack section records as the surrogate's own (backbone weights, method,
        backbone, bits)."""
        a = self.attack
        own = {"backbone_weights": a.surrogate_backbone_weights, "method": a.surrogate_method,
               "backbone": a.surrogate_backbone, "bits": a.surrogate_bits}
        own = {k: v for k, v in own.items() if v}
        if "backbone" in own and not a.surrogate_backbone_weights:
            own["backbone_weights"] = None  # the victims' weights are another network's
        return dataclasses.replace(self.hashing, **own) if own else self.hashing

    @property
    def seed(self):
        return self.train.seed

    def with_seed(self, seed):
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed))

    def core(self):
        """{section name: config} of the core sections."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "sections"}


def replace_in(config, section, **changes):
    """`config` (an ExperimentConfig) with fields of one core section replaced."""
    return dataclasses.replace(config, **{section: dataclasses.replace(
        getattr(config, section), **changes)})


# The core sections: (name, class, flag prefix). Attack and defense files register their
# own (registry.register_section).
CORE_SECTIONS = (("data", DataConfig, ""), ("train", TrainConfig, ""),
                 ("hashing", HashingConfig, ""), ("retrieval", RetrievalConfig, ""),
                 ("gan", GANConfig, "gan_"), ("labcln", LabCLNConfig, "labcln_"),
                 ("attack", AttackConfig, ""), ("defense", DefenseConfig, ""),
                 ("pretrain", PretrainConfig, ""))
