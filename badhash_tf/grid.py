"""The paper's experiments as grids over seeds (grids/paper_grids.py): transferability
across hashing schemes, code length, poisoned copies, ablations.

python -m badhash_tf.grid --grid=transfer --preset=digits --seeds=0,1,2 --output_dir=DIR
python -m badhash_tf.grid --grid=bits --grid_bits=16,32,64 ...
python -m badhash_tf.grid --grid=poison --grid_poison=quarter,half,all,50 ...
python -m badhash_tf.grid --grid=ablation ...
python -m badhash_tf.grid ... --shard=i/N   (one of N machines; then once without)
Writes DIR/grid.json, grid.md, grid.png (each figure a mean over seeds with its 95%
interval); DIR/seed_N/<cell>/ holds each cell's stages (reused on rerun once finished).
--compare_with=results/X/grid.json marks each figure inside or outside the reference's
interval.
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-grid")  # before TensorFlow loads

import os
import time

from absl import flags, logging

from badhash_tf import io_utils, presets, stats
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.config import METHODS
from badhash_tf.console import run_program
from badhash_tf.engine.stages import Runner
from badhash_tf.grids import paper_grids
from badhash_tf.render import grid_report
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
flags.DEFINE_enum("grid", None, paper_grids.GRIDS, "Which experiment: transfer (surrogate "
                  "scheme x victim scheme), bits (code length), poison (poisoned copies), "
                  "ablation (BadHash, no LabCLN, no hash loss).")
flags.DEFINE_list("grid_methods", list(METHODS), "transfer: the hashing methods of the "
                  "surrogates and the victims.")
flags.DEFINE_list("grid_backbones", [], "transfer: the backbones crossed with "
                  "--grid_methods (default: --backbone only).")
flags.DEFINE_list("grid_bits", ["16", "32", "64"], "bits: the code lengths.")
flags.DEFINE_list("grid_poison", ["quarter", "half", "all", "50"], "poison: poisoned copies "
                  "as shares of the target class's training images (quarter, half, all) or "
                  "counts (CIBA's 40-60).")
flags.mark_flag_as_required("grid")
cli_flags.define_grid_flags(
    "DIR/seed_N", "the grid", "A reference grid.json or its directory (e.g. in results/): "
    "each figure marked inside or outside its 95% interval.")
presets.define_flag(module_name=__name__)  # last: it lists the presets these flags take
FLAGS = flags.FLAGS
PROGRAM = "badhash_tf.grid"


def main(argv):
    startup.start_program(argv, FLAGS)
    seeds, shard = startup.parse_grid_flags(FLAGS)
    bits = startup.parse_list("grid_bits", FLAGS.grid_bits, int, "integers", "code length")
    options = {"methods": FLAGS.grid_methods, "backbones": FLAGS.grid_backbones,
               "bits": bits, "poison": FLAGS.grid_poison}
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    startup.check_replicas(FLAGS, strategy)
    with startup.output_dir_lock(FLAGS.output_dir, strategy, PROGRAM, shard):
        start = time.time()
        with startup.usage_errors():  # every split, seed and cell, once, before any work
            reference = FLAGS.compare_with and paper_grids.load_reference(
                FLAGS.compare_with, FLAGS.grid)
            config = configs.experiment_config(FLAGS, configs.resolve_backbones(FLAGS),
                                               baselines=())
            plans = paper_grids.make_plans(FLAGS.grid, {s: config.with_seed(s) for s in seeds},
                                           options, FLAGS.output_dir)
        runner = Runner(strategy, config.train.overwrite, PROGRAM)
        if runner.chief and not shard:
            io_utils.write_json(os.path.join(FLAGS.output_dir, "flags.json"),
                                startup.used_flags(FLAGS))
        paper_grids.run(plans, runner, shard)
        if shard:
            logging.info("shard %d/%d done in %.0f s; run without --shard to gather grid.json",
                         shard[0], shard[1], time.time() - start)
            return
        result = paper_grids.gather(FLAGS.grid, plans, {"seconds": round(time.time() - start,
                                                                          2)})
        if reference:
            inside, outside = stats.compare_rows(result["rows"], reference["rows"],
                                                 ("cell", "attack"), grid_report.COMPARED)
            result["compare"] = {"source": reference["source"], "seeds": reference["seeds"],
                                 "inside": inside, "outside": outside}
        if runner.chief:
            io_utils.write_json(os.path.join(FLAGS.output_dir, "grid.json"), result)
            grid_report.write_all(FLAGS.output_dir, result)
        for row in result["rows"]:
            if "backdoor_gain" in row:
                logging.info("%s %s: t-MAP %s, backdoor gain %s (%d seeds)", row["cell"],
                             row["attack"], stats.format_interval(row["t_map"],
                                                                  row["t_map_ci"]),
                             stats.format_interval(row["backdoor_gain"],
                                                   row["backdoor_gain_ci"]), row["seeds"])
        logging.info("-> %s/grid.md, %s/grid.png", FLAGS.output_dir, FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
