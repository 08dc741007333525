"""Trains and evaluates a deep-hashing model (a victim or the attacker's surrogate).

python -m badhash_tf.train_victim --preset=digits_victim --output_dir=DIR
Writes checkpoints, summaries/, flags.json, codes.npz, metrics.json, metrics.md and
backbone.weights.h5 (the trained backbone, reusable as --backbone_weights) to DIR.
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-train-victim")  # before TensorFlow loads

from absl import flags, logging

from badhash_tf import fingerprints, presets
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.config import DataConfig, RetrievalConfig, TrainConfig
from badhash_tf.console import run_program
from badhash_tf.engine import cells
from badhash_tf.engine.plan import DataView, SPLIT_FLAGS, check_batch
from badhash_tf.engine.stages import Runner
from badhash_tf.training import distribute
from badhash_tf.training.victim import METRICS, train_and_evaluate

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
flags.DEFINE_string("output_dir", None, "Directory for checkpoints, codes and metrics.")
flags.mark_flag_as_required("output_dir")
presets.define_flag(module_name=__name__)  # last: it lists the presets these flags take
FLAGS = flags.FLAGS
PROGRAM = "badhash_tf.train_victim"


def main(argv):
    startup.start_program(argv, FLAGS)
    train = configs.from_flags(TrainConfig, FLAGS)
    strategy = distribute.make_strategy(train.strategy, train.logical_cpus)
    startup.check_replicas(FLAGS, strategy)
    used = startup.used_flags(FLAGS)
    data, retrieval = configs.from_flags(DataConfig, FLAGS), configs.from_flags(
        RetrievalConfig, FLAGS)
    with startup.output_dir_lock(FLAGS.output_dir, strategy, PROGRAM):
        hashing = configs.hashing_config(FLAGS, configs.resolve_backbones(FLAGS))
        with startup.usage_errors():  # every split read, then the stage's record
            view = DataView(data, retrieval)
            check_batch("--global_batch_size", train.global_batch_size, view.train, retrieval)
            fingerprint = fingerprints.flatten(data=data, hashing=hashing, train=train,
                                               retrieval=retrieval)
            for flag in SPLIT_FLAGS:
                key = f"{fingerprints.DATA_IDENTITY}.{flag[2:].split('_')[0]}"
                fingerprint[key] = view.identity(flag)
            stage = cells.Stage(FLAGS.output_dir, fingerprint, METRICS, default=
                                fingerprints.defaults(data=data, hashing=hashing, train=train,
                                                      retrieval=retrieval))
            cells.check([stage], FLAGS.output_dir, train.overwrite)
        runner = Runner(strategy, train.overwrite, PROGRAM)

        def make():
            return train_and_evaluate(data, hashing, train, retrieval, FLAGS.output_dir,
                                      strategy, splits=view.splits, record={"flags": used},
                                      save_backbone=True)[1]
        metrics = startup.run_single_stage(runner, stage, PROGRAM, used, make)
        logging.info("MAP %.4f  MAP@%d %.4f  P@%d %.4f  (%d steps, %.1f s) -> %s/metrics.json",
                     metrics["map"], metrics["k"], metrics["map_at_k"], metrics["precision_k"],
                     metrics["precision_at_k"], metrics["train_steps"], metrics["seconds"],
                     FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__, startup.parse_victim_flags)


if __name__ == "__main__":
    run()
