"""The shipped presets (the NAME.cfg files beside this module, package data; the checkout's
flags/ links to this directory): `--preset=NAME` on any program's command line, from any
directory, stands for the preset's flags at that place (later flags override them), and a
preset includes another with a `--preset=` line of its own. Also the cache where presets
find what they name by name (the public pretrained backbone), outside any checkout."""

import os
import sys

from absl import flags

PRESET_DIR = os.path.dirname(os.path.abspath(__file__))
SUFFIX = ".cfg"
CACHE_ENV = "BADHASH_TF_CACHE"
FLAG = "preset"


def names():
    """The shipped presets' names, sorted."""
    return sorted(f[:-len(SUFFIX)] for f in os.listdir(PRESET_DIR) if f.endswith(SUFFIX))


def path(name):
    """A preset's file. Raises flags.Error naming --preset and the presets for another."""
    found = _file(name)
    if not found:
        raise flags.Error(f"--preset={name}: no such preset; the presets are "
                          f"{', '.join(names())} (a file of your own: --flagfile=PATH)")
    return found


def _value(args, i):
    """(preset name, tokens used) when args[i] is --preset=NAME, -preset=NAME or
    --preset NAME, else (None, 1)."""
    arg = args[i]
    for prefix in ("--", "-"):
        if arg.startswith(f"{prefix}{FLAG}="):
            return arg.split("=", 1)[1], 1
        if arg == prefix + FLAG and i + 1 < len(args):
            return args[i + 1], 2
    return None, 1


def _lines(name, stack):
    """The flags of preset `name`, its own --preset lines replaced by theirs."""
    if name in stack:
        raise flags.Error(f"--preset={name}: includes itself (through {' -> '.join(stack)})")
    lines = flags.FlagValues().read_flags_from_files([f"--flagfile={path(name)}"],
                                                     force_gnu=False)
    out, i = [], 0
    while i < len(lines):
        included, used = _value(lines, i)
        out.extend(lines[i:i + used] if included is None else _lines(included, stack + [name]))
        i += used
    return out


def expand(args, flag_values=None):
    """Command-line arguments (without the program's name) -> the same with each
    --flagfile read (absl's own reading, relative to the working directory) and each
    --preset=NAME followed by that preset's flags. Raises flags.Error naming a preset that
    does not exist."""
    flag_values = flag_values if flag_values is not None else flags.FLAGS
    args = flag_values.read_flags_from_files(list(args), force_gnu=False)
    out, i = [], 0
    while i < len(args):
        if args[i] == "--":
            out.extend(args[i:])
            break
        name, used = _value(args, i)
        out.extend(args[i:i + used])
        if name is not None:
            out.extend(_lines(name, []))
        i += used
    return out


def read(item, flag_values=None):
    """A shipped preset's name or a flagfile's path -> its flags (expand). Raises
    flags.Error for a file that cannot be read or a preset that does not exist."""
    given = f"--{FLAG}={item}" if _file(item) else f"--flagfile={item}"
    return [a for a in expand([given], flag_values) if a != given]


def flag_names(name):
    """The flags preset `name` sets (its includes' too), without dashes or "no"."""
    found = set()
    for line in _lines(name, []):
        found.add(line.lstrip("-").split("=", 1)[0])
    return found


def taken_by(flag_values):
    """The presets a program takes: those whose every flag it defines."""
    def defined(flag):
        return flag in flag_values or (flag.startswith("no") and flag[2:] in flag_values)
    return [n for n in names() if all(defined(f) for f in flag_names(n))]


def define_flag(flag_values=None, module_name=None):
    """--preset, listing the presets the program takes (define it after the program's
    other flags). `module_name`: the program's module (__name__), so --helpshort shows it."""
    flag_values = flag_values if flag_values is not None else flags.FLAGS
    if module_name == "__main__":  # as absl names a `python -m` program's module
        module_name = sys.argv[0]
    taken = taken_by(flag_values)
    flags.DEFINE_string(
        FLAG, None, f"A shipped preset, by name, from any directory: {', '.join(taken)} "
        f"(files in {PRESET_DIR}, the checkout's flags/). Its flags stand where it is given; "
        "later flags override them.", flag_values=flag_values, module_name=module_name)


def cache_dir():
    """Where made things are kept for presets to find by name: $BADHASH_TF_CACHE, else
    $XDG_CACHE_HOME/badhash_tf (~/.cache/badhash_tf)."""
    if os.environ.get(CACHE_ENV):  # as given: a relative cache stays relative (fingerprints
        return os.environ[CACHE_ENV]  # record the backbone's path)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "badhash_tf")


def backbone_dir(value):
    """--pretrained_backbone's value -> a directory: a bare name (no "/") is a backbone in
    the cache (cache_dir()/pretrain/NAME, made by `badhash-pretrain --preset=pretrain_NAME`),
    anything else a path."""
    if os.sep in value or value in (".", ".."):
        return value
    return os.path.join(cache_dir(), "pretrain", value)


def make_backbone_hint(value):
    """The line saying which command makes the cached backbone `value`, or "" for a path."""
    if value != backbone_dir(value) and _file(f"pretrain_{value}"):
        return (f"; make it with `badhash-pretrain --preset=pretrain_{value} "
                f"--output_dir={backbone_dir(value)}` (badhash-demo makes it when missing)")
    return ""


def _file(name):
    """A preset's file, or "" when there is no such preset."""
    found = os.path.join(PRESET_DIR, name + SUFFIX)
    return found if os.sep not in name and os.path.isfile(found) else ""
