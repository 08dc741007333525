"""What every program does at start-up: our console, no stray arguments, the line saying
what --train_steps overrides, the run directory's one-writer lock (taken right after the
flags are parsed, before any check that loads data), the record of which program made a
run directory, and the parsing of list flags (seeds, budgets, shards)."""

import contextlib
import dataclasses
import json
import os
import sys

from absl import app, flags, logging

from badhash_tf import config, console, io_utils, registry
from badhash_tf.engine import cells
from badhash_tf.engine.layout import RUN_JSON
from badhash_tf.training import distribute


def start_program(argv, flag_values):
    """Our console, no stray arguments (an app.UsageError), and the --train_steps line."""
    console.configure(flag_values.verbosity)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    warn_train_steps(flag_values)


def _overridden():
    """The flags --train_steps > 0 overrides (fields marked overridden_by_train_steps)."""
    names = []
    sections = [(c, p) for _, c, p in config.CORE_SECTIONS] + [
        (s.config_class, s.prefix) for s in registry.sections().values()]
    for config_class, prefix in sections:
        for field in dataclasses.fields(config_class):
            if field.metadata.get("overridden_by_train_steps"):
                names.append(prefix + field.name)
    return names


def warn_train_steps(flag_values):
    """Says at start-up which flag wins: --train_steps > 0 runs every stage for that many
    steps, so the epoch and step counts of this program's stages are not used."""
    steps = flag_values.train_steps if "train_steps" in flag_values else 0
    unused = [f"--{n}={flag_values[n].value:g}" for n in _overridden() if n in flag_values]
    if steps > 0 and unused:
        logging.warning("--train_steps=%d runs every stage for %d steps: %s not used (the "
                        "stage fingerprints record them as overridden)", steps, steps,
                        ", ".join(unused) + (" is" if len(unused) == 1 else " are"))


@contextlib.contextmanager
def output_dir_lock(directory, strategy, program, shard=None):
    """The run directory's one-writer lock (io_utils.run_dir_lock; the chief's, as only it
    writes there; one per shard with --shard) around a program's work, and the directory's
    record of the program that made it (another program's directory is refused, naming
    both). A held lock, a --output_dir that is a file, or another program's directory is
    an app.UsageError naming it. Take it right after parsing the flags."""
    chief = distribute.is_chief(strategy)
    name = io_utils.lock_name(shard)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(io_utils.run_dir_lock(directory, chief, logging.warning,
                                                      name=name, disposable=(RUN_JSON,)))
            if chief:
                claim_run_dir(directory, program)
        except (io_utils.RunDirLockedError, NotADirectoryError, ValueError) as e:
            raise app.UsageError(str(e)) from None
        except OSError as e:  # read-only, no permission, disk full
            raise app.UsageError(f"--output_dir={directory}: cannot write there "
                                 f"({e.strerror or e}: {e.filename or directory})") from None
        yield


def run_single_stage(runner, stage, program, used, make):
    """A program whose run directory is one stage (train_victim, pretrain): a finished one
    is reused as it is, never rewritten; otherwise the directory is claimed for `program`
    (again, if --overwrite moved it aside), the flags `used` recorded, and `make()` run
    under the stage's claim -> the stage's result."""
    with runner.claim(stage) as decision:
        if decision.state == cells.FINISHED:
            logging.info("%s: finished earlier, reused", stage.directory)
            return io_utils.read_json(stage.result_path)
        if runner.chief:
            claim_run_dir(stage.directory, program)
            io_utils.write_json(os.path.join(stage.directory, "flags.json"), used)
        return make()


