"""Trains and evaluates a deep-hashing model (a victim or the attacker's surrogate).

python -m badhash_tf.train_victim --flagfile=flags/digits_victim.cfg --output_dir=DIR
Writes checkpoints, summaries/, flags.json, codes.npz, metrics.json, metrics.md and
backbone.weights.h5 (the trained backbone, reusable as --backbone_weights) to DIR.
"""

from absl import app, flags, logging

from badhash_tf import cli_flags, console, fingerprints, io_utils
from badhash_tf.data import inputs
from badhash_tf.data.inputs import DataConfig
from badhash_tf.training import distribute
from badhash_tf.attack.victim import RetrievalConfig, train_and_evaluate
from badhash_tf.training.loop import TrainConfig

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
flags.DEFINE_string("output_dir", None, "Directory for checkpoints, codes and metrics.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli_flags.start_program(argv, FLAGS)
    cli_flags.check_backbone_weights(FLAGS)
    train_config = cli_flags.from_flags(TrainConfig, FLAGS)
    strategy = distribute.make_strategy(train_config.strategy, train_config.logical_cpus)
    cli_flags.check_replicas(FLAGS, strategy)
    used = cli_flags.used_flags(FLAGS)
    data, hashing = cli_flags.from_flags(DataConfig, FLAGS), cli_flags.hashing_config(FLAGS)
    retrieval = cli_flags.from_flags(RetrievalConfig, FLAGS)
    with cli_flags.output_dir_lock(FLAGS.output_dir, strategy):
        try:  # every split read, then a rerun over a run made with other flags: before any work
            inputs.check_splits(data, {"--train_split": retrieval.train_split,
                                       "--query_split": retrieval.query_split,
                                       "--database_split": retrieval.database_split})
            fingerprints.check_single_stage(
                FLAGS.output_dir, train_config.overwrite, distribute.is_chief(strategy),
                data=data, hashing=hashing, train=train_config, retrieval=retrieval)
        except (ValueError, FileNotFoundError) as e:  # (StageMismatchError is a ValueError)
            raise app.UsageError(str(e)) from None
        distribute.barrier(strategy)
        if distribute.is_chief(strategy):
            io_utils.write_json(f"{FLAGS.output_dir}/flags.json", used)
        _, metrics, _ = train_and_evaluate(data, hashing, train_config, retrieval,
                                           FLAGS.output_dir, strategy, record={"flags": used})
        logging.info("MAP %.4f  MAP@%d %.4f  P@%d %.4f  (%d steps, %.1f s) -> %s/metrics.json",
                     metrics["map"], metrics["k"], metrics["map_at_k"], metrics["precision_k"],
                     metrics["precision_at_k"], metrics["train_steps"], metrics["seconds"],
                     FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__, cli_flags.parse_victim_flags)


if __name__ == "__main__":
    run()
