"""What defines a stage's result: a flat {"section.field": value} of the config fields it
depends on (and the identity of the data it reads, "data.identity"), recorded beside the
stage (engine/cells.py) and compared on every rerun, so a run directory never mixes stages
made with different flags or data.

Fields that do not change results (metadata fingerprint=False: how the loop is cut, where
it runs, where data is cached, what the report shows) are left out; fields naming a file a
stage starts from (metadata file=True) are recorded by their path and their bytes' sha256,
and compared by the bytes only (the same backbone reached through another path, e.g. a
relative cache from another directory, is the same input); counts that --train_steps > 0
overrides are recorded as overridden.
"""

import dataclasses
import functools
import os
import re

from badhash_tf import config as config_module
from badhash_tf import io_utils, registry

DATA_IDENTITY = "data.identity"


def _fields(config):
    return {f.name: f for f in dataclasses.fields(config)}


def flatten(**sections):
    """Config dataclasses by section name -> {"section.field": value}, without the fields
    that do not change results; with a "train" section of train_steps > 0, the fields it
    overrides as "(--train_steps=N)"."""
    steps = getattr(sections.get("train"), "train_steps", 0)
    flat = {}
    for section, config in sections.items():
        for key, field in _fields(config).items():
            meta, value = field.metadata, getattr(config, key)
            if meta.get("fingerprint") is False:
                continue
            if meta.get("file") and value and os.path.isfile(value):
                value = _file_identity(value)
            if steps and meta.get("overridden_by_train_steps"):
                value = f"(--train_steps={steps})"
            flat[f"{section}.{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def flatten_experiment(config):
    """An ExperimentConfig's core sections and every registered attack section, flat."""
    sections = {name: value for name, value in config.core().items()}
    for name, section in registry.sections().items():
        sections[name] = config.sections.get(name) or section.config_class()
    return flatten(**sections)


def _file_identity(path):
    """A weights file as a fingerprint records it: its path and its bytes' sha256, hashed
    once per version of the file (flatten runs for every stage of every seed and cell)."""
    stat = os.stat(path)
    return _identity(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _identity(path, size, mtime_ns):
    del size, mtime_ns  # (the cache key: a rewritten file is hashed again)
    return f"{path} (sha256 {io_utils.file_sha256(path)[:16]})"


_FILE_IDENTITY = re.compile(r"^.* \(sha256 ([0-9a-f]{16})\)$")


def _comparable(value):
    """A fingerprint value as two fingerprints compare it: a file's identity ("PATH (sha256
    H)") by its bytes' digest H alone, anything else as it is."""
    match = _FILE_IDENTITY.match(value) if isinstance(value, str) else None
    return f"sha256 {match.group(1)}" if match else value


def defaults(**sections):
    """The default of every field of the given configs' classes, flattened as `flatten`
    does: a field a newer version added counts as unchanged in a stage recorded before it
    existed when it keeps its default."""
    return flatten(**{name: type(config)() for name, config in sections.items()})


def experiment_defaults(config):
    """defaults() of every section flatten_experiment records."""
    return defaults(**{**config.core(), **{n: s.config_class()
                                          for n, s in registry.sections().items()}})


def select(flat, *prefixes):
    """The entries of `flat` whose key starts with one of `prefixes` (a section "data." or a
    single field "hashing.bits")."""
    return {k: v for k, v in flat.items() if k.startswith(prefixes)}


def _prefixes():
    prefixes = {name: prefix for name, _, prefix in config_module.CORE_SECTIONS}
    prefixes.update({n: s.prefix for n, s in registry.sections().items()})
    return prefixes


_FLAG_NAMES = {  # fields set by other flags than their own names
    "hashing.backbone_weights": "--pretrained_backbone / --victim_pretrained_backbone / "
                                "--backbone_weights (the victims' backbone)",
    "attack.surrogate_backbone_weights": "--pretrained_backbone (the surrogate's backbone)",
    "attack.extra_query_amplifications": "--extra_query_amplification",
    "attack.grey_triggers": "--trigger_colour (grey triggers, resolved against the data)"}


def flag_name(key):
    """"gan.hash_weight" -> "--gan_hash_weight"; "train.seed" -> "--seed";
    "data.identity.query" -> "the data of --query_split"."""
    if key in _FLAG_NAMES:
        return _FLAG_NAMES[key]
    if key.startswith(DATA_IDENTITY + "."):
        return f"the data of --{key[len(DATA_IDENTITY) + 1:]}_split"
    section, field = key.split(".", 1)
    return f"--{_prefixes().get(section, section + '.')}{field}"


def differences(recorded, now, default=None):
    """The differing entries of two fingerprints, as "--flag recorded -> now" (the data's
    identity: which of its parts changed); a field missing from the record (added since)
    matches its default."""
    default = default or {}
    recorded = {**{k: default[k] for k in now if k not in recorded and k in default},
                **recorded}
    out = []
    for key in sorted(set(recorded) | set(now)):
        before, after = recorded.get(key, "(unset)"), now.get(key, "(unset)")
        if _comparable(before) == _comparable(after):
            continue
        if key.startswith(DATA_IDENTITY) and isinstance(before, dict) and \
                isinstance(after, dict):
            parts = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            out.append(f"{flag_name(key)}: {', '.join(parts)} changed")
        else:
            out.append(f"{flag_name(key)} {before!r} -> {after!r}")
    return out
