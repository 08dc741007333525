"""The programs' flags -> the library's config dataclasses (each built once), and where the
victims' and the surrogate's backbones start (--backbone_weights, --pretrained_backbone,
--victim_pretrained_backbone: resolved and loaded once, checked before any work)."""

import dataclasses
import os

from absl import app, logging

from badhash_tf import config, presets, registry
from badhash_tf.models.hashing import HashingModel
from badhash_tf.training.pretrain import PRETRAIN_JSON, check_compatible, read_pretrained


def from_flags(config_class, flag_values, prefix=""):
    """Builds `config_class` from the flags named like its fields (with `prefix`, or the
    field's own flag name)."""
    values = {}
    for field in dataclasses.fields(config_class):
        name = field.metadata.get("flag", prefix + field.name)
        if name is not None and name in flag_values:
            value = flag_values[name].value
            values[field.name] = tuple(value) if isinstance(field.default, tuple) else value
    return config_class(**values)


@dataclasses.dataclass(frozen=True)
class Backbones:
    """Where the victims' and the attacker's surrogate's backbones start (a weights file,
    "imagenet", or None for a random start)."""
    victims: object
    surrogate: object


def resolve_backbones(flag_values):
    """--backbone_weights, --pretrained_backbone and --victim_pretrained_backbone ->
    Backbones, each pretrain output read and checked against the run and each weights file
    loaded once into this backbone; warns where a paper backbone starts from scratch.
    Raises app.UsageError naming the flag."""
    f = flag_values
    if f.backbone_weights and (f.pretrained_backbone or f.victim_pretrained_backbone):
        raise app.UsageError("--backbone_weights and --pretrained_backbone / "
                             "--victim_pretrained_backbone both name a starting backbone: "
                             "give one")
    if f.victim_pretrained_backbone and not f.pretrained_backbone:
        raise app.UsageError("--victim_pretrained_backbone needs --pretrained_backbone (the "
                             "attacker's): a mismatch study starts both from pretrained "
                             "backbones")
    victim = {"bits": f.bits, "backbone": f.backbone, **victim_scheme(f)}
    if victim["backbone"] != f.backbone and (
            f.backbone_weights or (f.pretrained_backbone and not f.victim_pretrained_backbone)):
        raise app.UsageError(
            f"--victim_backbone={victim['backbone']} differs from the surrogate's "
            f"--backbone={f.backbone}, so they cannot start from one backbone "
            f"({'--backbone_weights' if f.backbone_weights else '--pretrained_backbone'}): "
            "give the victims their own --victim_pretrained_backbone (with "
            "--pretrained_backbone for the surrogate), or start both from scratch")
    files, given = {}, {}
    for flag in ("pretrained_backbone", "victim_pretrained_backbone"):
        if flag in f and f[flag].value:
            value = f[flag].value
            directory = presets.backbone_dir(value)  # a bare name: the cache's backbone
            if directory != value and not os.path.isfile(os.path.join(directory,
                                                                      PRETRAIN_JSON)):
                raise app.UsageError(
                    f"--{flag}={value}: no finished pretrained backbone at {directory} (the "
                    f"cache: ${presets.CACHE_ENV}, else ~/.cache/badhash_tf)"
                    f"{presets.make_backbone_hint(value)}")
            try:
                record = read_pretrained(directory, f"--{flag}")
                check_compatible(record, f"--{flag}={f[flag].value}",
                                 victim["backbone"] if flag.startswith("victim") else f.backbone,
                                 f.image_size, f.dataset, f.query_split)
            except ValueError as e:
                raise app.UsageError(str(e)) from None
            files[flag] = record["weights"]
            given.setdefault(record["weights"], f"--{flag}={f[flag].value}")
    surrogate = files.get("pretrained_backbone") or f.backbone_weights
    found = Backbones(files.get("victim_pretrained_backbone") or surrogate, surrogate)
    _check_weights(f, {(found.victims, victim["bits"], victim["backbone"]),
                       (found.surrogate, f.bits, f.backbone)}, given)
    return found


