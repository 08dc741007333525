"""Defenses against every attack variant of a pipeline (or frontier) run, each beside the
undefended result (see defense/harness.py).

python -m badhash_tf.defend --run_dir=DIR [--defenses=jpeg,blur,...] [--output_dir=OUT]
Writes OUT/defenses.json, defenses.md, defenses.png (OUT defaults to DIR/defenses); each
(variant, defense) result is kept in OUT/<variant>/<defense>/ and skipped on rerun. The
run's own files are only read.
"""

import os

from absl import app, flags, logging

from badhash_tf import cli_flags, console, io_utils
from badhash_tf.defense import harness
from badhash_tf.training import distribute

d = harness.DefenseConfig()
flags.DEFINE_string("run_dir", None, "A finished pipeline or frontier run directory.")
flags.DEFINE_list("defenses", list(harness.DEFENSES), "Defenses to run: "
                  f"{', '.join(harness.DEFENSES)}.")
flags.DEFINE_list("variants", [], "Attack variants to defend, as paths under --run_dir "
                  "(badhash, ciba, seed_0/psnr_20/patch, ...); default every finished one.")
flags.DEFINE_string("output_dir", "", "Where the results go (default RUN_DIR/defenses).")
cli_flags.define_defense_flags()
flags.DEFINE_integer("seed", d.seed, "Seed of the clean subset, STRIP's blends, 2-means.")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    console.configure(FLAGS.verbosity)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.run_dir, "defenses")
    try:  # unknown defenses, a run without the needed stages: before any work
        variants = harness.check_run_dir(FLAGS.run_dir, FLAGS.defenses, output_dir,
                                         FLAGS.variants)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    logging.info("%d attack variants under %s; defenses %s", len(variants), FLAGS.run_dir,
                 ", ".join(FLAGS.defenses))
    config = cli_flags.from_flags(harness.DefenseConfig, FLAGS)
    strategy = distribute.make_strategy("default")
    with cli_flags.output_dir_lock(output_dir, strategy):
        io_utils.write_json(os.path.join(output_dir, "flags.json"), cli_flags.used_flags(FLAGS))
        harness.run_defenses(FLAGS.run_dir, FLAGS.defenses, config, output_dir, strategy,
                             FLAGS.variants)
    logging.info("-> %s/defenses.md, %s/defenses.png", output_dir, output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
