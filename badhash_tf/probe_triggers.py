"""Can a victim learn any clean-label trigger this invisible? Poisons the target class with
fixed additive triggers at a PSNR budget (noise, colour tint, a universal and per-image
adversarial perturbations against the surrogate; see attack/probes.py), trains a victim on
each poisoned set and measures it in the pipeline's harness.

python -m badhash_tf.probe_triggers --flagfile=flags/digits.cfg --output_dir=DIR [--psnr=30]
Writes DIR/probes.json and DIR/probes.md; DIR/probe_<name>/ holds each poisoned set and
victim. The surrogate and the reference victim are those of a pipeline run in DIR, if any.
"""

from absl import app, flags, logging

from badhash_tf import cli_flags, console, fingerprints
from badhash_tf.attack import budgeted, experiment, probes
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
flags.DEFINE_list("probes", list(budgeted.PROBES),
                  f"Triggers to probe: {', '.join(budgeted.PROBES)}.")
flags.DEFINE_float("psnr", 30.0, "PSNR budget (dB): each perturbation's RMSE is at most "
                   "10^(-psnr/20).")
flags.DEFINE_string("output_dir", None, "Directory for the probes (may be a pipeline run's).")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli_flags.start_program(argv, FLAGS)
    unknown = set(FLAGS.probes) - set(budgeted.PROBES)
    if unknown:
        raise app.UsageError(f"--probes: unknown {', '.join(sorted(unknown))}; choose from "
                             f"{', '.join(budgeted.PROBES)}")
    if FLAGS.psnr <= 0:
        raise app.UsageError(f"--psnr={FLAGS.psnr} must be > 0")
    cli_flags.check_backbone_weights(FLAGS)
    config = cli_flags.experiment_config(FLAGS, baselines=())
    strategy = distribute.make_strategy(config.train.strategy, config.train.logical_cpus)
    cli_flags.check_replicas(FLAGS, strategy)
    with cli_flags.output_dir_lock(FLAGS.output_dir, strategy):
        try:  # every split the run reads, before any work
            experiment.check_data(config)
        except (ValueError, FileNotFoundError) as e:
            raise app.UsageError(str(e)) from None
        try:
            result = probes.run_probes(config, FLAGS.probes, FLAGS.psnr, FLAGS.output_dir,
                                       strategy, record={"flags": cli_flags.used_flags(FLAGS)})
        except fingerprints.StageMismatchError as e:  # (before any work)
            raise app.UsageError(str(e)) from None
        for row in result["probes"]:
            logging.info("probe %s: t-MAP %.4f (clean victim %.4f), PSNR %.2f dB, SSIM %.4f",
                         row["probe"], row["t_map"], row["t_map_clean_victim"], row["psnr"],
                         row["ssim"])
        logging.info("-> %s/probes.md", FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
