"""What defines each stage's result, recorded beside the run and checked on every rerun, so
a run directory never mixes stages made with different flags.

A fingerprint is a flat {"section.field": value} of the config fields a stage depends on.
`check_and_record` compares the fingerprints of this run's stages with those recorded in
`stages.json`; a finished or partial stage whose recorded flags differ stops the run before
any work, with a message naming the stage and each differing flag, unless `overwrite`
moves that stage's directory aside (never deleted). Fields that do not change results are
left out (IGNORED).
"""

import dataclasses
import functools
import json
import os
import time

from absl import logging

from badhash_tf import io_utils

RECORD = "stages.json"
# Fields that do not change a stage's result: how the loop is cut into tf.function calls,
# where it runs, where data is cached or read from, what the report shows, the rerun mode.
IGNORED = frozenset({
    "train.steps_per_loop", "train.strategy", "train.logical_cpus", "train.jit_compile",
    "train.overwrite", "data.cache", "data.data_dir", "data.source_dir", "attack.samples",
    "attack.baselines", "attack.extra_query_amplifications"})
# Fields naming a file whose bytes a stage starts from: recorded by content (sha256), so a
# pretrained backbone rewritten in place is a changed flag, not a silent new start.
FILES = frozenset({"hashing.backbone_weights", "attack.surrogate_backbone_weights"})
_FLAG_PREFIX = {"gan": "gan_", "labcln": "labcln_", "ciba": "ciba_", "darkhash": "darkhash_"}
_FLAG_NAMES = {  # fields set by other flags than their own names
    "hashing.backbone_weights": "--pretrained_backbone / --victim_pretrained_backbone / "
                                "--backbone_weights (the victims' backbone)",
    "attack.surrogate_backbone_weights": "--pretrained_backbone (the surrogate's backbone)"}


class StageMismatchError(ValueError):
    """A finished or partial stage was made with other flags than this run's."""


# Fields --train_steps > 0 overrides (every stage then runs that many steps): recorded as
# overridden, so the fingerprint says what ran rather than a value nothing used.
OVERRIDDEN_BY_TRAIN_STEPS = ("train.epochs", "gan.epochs", "labcln.steps", "darkhash.steps")


def flatten(**sections):
    """Config dataclasses by section name -> {"section.field": value}, minus IGNORED; with
    a "train" section of train_steps > 0, the fields it overrides as "(--train_steps=N)"."""
    steps = getattr(sections.get("train"), "train_steps", 0)
    flat = {}
    for section, config in sections.items():
        for key, value in dataclasses.asdict(config).items():
            name = f"{section}.{key}"
            if name in FILES and value and os.path.isfile(value):
                value = _file_identity(value)
            if steps and name in OVERRIDDEN_BY_TRAIN_STEPS:
                value = f"(--train_steps={steps})"
            if name not in IGNORED:
                flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def _file_identity(path):
    """A weights file as a fingerprint records it: its path and its bytes' sha256, hashed
    once per version of the file (flatten runs for every stage of every seed and cell)."""
    stat = os.stat(path)
    return _identity(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _identity(path, size, mtime_ns):
    del size, mtime_ns  # (the cache key: a rewritten file is hashed again)
    return f"{path} (sha256 {io_utils.file_sha256(path)[:16]})"


def check_single_stage(directory, overwrite, chief, **sections):
    """check_and_record for a program whose whole --output_dir is one stage (train_victim,
    pretrain), fingerprinted by the config dataclasses `sections`."""
    check_and_record(directory, {directory: flatten(**sections)}, overwrite, chief,
                     defaults(**sections))


def defaults(**sections):
    """The default of every field of the given configs' classes, flattened as `flatten`
    does: a field a newer version added counts as unchanged in a stage recorded before it
    existed when it keeps its default."""
    return flatten(**{name: type(config)() for name, config in sections.items()})


def select(flat, *prefixes):
    """The entries of `flat` whose key starts with one of `prefixes` (a section "data." or a
    single field "hashing.bits")."""
    return {k: v for k, v in flat.items() if k.startswith(prefixes)}


def flag_name(key):
    """"gan.hash_weight" -> "--gan_hash_weight"; "train.seed" -> "--seed"."""
    if key in _FLAG_NAMES:
        return _FLAG_NAMES[key]
    section, field = key.split(".", 1)
    return f"--{_FLAG_PREFIX.get(section, '')}{field}"


def _differences(recorded, now, default):
    """The differing flags, as "--flag recorded -> now"; a field missing from the record
    (added since) matches its default."""
    recorded = {**{k: default[k] for k in now if k not in recorded and k in default},
                **recorded}
    keys = sorted(set(recorded) | set(now))
    return [f"{flag_name(k)} {recorded.get(k, '(unset)')!r} -> {now.get(k, '(unset)')!r}"
            for k in keys if recorded.get(k) != now.get(k)]


def check_and_record(root, stages, overwrite=False, chief=True, default=None):
    """stages: {stage directory: fingerprint} of this run, directories under `root`;
    `default`: the fields' defaults (see `defaults`). Raises StageMismatchError naming
    every stage on disk whose recorded fingerprint differs (with `overwrite`: moves each
    aside to <dir>.replaced-<time> with a warning). Then the chief records every stage's
    fingerprint in root/stages.json."""
    path = os.path.join(root, RECORD)
    recorded = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    mismatched = {}
    for directory, fingerprint in stages.items():
        name = os.path.relpath(directory, root)
        if name in recorded and os.path.exists(directory):
            diff = _differences(recorded[name], fingerprint, default or {})
            if diff:
                mismatched[directory] = diff
    if mismatched and not overwrite:
        raise StageMismatchError(
            f"{root} holds stages made with other flags: " + "; ".join(
                f"{os.path.relpath(d, root)}/ ({', '.join(diff)})"
                for d, diff in mismatched.items()) +
            ". Rerun with the recorded flags, use another --output_dir, or pass --overwrite "
            "to move those stages aside and start them afresh.")
    if not chief:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for directory, diff in mismatched.items():
        aside = f"{directory}.replaced-{stamp}"
        os.replace(directory, aside)
        logging.warning("--overwrite: %s moved aside to %s (%s)", directory, aside,
                        ", ".join(diff))
    recorded.update({os.path.relpath(d, root): f for d, f in stages.items()})
    io_utils.write_json(path, recorded)
