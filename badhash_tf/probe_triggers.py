"""Can a victim learn any clean-label trigger this invisible? Poisons the target class with
fixed additive triggers at a PSNR budget (noise, colour tint, a universal and per-image
adversarial perturbations against the surrogate, SIG, Narcissus; see attack/probes.py),
trains a victim on each poisoned set and measures it as the pipeline measures its attacks.

python -m badhash_tf.probe_triggers --preset=digits --output_dir=DIR [--psnr=30]
Writes DIR/probes.json and DIR/probes.md; DIR/probe_<name>/ holds each poisoned set and
victim. The surrogate and the reference victim are those of a pipeline run in DIR, if any.
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-probe")  # before TensorFlow loads

from absl import flags, logging

from badhash_tf import presets, registry
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.console import run_program
from badhash_tf.engine.stages import Runner
from badhash_tf.grids import trigger_probes
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
flags.DEFINE_list("probes", list(registry.attacks(role="probe")),
                  f"Triggers to probe: {', '.join(registry.attacks(role='probe'))}.")
flags.DEFINE_float("psnr", 30.0, "PSNR budget (dB): each perturbation's RMSE is at most "
                   "10^(-psnr/20).")
flags.DEFINE_string("output_dir", None, "Directory for the probes (may be a pipeline run's).")
flags.mark_flag_as_required("output_dir")
presets.define_flag(module_name=__name__)  # last: it lists the presets these flags take
FLAGS = flags.FLAGS
# probes share the pipeline's run directories (its surrogate and reference victim)
PROGRAM = "badhash_tf.pipeline"


def main(argv):
    startup.start_program(argv, FLAGS)
    with startup.usage_errors():
        trigger_probes.check_probes(FLAGS.probes)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    startup.check_replicas(FLAGS, strategy)
    with startup.output_dir_lock(FLAGS.output_dir, strategy, PROGRAM):
        config = configs.experiment_config(FLAGS, configs.resolve_backbones(FLAGS),
                                           baselines=())
        with startup.usage_errors():  # every split, size and stage, once, before any work
            plan = trigger_probes.make_probe_plan(config, FLAGS.probes, FLAGS.psnr,
                                                  FLAGS.output_dir)
        result = trigger_probes.run_probes(
            plan, Runner(strategy, config.train.overwrite, PROGRAM), FLAGS.psnr,
            record={"flags": startup.used_flags(FLAGS)})
        for row in result["probes"]:
            logging.info("probe %s: t-MAP %.4f (clean victim %.4f), PSNR %.2f dB, SSIM %.4f",
                         row["probe"], row["t_map"], row["t_map_clean_victim"], row["psnr"],
                         row["ssim"])
        logging.info("-> %s/probes.md", FLAGS.output_dir)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
