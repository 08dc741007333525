"""The attack's stealth-strength frontier: BadHash with a PSNR-budgeted generator against
every baseline at the same budgets, over seeds (see attack/frontier.py).

python -m badhash_tf.frontier --flagfile=flags/digits.cfg --psnr_budgets=30,26,23,20 \
    --seeds=0,1,2 --output_dir=DIR
Writes DIR/frontier.json, frontier.md, frontier.png; DIR/seed_N/ holds the shared stages
and DIR/seed_N/psnr_B/<method>/ each cell (skipped on rerun once its cell.json exists).
"""

from absl import app, flags, logging

from badhash_tf import cli_flags, console, io_utils
from badhash_tf.attack import experiment, frontier
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
flags.DEFINE_list("psnr_budgets", ["30", "26", "23", "20"], "PSNR budgets (dB) every "
                  "poisoned copy must meet, highest (most invisible) first.")
flags.DEFINE_list("seeds", [], "Seeds (each into DIR/seed_N); default: --seed.")
flags.DEFINE_list("methods", list(frontier.METHODS), f"Attacks per budget: "
                  f"{', '.join(frontier.METHODS)}.")
flags.DEFINE_string("output_dir", None, "Directory of the frontier (reruns skip finished "
                    "cells).")
flags.DEFINE_string("compare_with", None, "Another frontier's directory (e.g. the other "
                    "backbone regime) to tabulate in frontier.md and draw beside this one in "
                    "frontier.png.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def _floats(name, values):
    try:
        return [float(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name}={','.join(values)}: give numbers") from None


def main(argv):
    cli_flags.start_program(argv, FLAGS)
    budgets = _floats("psnr_budgets", FLAGS.psnr_budgets)
    seeds = cli_flags.parse_seeds(FLAGS.seeds) or [FLAGS.seed]
    try:
        frontier.check_budgets(budgets)
        frontier.check_methods(FLAGS.methods)
        compare = FLAGS.compare_with and frontier.load_comparison(FLAGS.compare_with)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    cli_flags.check_backbone_weights(FLAGS)
    configs = {seed: cli_flags.experiment_config(FLAGS, seed, baselines=()) for seed in seeds}
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    cli_flags.check_replicas(FLAGS, strategy)
    with cli_flags.output_dir_lock(FLAGS.output_dir, strategy):
        try:  # every split and every seed's stages, before any work
            for config in configs.values():  # (each seed may draw another target label)
                experiment.check_data(config)
            frontier.check_all(configs, budgets, FLAGS.methods, FLAGS.output_dir, strategy)
        except (ValueError, FileNotFoundError) as e:
            raise app.UsageError(str(e)) from None
        if distribute.is_chief(strategy):
            io_utils.write_json(f"{FLAGS.output_dir}/flags.json", cli_flags.used_flags(FLAGS))
        result = frontier.run_frontier(configs, budgets, FLAGS.methods, FLAGS.output_dir,
                                       strategy, compare=compare or None)
        for name in frontier.BADHASH:
            if name in result["summary"]:
                verdict = result["summary"][name]
                logging.info("%s's backdoor learned at %s dB, not at %s dB; at least every "
                             "baseline at %s dB by t-MAP, at %s dB by backdoor gain", name,
                             verdict["learned_at"], verdict["not_learned_at"],
                             verdict["beats_baselines_at"], verdict["gain_beats_baselines_at"])
        logging.info("-> %s/frontier.md, %s/frontier.png", FLAGS.output_dir, FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
