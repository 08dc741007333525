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
flags.DEFINE_integer("jpeg_quality", d.jpeg_quality, "jpeg: re-encoding quality.",
                     lower_bound=1, upper_bound=100)
flags.DEFINE_float("blur_sigma", d.blur_sigma, "blur: Gaussian sigma in pixels.",
                   lower_bound=0.1)
flags.DEFINE_float("resize_factor", d.resize_factor, "resize: shrink to this share of the "
                   "side, then back.", lower_bound=0.05, upper_bound=1.0)
flags.DEFINE_integer("bit_depth", d.bit_depth, "bit_depth: bits per channel kept.",
                     lower_bound=1, upper_bound=8)
flags.DEFINE_float("removal_fraction", d.removal_fraction, "spectral, clustering: share of "
                   "each label removed before retraining.", lower_bound=0.0, upper_bound=0.95)
flags.DEFINE_float("clean_fraction", d.clean_fraction, "finetune, fine_pruning, strip: the "
                   "defender's clean subset, as a share of the clean training split.",
                   lower_bound=0.001, upper_bound=1.0)
flags.DEFINE_float("finetune_epochs", d.finetune_epochs, "finetune, fine_pruning: epochs "
                   "over the clean subset.", lower_bound=0.01)
flags.DEFINE_float("prune_fraction", d.prune_fraction, "fine_pruning: share of the last "
                   "conv's channels pruned (least active on clean data).", lower_bound=0.0,
                   upper_bound=0.99)
flags.DEFINE_integer("strip_blends", d.strip_blends, "strip: clean images blended with each "
                     "query.", lower_bound=2)
flags.DEFINE_float("strip_alpha", d.strip_alpha, "strip: the query's weight in a blend.",
                   lower_bound=0.0, upper_bound=1.0)
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