def claim_run_dir(directory, program):
    """Records `program` as the maker of `directory` (run.json), or checks that it made it.
    Raises ValueError naming both programs for another program's directory. (A directory
    without the record, e.g. one a Makefile prepared with links, is taken.)"""
    path = os.path.join(directory, RUN_JSON)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                made_by = json.load(f)["program"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path} does not read back ({type(e).__name__}); it says which "
                             "program made the directory: restore it or use another "
                             "--output_dir") from None
        if made_by != program:
            raise ValueError(f"--output_dir={directory} was made by `{made_by}`; `{program}` "
                             "writes its own run directories: give another --output_dir")
        return
    io_utils.write_json(path, {"program": program})


def parse_victim_flags(argv, flag_values=None):
    """absl's flag parsing for the victim-only programs (train_victim), with a hint where an
    attack preset was given: its attack flag named and the victim presets said. A bad flag
    ends the program as absl's parser does (one line, exit code 1)."""
    flag_values = flag_values or flags.FLAGS
    try:
        return flag_values(argv)
    except flags.Error as e:
        message = str(e)
        name = getattr(e, "flagname", "")
        attack = {f.metadata.get("flag", f.name) for f in dataclasses.fields(config.AttackConfig)}
        prefixes = ("gan_", "labcln_") + tuple(s.prefix for s in registry.sections().values())
        if name.startswith(prefixes) or name in attack:
            message += (f": --{name} is an attack flag (pipeline, frontier, probe_triggers), "
                        "likely from an attack preset such as digits; this program trains a "
                        "victim alone and takes the victim presets: digits_victim, "
                        "fashion_victim, imagenet100, ... (--helpshort lists them)")
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def parse_list(flag, values, kind, what, item):
    """A list flag's values -> distinct values of `kind` (int or float). Raises
    app.UsageError naming the flag for a value that does not parse (`what` it takes) or an
    `item` given twice."""
    given = ",".join(values)
    try:
        parsed = [kind(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{flag}={given}: give {what}") from None
    if len(set(parsed)) != len(parsed):
        raise app.UsageError(f"--{flag}={given} repeats a {item}: each {item} is one run "
                             "directory")
    return parsed


def parse_seeds(values):
    """--seeds values -> distinct non-negative ints. Raises app.UsageError naming --seeds."""
    seeds = parse_list("seeds", values, int, "integers", "seed")
    if any(s < 0 for s in seeds):
        raise app.UsageError(f"--seeds={','.join(values)}: seeds must be >= 0 (NumPy's and "
                             "Keras' seeds)")
    return seeds


def parse_shard(text):
    try:
        return cells.parse_shard(text)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def parse_grid_flags(flag_values):
    """A grid program's --seeds (default --seed) and --shard -> (seeds, shard or None).
    Raises app.UsageError naming the flag, and for --overwrite with --shard."""
    seeds = parse_seeds(flag_values.seeds) or [flag_values.seed]
    shard = parse_shard(flag_values.shard)
    if shard and flag_values.overwrite:
        raise app.UsageError("--overwrite with --shard: shards would move aside each other's "
                             "stages; run it once without --shard")
    return seeds, shard


def check_replicas(flag_values, strategy):
    """Every batch flag must split evenly over the strategy's replicas (checked before any
    work). Raises app.UsageError naming the flag."""
    replicas = strategy.num_replicas_in_sync
    for name in ("global_batch_size", "gan_batch_size"):
        if name in flag_values and flag_values[name].value % replicas:
            raise app.UsageError(f"--{name}={flag_values[name].value} does not split over the "
                                 f"{replicas} replicas of --strategy={flag_values.strategy}: "
                                 f"give a multiple of {replicas}")


def used_flags(flag_values):
    """-> {name: value} of every flag this program defines (for flags.json)."""
    return {name: flag_values[name].value
            for module, defined in flag_values.flags_by_module_dict().items()
            if module.startswith("badhash_tf") or module.endswith("__main__")
            for name in (f.name for f in defined)}


@contextlib.contextmanager
def usage_errors():
    """Start-up checks of the library (ValueError, FileNotFoundError naming the flag, file
    and line) as one line without a traceback (app.UsageError)."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        raise app.UsageError(str(e)) from None
