"""The backdoor bench: every attack (BadHash, badhash_anchor, CIBA x4, patch, SIG, Narcissus,
DarkHash) on one or more datasets and seeds, then every defense, in one leaderboard (see
leaderboard/bench.py).

python -m badhash_tf.bench --flagfile=flags/digits.cfg --output_dir=DIR
python -m badhash_tf.bench --presets=flags/digits.cfg,flags/fashion.cfg \
    --seeds=0,1,2 --output_dir=DIR
Writes DIR/bench.json, bench.md, bench.html (tables and heatmaps in one static page);
DIR/<dataset>/seed_N/ holds each pipeline run and its defenses/. A rerun skips finished
attacks and defenses; the leaderboard gathers every dataset under DIR.
"""

import copy
import re

from absl import app, flags, logging

from badhash_tf import cli_flags, console, io_utils
from badhash_tf.leaderboard import bench
from badhash_tf.defense import harness
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
cli_flags.define_defense_flags()
flags.DEFINE_list("attacks", list(bench.ATTACKS), f"Attacks: {', '.join(bench.ATTACKS)} "
                  "(badhash always: the pipeline's own).")
flags.DEFINE_list("defenses", list(harness.DEFENSES), f"Defenses on every attack: "
                  f"{', '.join(harness.DEFENSES)} ('' = none).")
flags.DEFINE_list("presets", [], "Flagfiles, one per dataset (each read over this command's "
                  "defaults, then this command's own flags over it); default: this command's "
                  "flags alone, one dataset.")
flags.DEFINE_list("seeds", [], "Seeds (each into DIR/<dataset>/seed_N); default: --seed.")
flags.DEFINE_string("output_dir", None, "The bench directory (reruns skip finished cells).")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


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
        values(["bench", f"--flagfile={preset}", *_given(FLAGS)])
    except (flags.Error, OSError) as e:
        raise app.UsageError(f"--presets={preset}: {e}") from None
    return values


def dataset_name(dataset):
    """A directory name for a dataset (list:ROOT -> list_ROOT with '/' replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")


def main(argv):
    cli_flags.start_program(argv, FLAGS)
    seeds = cli_flags.parse_seeds(FLAGS.seeds) or [FLAGS.seed]
    try:
        bench.check_attacks(FLAGS.attacks)
        if FLAGS.defenses:
            harness.check_defenses(FLAGS.defenses)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    attacks = tuple(a for a in FLAGS.attacks if a != bench.BASELINE_VARIANT)
    configs = {}
    for values in [preset_flags(p) for p in FLAGS.presets] or [FLAGS]:
        cli_flags.check_backbone_weights(values)
        name = dataset_name(values.dataset)
        if name in configs:
            raise app.UsageError(f"--presets: two presets attack --dataset={values.dataset}")
        configs[name] = cli_flags.experiment_config(values, baselines=attacks)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    cli_flags.check_replicas(FLAGS, strategy)
    defense_config = cli_flags.from_flags(harness.DefenseConfig, FLAGS)
    with cli_flags.output_dir_lock(FLAGS.output_dir, strategy):
        try:  # every dataset's splits and flags, every seed's stages: before any work
            bench.check_bench(configs, seeds, FLAGS.defenses, FLAGS.output_dir, strategy)
        except (ValueError, FileNotFoundError) as e:
            raise app.UsageError(str(e)) from None
        io_utils.write_json(f"{FLAGS.output_dir}/flags.json", cli_flags.used_flags(FLAGS))
        result = bench.run_bench(configs, seeds, FLAGS.defenses, defense_config,
                                 FLAGS.output_dir, strategy,
                                 record={"presets": FLAGS.presets, "attacks": FLAGS.attacks})
    for dataset, board in result["datasets"].items():
        logging.info("%s: %s", dataset, " > ".join(
            f"{r['attack']} {r.get('backdoor_gain', float('nan')):.3f}" for r in board["rows"]))
    logging.info("-> %s/bench.html, bench.md, bench.json (%.0f s)", FLAGS.output_dir,
                 result["seconds"])


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
