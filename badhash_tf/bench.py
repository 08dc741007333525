"""The backdoor bench: every attack (BadHash, badhash_anchor, CIBA x4, patch, SIG, Narcissus,
DarkHash, and any registered one) on one or more datasets and seeds, then every defense,
in one leaderboard (see grids/leaderboard.py).

python -m badhash_tf.bench --preset=digits --output_dir=DIR
python -m badhash_tf.bench --presets=digits,fashion \
    --seeds=0,1,2 --output_dir=DIR
python -m badhash_tf.bench ... --shard=i/N   (one of N machines; then once without)
Writes DIR/bench.json, bench.md, bench.html (tables and heatmaps in one static page; means
over seeds with 95% intervals, attacks in tiers); DIR/<dataset>/seed_N/ holds each attack
run and its defenses/. A rerun reuses finished cells; the leaderboard gathers every
dataset under DIR.
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-bench")  # before TensorFlow loads

import copy
import os
import re
import time

from absl import app, flags, logging

from badhash_tf import io_utils, presets, registry
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.config import DefenseConfig
from badhash_tf.console import run_program
from badhash_tf.engine import defenses as defense_engine
from badhash_tf.engine.layout import BADHASH
from badhash_tf.engine.stages import Runner
from badhash_tf.grids import leaderboard
from badhash_tf.render import attack_report, defense_report, leaderboard_page
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
cli_flags.define_defense_flags()
flags.DEFINE_list("attacks", list(registry.attacks(role="bench")), "Attacks: "
                  f"{', '.join(registry.attacks())} (badhash among them: every bench run is "
                  "an attack run of BadHash).")
flags.DEFINE_list("defenses", list(registry.defenses()), f"Defenses on every attack: "
                  f"{', '.join(registry.defenses())} ('' = none).")
flags.DEFINE_list("presets", [], "Presets (shipped names, as --preset takes, or flagfiles), "
                  "one per dataset (each read over this command's defaults, then this "
                  "command's own flags over it); default: this command's flags alone, one "
                  "dataset.")
cli_flags.define_grid_flags(
    "DIR/<dataset>/seed_N", "the bench", "A reference bench.json or its directory (e.g. in "
    "results/): each figure marked inside or outside its 95% interval.")
presets.define_flag(module_name=__name__)  # last: it lists the presets these flags take
FLAGS = flags.FLAGS
PROGRAM = "badhash_tf.bench"


def _given(flag_values):
    """This command's own flags (not presets'), serialised for a re-parse over a preset."""
    return [flag_values[name].serialize() for name in flag_values
            if flag_values[name].present and name not in ("flagfile", "presets")]


def preset_flags(preset):
    """FLAGS with `preset` read over the defaults, then this command's own flags over it.
    Raises app.UsageError naming --presets."""
    values = copy.deepcopy(FLAGS)
    values.unparse_flags()
    try:
        values(["bench", *presets.read(preset, FLAGS), *_given(FLAGS)])
    except (flags.Error, OSError) as e:
        raise app.UsageError(f"--presets={preset}: {e}") from None
    return values


def dataset_name(dataset):
    """A directory name for a dataset (list:ROOT -> list_ROOT with '/' replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")


def main(argv):
    startup.start_program(argv, FLAGS)
    seeds, shard = startup.parse_grid_flags(FLAGS)
    with startup.usage_errors():
        leaderboard.check_bench_attacks(FLAGS.attacks)
        if FLAGS.defenses:
            defense_engine.check_defenses(FLAGS.defenses)
    attacks = tuple(a for a in FLAGS.attacks if a != BADHASH)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    startup.check_replicas(FLAGS, strategy)
    with startup.output_dir_lock(FLAGS.output_dir, strategy, PROGRAM, shard):
        start, configs_ = time.time(), {}
        for values in [preset_flags(p) for p in FLAGS.presets] or [FLAGS]:
            name = dataset_name(values.dataset)
            if name in configs_:
                raise app.UsageError(f"--presets: two presets attack --dataset={values.dataset}")
            configs_[name] = configs.experiment_config(
                values, configs.resolve_backbones(values), baselines=attacks)
        defense_config = configs.from_flags(DefenseConfig, FLAGS)
        with startup.usage_errors():  # every dataset, seed and cell, once, before any work
            reference = FLAGS.compare_with and leaderboard.load_reference(FLAGS.compare_with)
            bench = leaderboard.Bench(configs_, seeds, FLAGS.defenses, defense_config,
                                      FLAGS.output_dir)
        runner = Runner(strategy, FLAGS.overwrite, PROGRAM)
        if not shard:
            io_utils.write_json(os.path.join(FLAGS.output_dir, "flags.json"),
                                startup.used_flags(FLAGS))
        bench.run(runner, shard)
        if shard:
            logging.info("shard %d/%d done in %.0f s; run without --shard to gather the "
                         "leaderboard", shard[0], shard[1], time.time() - start)
            return
        for layout, result, defended in bench.write_seed_reports():
            attack_report.write_all(layout, result)
            if defended is not None:
                defense_report.write_all(layout.defenses, defended)
        board = leaderboard.leaderboard(FLAGS.output_dir)
        board.update(seconds=round(time.time() - start, 2), presets=FLAGS.presets,
                     attacks=FLAGS.attacks)
        if reference:
            leaderboard.compare(board, reference)
        io_utils.write_json(os.path.join(FLAGS.output_dir, "bench.json"), board)
        leaderboard_page.write_all(FLAGS.output_dir, board)
    for dataset, rows in board["datasets"].items():
        logging.info("%s: %s", dataset, " > ".join(
            f"{r['attack']} {r.get('backdoor_gain', float('nan')):.3f} (tier {r['tier']})"
            for r in rows["rows"]))
    logging.info("-> %s/bench.html, bench.md, bench.json (%.0f s)", FLAGS.output_dir,
                 board["seconds"])


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
