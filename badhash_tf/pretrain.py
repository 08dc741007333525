"""Pretrains a hashing backbone as a classifier on a public pool, for --pretrained_backbone
(the paper's surrogate and victims fine-tune one shared ImageNet-pretrained backbone).

python -m badhash_tf.pretrain --flagfile=flags/pretrain_fashion.cfg --output_dir=DIR
Writes DIR/backbone.weights.h5, pretrain.json (pool, split, epochs, held-out top-1),
pretrain.md, flags.json, checkpoints and summaries/. A rerun resumes or reuses it; one with
other flags stops, naming them (--overwrite moves the old one aside).
"""

from absl import app, flags, logging

from badhash_tf import cli_flags, console, fingerprints, io_utils
from badhash_tf.data import inputs
from badhash_tf.data.inputs import DataConfig
from badhash_tf.training import distribute
from badhash_tf.training.loop import TrainConfig
from badhash_tf.training.pretrain import PretrainConfig, pretrain_backbone, split_heldout

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_pretrain_flags()
flags.DEFINE_string("output_dir", None, "Directory of the pretrained backbone.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli_flags.start_program(argv, FLAGS)
    data, config = cli_flags.from_flags(DataConfig, FLAGS), cli_flags.from_flags(
        PretrainConfig, FLAGS)
    train = cli_flags.from_flags(TrainConfig, FLAGS)
    strategy = distribute.make_strategy(train.strategy, train.logical_cpus)
    cli_flags.check_replicas(FLAGS, strategy)
    sections = {"data": data, "pretrain": config, "train": train}
    with cli_flags.output_dir_lock(FLAGS.output_dir, strategy):
        try:  # the pool, then a rerun over a backbone made with other flags: before any work
            pool = inputs.check_splits(data, {"--pool_split": config.pool_split})["--pool_split"]
            split_heldout(pool, config.heldout, config.heldout_seed)
            fingerprints.check_single_stage(FLAGS.output_dir, train.overwrite,
                                            distribute.is_chief(strategy), **sections)
        except (ValueError, FileNotFoundError) as e:
            raise app.UsageError(str(e)) from None
        distribute.barrier(strategy)
        used = cli_flags.used_flags(FLAGS)
        if distribute.is_chief(strategy):
            io_utils.write_json(f"{FLAGS.output_dir}/flags.json", used)
        result = pretrain_backbone(data, config, train, FLAGS.output_dir, strategy,
                                   record={"flags": used})
        logging.info("pretrained %s on %s[%s] (%d items, %d steps): held-out top-1 %.4f in %.1f "
                     "s -> %s/pretrain.json", result["backbone"], result["pool"],
                     result["pool_split"], result["train_items"], result["train_steps"],
                     result["heldout_top1"], result["seconds"], FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
