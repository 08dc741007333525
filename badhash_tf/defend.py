"""Defenses against every attack of a pipeline (or frontier, or bench) run, each beside the
undefended result (see engine/defenses.py; the defenses themselves: badhash_tf/defense/).

python -m badhash_tf.defend --run_dir=DIR [--defenses=jpeg,blur,...] [--output_dir=OUT]
Writes OUT/defenses.json, defenses.md, defenses.png (OUT defaults to DIR/defenses); each
(attack, defense) result is kept in OUT/<attack>/<defense>/ and reused on rerun (made
again when its attack was; refused, naming them, when made with other settings). The
run's own files are only read.
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-defend", "defenses")  # before TensorFlow loads

import os

from absl import flags, logging

from badhash_tf import io_utils, registry
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.config import DefenseConfig
from badhash_tf.console import run_program
from badhash_tf.engine import defenses
from badhash_tf.engine.stages import Runner
from badhash_tf.render import defense_report
from badhash_tf.training import distribute

flags.DEFINE_string("run_dir", None, "A finished pipeline, frontier or bench run directory.")
flags.DEFINE_list("defenses", list(registry.defenses()), "Defenses to run: "
                  f"{', '.join(registry.defenses())}.")
flags.DEFINE_list("variants", [], "Attack variants to defend, as paths under --run_dir "
                  "(badhash, ciba, seed_0/psnr_20/patch, ...); default every finished one.")
flags.DEFINE_string("output_dir", "", "Where the results go (default RUN_DIR/defenses).")
cli_flags.define_defense_flags()
flags.DEFINE_integer("seed", DefenseConfig().seed, "Seed of the clean subset, STRIP's "
                     "blends, 2-means.")
flags.DEFINE_bool("overwrite", False, "Start afresh every result made with other defense "
                  "settings: moved aside to <dir>.replaced-<time>, never deleted.")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS
PROGRAM = "badhash_tf.defend"


def main(argv):
    startup.start_program(argv, FLAGS)
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.run_dir, "defenses")
    strategy = distribute.make_strategy("default")
    config = configs.from_flags(DefenseConfig, FLAGS)
    with startup.output_dir_lock(output_dir, strategy, PROGRAM):
        with startup.usage_errors():  # unknown defenses, a run without the needed stages
            plan = defenses.plan_defenses(FLAGS.run_dir, FLAGS.defenses, config, output_dir,
                                          FLAGS.variants, FLAGS.overwrite)
        logging.info("%d attack variants under %s; defenses %s", len(plan.variants),
                     FLAGS.run_dir, ", ".join(FLAGS.defenses))
        io_utils.write_json(os.path.join(output_dir, "flags.json"), startup.used_flags(FLAGS))
        results = defenses.run_defenses(plan, Runner(strategy, FLAGS.overwrite, PROGRAM))
        result = defenses.gather(plan, results)
        io_utils.write_json(os.path.join(output_dir, "defenses.json"), result)
        defense_report.write_all(output_dir, result)
    logging.info("-> %s/defenses.md, %s/defenses.png", output_dir, output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
