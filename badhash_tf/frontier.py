"""The attack's stealth-strength frontier: BadHash with a PSNR-budgeted generator against
every baseline at the same budgets, over seeds (see grids/stealth_frontier.py).

python -m badhash_tf.frontier --preset=digits --psnr_budgets=30,26,23,20 \
    --seeds=0,1,2 --output_dir=DIR
python -m badhash_tf.frontier ... --shard=i/N   (one of N machines; then once without)
Writes DIR/frontier.json, frontier.md, frontier.png (each figure a mean over seeds with its
95% interval); DIR/seed_N/ holds the shared stages and DIR/seed_N/psnr_B/<method>/ each
cell (reused on rerun once finished). With --shard=i/N only every N-th cell runs (a Slurm
job array or a Kubernetes Indexed Job runs the shards); a run without --shard gathers.
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-frontier")  # before TensorFlow loads

import os
import time

from absl import flags, logging

from badhash_tf import io_utils, presets, registry
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.console import run_program
from badhash_tf.engine.stages import Runner
from badhash_tf.grids import stealth_frontier
from badhash_tf.render import frontier_report
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
flags.DEFINE_list("psnr_budgets", ["30", "26", "23", "20"], "PSNR budgets (dB) every "
                  "poisoned copy must meet, highest (most invisible) first.")
flags.DEFINE_list("methods", list(registry.attacks(role="frontier")), "Attacks per budget, "
                  f"of those that can meet one: {', '.join(registry.attacks(budgeted=True))}.")
cli_flags.define_grid_flags(
    "DIR/seed_N", "the frontier", "Another frontier's directory or frontier.json (e.g. the "
    "other backbone regime, or a reference in results/) to tabulate in frontier.md, draw "
    "beside this one in frontier.png, and mark each figure inside or outside its 95% "
    "interval.")
presets.define_flag(module_name=__name__)  # last: it lists the presets these flags take
FLAGS = flags.FLAGS
PROGRAM = "badhash_tf.frontier"


def main(argv):
    startup.start_program(argv, FLAGS)
    budgets = startup.parse_list("psnr_budgets", FLAGS.psnr_budgets, float, "numbers",
                                 "budget")
    seeds, shard = startup.parse_grid_flags(FLAGS)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    startup.check_replicas(FLAGS, strategy)
    with startup.output_dir_lock(FLAGS.output_dir, strategy, PROGRAM, shard):
        start = time.time()
        with startup.usage_errors():  # every split, seed and cell, once, before any work
            compare = FLAGS.compare_with and stealth_frontier.load_comparison(
                FLAGS.compare_with)
            backbones = configs.resolve_backbones(FLAGS)
            config = configs.experiment_config(FLAGS, backbones, baselines=())
            plans = stealth_frontier.make_plans({s: config.with_seed(s) for s in seeds},
                                                budgets, FLAGS.methods, FLAGS.output_dir)
        runner = Runner(strategy, config.train.overwrite, PROGRAM)
        if runner.chief and not shard:
            io_utils.write_json(os.path.join(FLAGS.output_dir, "flags.json"),
                                startup.used_flags(FLAGS))
        stealth_frontier.run(plans, runner, shard)
        if shard:
            logging.info("shard %d/%d done in %.0f s; run without --shard to gather "
                         "frontier.json", shard[0], shard[1], time.time() - start)
            return
        result = stealth_frontier.gather(plans, budgets, FLAGS.methods,
                                         {"seconds": round(time.time() - start, 2)},
                                         compare or None)
        if runner.chief:
            io_utils.write_json(os.path.join(FLAGS.output_dir, "frontier.json"), result)
            frontier_report.write_all(FLAGS.output_dir, result,
                                      compare and compare["result"])
        for name in stealth_frontier.subjects():
            if name in result["summary"]:
                verdict = result["summary"][name]
                logging.info("%s's backdoor learned at %s dB, not at %s dB; at least every "
                             "baseline at %s dB by t-MAP, at %s dB by backdoor gain", name,
                             verdict["learned_at"], verdict["not_learned_at"],
                             verdict["beats_baselines_at"], verdict["gain_beats_baselines_at"])
        logging.info("-> %s/frontier.md, %s/frontier.png", FLAGS.output_dir, FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
