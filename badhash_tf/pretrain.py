"""Pretrains a hashing backbone as a classifier on a public pool, for --pretrained_backbone
(the paper's surrogate and victims fine-tune one shared ImageNet-pretrained backbone).

python -m badhash_tf.pretrain --preset=pretrain_fashion --output_dir=DIR
Writes DIR/backbone.weights.h5, pretrain.json (pool, split, epochs, held-out top-1),
pretrain.md, flags.json, checkpoints and summaries/. A rerun resumes or reuses it; one with
other flags or data stops, naming them (--overwrite moves the old one aside).
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-pretrain")  # before TensorFlow loads

from absl import flags, logging

from badhash_tf import fingerprints, presets
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.config import DataConfig, PretrainConfig, TrainConfig
from badhash_tf.console import run_program
from badhash_tf.data import identity, inputs
from badhash_tf.engine import cells
from badhash_tf.engine.stages import Runner
from badhash_tf.training import distribute
from badhash_tf.training.pretrain import PRETRAIN_JSON, pretrain_backbone, split_heldout

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_pretrain_flags()
flags.DEFINE_string("output_dir", None, "Directory of the pretrained backbone.")
flags.mark_flag_as_required("output_dir")
presets.define_flag(module_name=__name__)  # last: it lists the presets these flags take
FLAGS = flags.FLAGS
PROGRAM = "badhash_tf.pretrain"


def main(argv):
    startup.start_program(argv, FLAGS)
    data, config = configs.from_flags(DataConfig, FLAGS), configs.from_flags(
        PretrainConfig, FLAGS)
    train = configs.from_flags(TrainConfig, FLAGS)
    strategy = distribute.make_strategy(train.strategy, train.logical_cpus)
    startup.check_replicas(FLAGS, strategy)
    sections = {"data": data, "pretrain": config, "train": train}
    with startup.output_dir_lock(FLAGS.output_dir, strategy, PROGRAM):
        with startup.usage_errors():  # the pool, then the stage's record: before any work
            pool = inputs.check_splits(data, {"--pool_split": config.pool_split})["--pool_split"]
            split_heldout(pool, config.heldout, config.heldout_seed)
            fingerprint = fingerprints.flatten(**sections)
            fingerprint[f"{fingerprints.DATA_IDENTITY}.pool"] = identity.split_identity(
                data, config.pool_split)
            stage = cells.Stage(FLAGS.output_dir, fingerprint, PRETRAIN_JSON,
                                default=fingerprints.defaults(**sections))
            cells.check([stage], FLAGS.output_dir, train.overwrite)
        runner = Runner(strategy, train.overwrite, PROGRAM)
        used = startup.used_flags(FLAGS)

        def make():
            return pretrain_backbone(data, config, train, FLAGS.output_dir, strategy,
                                     record={"flags": used}, pool=pool)
        result = startup.run_single_stage(runner, stage, PROGRAM, used, make)
        logging.info("pretrained %s on %s[%s] (%d items, %d steps): held-out top-1 %.4f in %.1f "
                     "s -> %s/pretrain.json", result["backbone"], result["pool"],
                     result["pool_split"], result["train_items"], result["train_steps"],
                     result["heldout_top1"], result["seconds"], FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