def _check_weights(f, starts, given):
    """Each weights file must hold its backbone's weights: loaded once, now. `starts`:
    (weights file or None, bits, backbone) of the victims and the surrogate; `given`: the
    flag that named each file, when not --backbone_weights (a pretrain directory)."""
    paths = {path for path, _, _ in starts if path}
    for path, bits, backbone in sorted(starts, key=str):
        if not path:
            continue
        try:
            HashingModel(bits, backbone, f.image_size, path)
        except (ValueError, FileNotFoundError) as e:
            message = str(e)
            if path in given:  # name the flag the user gave, not the file inside it
                message = message.replace(f"--backbone_weights={path}",
                                          f"{given[path]} (its {os.path.basename(path)})")
            raise app.UsageError(message) from None
        except Exception as e:  # noqa: BLE001  keras.applications' fetch of "imagenet"
            # raises a bare Exception when there is no network: say so, in one line
            if path != "imagenet":
                raise
            raise app.UsageError(f"--backbone_weights={path}: keras.applications could not "
                                 f"fetch the ImageNet weights ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200]}); give a local .weights.h5 "
                                 "file where there is no internet") from None
    if paths:
        return
    if f.require_backbone_weights:
        raise app.UsageError(
            f"--backbone_weights is required here (--require_backbone_weights): the paper's "
            f"victims and surrogate fine-tune an ImageNet-pretrained {f.backbone}. Give a "
            "local Keras .weights.h5 file (or --pretrained_backbone=DIR), or "
            "--norequire_backbone_weights to train from scratch knowingly.")
    if f.backbone in ("vgg11", "resnet50"):
        logging.warning("--backbone=%s starts from random weights (no --backbone_weights): "
                        "the paper fine-tunes ImageNet-pretrained backbones, and its figures "
                        "are not comparable with a from-scratch run.", f.backbone)


VICTIM_SCHEME = ("method", "backbone", "bits")  # --victim_X may differ from the surrogate's


def victim_scheme(flag_values):
    """{field: value} of the victims' --victim_method/_backbone/_bits that differ from the
    surrogate's --method/--backbone/--bits (none in programs without them)."""
    f = flag_values
    return {k: f[f"victim_{k}"].value for k in VICTIM_SCHEME
            if f"victim_{k}" in f and f[f"victim_{k}"].value is not None
            and f[f"victim_{k}"].value != f[k].value}


def hashing_config(flag_values, backbones):
    """HashingConfig from the flags, starting from the victims' backbone."""
    return dataclasses.replace(from_flags(config.HashingConfig, flag_values),
                               backbone_weights=backbones.victims)


def experiment_config(flag_values, backbones, baselines=None):
    """The attack programs' flags -> ExperimentConfig (the attacks' own sections from the
    registry); `baselines` (a tuple) replaces --baselines when given."""
    attack = from_flags(config.AttackConfig, flag_values)
    if baselines is not None:
        attack = dataclasses.replace(attack, baselines=tuple(baselines))
    if backbones.surrogate != backbones.victims:  # "" = the surrogate starts as the victims
        attack = dataclasses.replace(attack, surrogate_backbone_weights=backbones.surrogate)
    hashing = hashing_config(flag_values, backbones)
    victim = victim_scheme(flag_values)
    if victim:  # the victims' own scheme; the surrogate's recorded in the attack section
        attack = dataclasses.replace(attack, **{f"surrogate_{k}": getattr(hashing, k)
                                                for k in victim})
        hashing = dataclasses.replace(hashing, **victim)
    sections = {name: from_flags(s.config_class, flag_values, s.prefix)
                for name, s in registry.sections().items()
                if any(f"{s.prefix}{field.name}" in flag_values
                       for field in dataclasses.fields(s.config_class))}
    return config.ExperimentConfig(
        data=from_flags(config.DataConfig, flag_values),
        hashing=hashing,
        train=from_flags(config.TrainConfig, flag_values),
        retrieval=from_flags(config.RetrievalConfig, flag_values),
        labcln=from_flags(config.LabCLNConfig, flag_values, "labcln_"),
        gan=from_flags(config.GANConfig, flag_values, "gan_"), attack=attack,
        sections=sections)
