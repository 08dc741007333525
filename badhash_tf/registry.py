"""The registries of attacks, defenses and config sections: every program, flag
definition, fingerprint, frontier and bench reads them, and nothing else lists their names.

An attack file (badhash_tf/attack/*.py) or defense file (badhash_tf/defense/*.py) registers
its spec(s) when imported; every module of those two packages is imported on the first
look-up, so adding one is adding a file. Modules named in the environment variable
BADHASH_TF_PLUGINS (comma-separated, importable) are imported too: a user's own attack or
defense, registered the same way, runs in every program without changing this package.
"""

import dataclasses
import importlib
import os
import pkgutil
from typing import Callable, Optional

PLUGINS = "BADHASH_TF_PLUGINS"
POISONING = "clean-label poisoning"
DATA_FREE = "data-free (trained model)"
CONTROL = "control (no backdoor)"
# the defaults lists an attack belongs to: the pipeline's --baselines, the bench's
# --attacks, the frontier's --methods, probe_triggers' --probes; "subject": the method under
# study (BadHash and its anchor variant), whose verdicts the frontier states against the
# others, its baselines
ROLES = ("baseline", "bench", "frontier", "probe", "subject")
DEFENSE_KINDS = ("transform", "inspection", "repair", "detector")


@dataclasses.dataclass(frozen=True)
class Section:
    """A config section an attack or defense reads: its dataclass (fields made with
    config.setting), the prefix of its flags, and a title for their help."""
    name: str
    config_class: type
    prefix: str
    title: str


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One attack. `trigger(ctx)` -> attack.triggers.Trigger for a poisoning attack (ctx:
    engine.stages.AttackContext); `implant(ctx)` -> attack.triggers.Implant for a data-free
    one (its backdoored victim made without poisoned data); `control(ctx)` -> the figures
    and artifacts of a cell without a backdoor that is scored and defended like an attack
    (attack/clean.py). `configure(config)` -> the
    ExperimentConfig its stages run with (e.g. a hash weight of 0). `fingerprint`: config
    keys (sections "gan." or fields "gan.psnr_budget") its stages depend on beyond the
    victim's; `sections`: names of its own config sections. `amplified`: queries carry the
    poison trigger scaled by --query_amplification (else its own query trigger as is).
    `budgeted`: it can be made to meet a PSNR budget (ctx.budget), so the frontier may run
    it. `uses_labcln`: its trigger is conditioned on LabCLN. `roles`: the default lists it
    is in (ROLES). `order`: its place in tables and default lists."""
    name: str
    summary: str
    trigger: Optional[Callable] = None
    implant: Optional[Callable] = None
    control: Optional[Callable] = None
    configure: Optional[Callable] = None
    check: Optional[Callable] = None  # (ExperimentConfig) -> None, raises ValueError
    # (ExperimentConfig) -> {key: (DataConfig, split spec, flag)}: other data it reads
    reads: Optional[Callable] = None
    fingerprint: tuple = ()
    sections: tuple = ()
    amplified: bool = True
    budgeted: bool = False
    uses_labcln: bool = False
    roles: frozenset = frozenset()
    order: int = 100

    @property
    def threat(self):
        return DATA_FREE if self.implant else CONTROL if self.control else POISONING

    @property
    def poisons(self):
        return self.trigger is not None


@dataclasses.dataclass(frozen=True)
class DefenseSpec:
    """One defense. `run(defender, out)` -> its figures (defender: engine.defenses.Defender;
    `out` a directory for what it trains). `kind`: one of DEFENSE_KINDS. `fields`: the
    DefenseConfig fields (and `sections`: its own sections) its result depends on.
    `needs_poisoned_set`: it inspects the poisoned training data (not applicable to a
    data-free attack). `order`: its place in tables and default lists."""
    name: str
    summary: str
    kind: str
    run: Callable
    fields: tuple = ()
    sections: tuple = ()
    needs_poisoned_set: bool = False
    order: int = 100


_ATTACKS, _DEFENSES, _SECTIONS = {}, {}, {}
_loaded = False


def register_section(section):
    """Registers an attack's or defense's own config section (once per name)."""
    known = _SECTIONS.get(section.name)
    if known and known != section:
        raise ValueError(f"config section {section.name!r} is registered twice")
    _SECTIONS[section.name] = section
    return section


def register_attack(spec):
    """Adds an attack (its name unique across attacks)."""
    if spec.name in _ATTACKS:
        raise ValueError(f"attack {spec.name!r} is registered twice")
    if sum(f is not None for f in (spec.trigger, spec.implant, spec.control)) != 1:
        raise ValueError(f"attack {spec.name!r}: give exactly one of trigger, implant, "
                         "control")
    unknown = set(spec.roles) - set(ROLES)
    if unknown:
        raise ValueError(f"attack {spec.name!r}: unknown roles {sorted(unknown)}")
    _ATTACKS[spec.name] = spec
    return spec


def register_defense(spec):
    """Adds a defense (its name unique across defenses)."""
    if spec.name in _DEFENSES:
        raise ValueError(f"defense {spec.name!r} is registered twice")
    if spec.kind not in DEFENSE_KINDS:
        raise ValueError(f"defense {spec.name!r}: kind {spec.kind!r} is not one of "
                         f"{', '.join(DEFENSE_KINDS)}")
    _DEFENSES[spec.name] = spec
    return spec


def load():
    """Imports every module of badhash_tf.attack and badhash_tf.defense (their specs
    register) and the plugins named in BADHASH_TF_PLUGINS, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in ("badhash_tf.attack", "badhash_tf.defense"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            importlib.import_module(f"{package}.{info.name}")
    for name in filter(None, (p.strip() for p in os.environ.get(PLUGINS, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"{PLUGINS}={os.environ[PLUGINS]}: cannot import {name} "
                              f"({e})") from None


def attacks(role=None, budgeted=None):
    """Registered attack names in their order, those of `role` (and able to meet a budget,
    when `budgeted`) only when given."""
    load()
    specs = sorted(_ATTACKS.values(), key=lambda s: (s.order, s.name))
    return tuple(s.name for s in specs if (role is None or role in s.roles)
                 and (budgeted is None or s.budgeted == budgeted))


def attack(name):
    load()
    return _ATTACKS[name]


def defenses(kind=None):
    """Registered defense names in their order (of `kind` only, when given)."""
    load()
    specs = sorted(_DEFENSES.values(), key=lambda s: (s.order, s.name))
    return tuple(s.name for s in specs if kind is None or s.kind == kind)


def defense(name):
    load()
    return _DEFENSES[name]


def sections():
    """The registered attack and defense sections, by name."""
    load()
    return dict(sorted(_SECTIONS.items()))
