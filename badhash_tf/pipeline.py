"""The BadHash attack end to end on one dataset: surrogate, LabCLN, trigger generator,
clean-label poisoning, backdoored victim, baselines, evaluation and report.

python -m badhash_tf.pipeline --flagfile=flags/digits.cfg --output_dir=DIR
python -m badhash_tf.pipeline --flagfile=flags/digits.cfg --seeds=0,1,2 --output_dir=DIR
Writes DIR/report.json, report.md, samples.png, hash_space.png (with --seeds: one run per
seed in DIR/seed_N and DIR/summary.json, summary.md). A rerun skips finished stages.
"""

from absl import app, flags, logging

from badhash_tf import cli_flags, console, io_utils
from badhash_tf.attack import experiment, report
from badhash_tf.attack.layout import RunLayout
from badhash_tf.attack.experiment import run_experiment
from badhash_tf.serving import export
from badhash_tf.training import distribute

cli_flags.define_data_flags()
cli_flags.define_train_flags()
cli_flags.define_hashing_flags()
cli_flags.define_attack_flags()
flags.DEFINE_list("seeds", [], "Run once per seed (each into DIR/seed_N) and summarise.")
flags.DEFINE_string("export_base", "export/models", "Last stage: export the generator and "
                    "the backdoored victim's hash encoder for TF Serving here ('' = skip; "
                    "single-seed runs only).")
flags.DEFINE_string("output_dir", None, "Directory for every stage and the report.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    cli_flags.start_program(argv, FLAGS)
    seeds = cli_flags.parse_seeds(FLAGS.seeds)
    cli_flags.check_backbone_weights(FLAGS)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    cli_flags.check_replicas(FLAGS, strategy)
    chief = distribute.is_chief(strategy)
    layout = RunLayout(FLAGS.output_dir)
    config = cli_flags.experiment_config(FLAGS)  # checks the attack's flags before any work
    with cli_flags.output_dir_lock(FLAGS.output_dir, strategy):
        try:  # every split, and every seed's stages against its record, before any work
            for seed in seeds or [None]:
                out = layout.seed(seed).root if seed is not None else FLAGS.output_dir
                experiment.check_run(cli_flags.experiment_config(FLAGS, seed), out, strategy)
        except (ValueError, FileNotFoundError) as e:  # stages made with other flags, bad data
            raise app.UsageError(str(e)) from None
        if chief:
            io_utils.write_json(layout.flags_json, cli_flags.used_flags(FLAGS))
        if not seeds:
            result = run_experiment(config, FLAGS.output_dir, strategy)
            _log(result, layout)
            if chief and FLAGS.export_base:
                exported = export.export_run(FLAGS.output_dir, FLAGS.export_base)
                for name, path in exported.items():
                    logging.info("exported %s -> %s", name, path)
            return
        results = []
        for seed in seeds:
            out = layout.seed(seed)
            results.append(run_experiment(cli_flags.experiment_config(FLAGS, seed), out.root,
                                          strategy))
            _log(results[-1], out)
        if chief:
            data = report.summary(results)
            io_utils.write_json(layout.summary_json, data)
            io_utils.write_text(layout.summary_md, report.summary_markdown(data))
            logging.info("mean over seeds %s: t-MAP %.4f (clean victim %.4f), clean MAP %.4f "
                         "(reference %.4f), PSNR %.2f dB, SSIM %.4f -> %s",
                         ",".join(map(str, seeds)), data["mean"]["t_map"],
                         data["mean"]["t_map_clean_victim"], data["mean"]["clean_map"],
                         data["mean"]["clean_map_reference"], data["mean"]["psnr"],
                         data["mean"]["ssim"], layout.summary_md)


def _log(result, layout):
    logging.info("t-MAP %.4f (clean victim %.4f), clean MAP %.4f (reference %.4f), PSNR %.2f "
                 "dB, SSIM %.4f, %d poisoned (%.1f%%), %.0f s -> %s",
                 result["t_map"], result["t_map_clean_victim"], result["clean_map"],
                 result["clean_map_reference"], result["psnr"], result["ssim"],
                 result["poison_count"], 100 * result["poison_rate"],
                 result["seconds"]["total"], layout.report_md)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    console.run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
