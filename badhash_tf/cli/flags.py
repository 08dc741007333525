"""absl flags generated from the config dataclasses (config.py; the attacks' and defenses'
own sections from the registry): one flag per field, named prefix + field, with the
field's help, bounds and checks. Program-specific flags stay in each program."""

import dataclasses

from absl import flags

from badhash_tf import config, registry

FLAGS = flags.FLAGS


def define_section(config_class, prefix="", title="", flag_values=FLAGS, defaults=None):
    """Defines a flag for every field of `config_class` (metadata "flag": None skips one)
    with its default (or `defaults`[field]) -> the flag names defined."""
    defined = []
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        name = meta.get("flag", prefix + field.name)
        if name is None or "help" not in meta or meta.get("define") is False:
            continue
        default = (defaults or {}).get(field.name, field.default)
        text = f"{title}: {meta['help']}" if title else meta["help"]
        bounds = {k: meta[key] for k, key in (("lower_bound", "lower"),
                                              ("upper_bound", "upper")) if key in meta}
        if "choices" in meta:
            text += f" One of: {', '.join(meta['choices'])}."
            flags.DEFINE_string(name, default, text, flag_values=flag_values)
            flags.register_validator(
                name, lambda v, c=meta["choices"]: v in c,
                f"--{name}: choose one of {', '.join(meta['choices'])}", flag_values=flag_values)
        elif meta.get("kind") == "list":
            flags.DEFINE_list(name, list(default), text, flag_values=flag_values)
        elif meta.get("kind") == "multi_float":
            flags.DEFINE_multi_float(name, list(default), text, flag_values=flag_values)
        elif isinstance(default, bool):
            flags.DEFINE_bool(name, default, text, flag_values=flag_values)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, text, flag_values=flag_values, **bounds)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, text, flag_values=flag_values, **bounds)
        else:
            flags.DEFINE_string(name, default, text, flag_values=flag_values)
        if "check" in meta:
            flags.register_validator(name, meta["check"][0], meta["check"][1],
                                     flag_values=flag_values)
        defined.append(name)
    return defined


def define_data_flags():
    define_section(config.DataConfig)


def define_train_flags():
    define_section(config.TrainConfig)


def define_hashing_flags():
    """The victim's hashing model and retrieval protocol, and where its backbone starts."""
    define_section(config.HashingConfig)
    define_section(config.RetrievalConfig)
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


def define_attack_flags():
    """The attacker's flags: the attack section, LabCLN's, the generator's, and every
    attack's own section (registry)."""
    baselines = registry.attacks(role="baseline")
    define_section(config.AttackConfig, defaults={"baselines": baselines})
    FLAGS["baselines"].help = (f"Attacks to run beside BadHash: {', '.join(registry.attacks())}"
                               f" (default: {', '.join(baselines)}).")
    why = ("when it differs from the attacker's surrogate's (the paper's transferability: "
           "the clean reference victim and every backdoored victim use it; default: the "
           "surrogate's, ")
    flags.DEFINE_enum("victim_method", None, config.METHODS,
                      f"The victims' deep-hashing loss {why}--method).")
    flags.DEFINE_enum("victim_backbone", None, config.BACKBONES,
                      f"The victims' backbone {why}--backbone; their starting weights: "
                      "--victim_pretrained_backbone).")
    flags.DEFINE_integer("victim_bits", None, f"The victims' code length {why}--bits).",
                         lower_bound=1, upper_bound=config.MAX_BITS)
    define_section(config.LabCLNConfig, "labcln_", "LabCLN")
    define_section(config.GANConfig, "gan_", "Generator/discriminator")
    for name, section in registry.sections().items():
        if name in _attack_sections():
            define_section(section.config_class, section.prefix, section.title)


def _attack_sections():
    return {s for n in registry.attacks() for s in registry.attack(n).sections}


def define_defense_flags():
    """The defenses' settings (defend, bench) and every defense's own section; --seed is
    each program's own."""
    define_section(config.DefenseConfig)
    for name, section in registry.sections().items():
        if name not in _attack_sections():
            define_section(section.config_class, section.prefix, section.title)


def define_pretrain_flags():
    """The pretraining program's own flags (beside the data and training flags: --dataset
    names the pool)."""
    define_section(config.PretrainConfig)


def define_grid_flags(seed_dir, what, compare):
    """The flags every grid program (frontier, bench, grid) shares: --seeds (each into
    `seed_dir`), --shard, --output_dir (required; `what` it holds) and --compare_with
    (`compare`: what it takes and does)."""
    flags.DEFINE_list("seeds", [], f"Seeds (each into {seed_dir}); default: --seed.")
    flags.DEFINE_string("shard", "", "i/N: run every N-th cell from the i-th only (0 <= i < "
                        "N; one shard per machine); a run without it gathers the finished "
                        "cells.")
    flags.DEFINE_string("output_dir", None, f"Directory of {what} (reruns reuse finished "
                        "cells).")
    flags.DEFINE_string("compare_with", None, compare)
    flags.mark_flag_as_required("output_dir")
