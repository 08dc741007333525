"""The BadHash attack end to end on one dataset: surrogate, LabCLN, trigger generator,
clean-label poisoning, backdoored victim, baselines, evaluation and report.

python -m badhash_tf.pipeline --preset=digits --output_dir=DIR
python -m badhash_tf.pipeline --preset=digits --seeds=0,1,2 --output_dir=DIR
Writes DIR/report.json, report.md, samples.png, hash_space.png (with --seeds: one run per
seed in DIR/seed_N and DIR/summary.json, summary.md, means with 95% intervals). A rerun
reuses every finished stage; one with other flags or data stops, naming the stages.
"""

from badhash_tf.cli import early

early.refuse_held_run_dir(__name__, "badhash-pipeline")  # before TensorFlow loads

from absl import flags, logging

from badhash_tf import io_utils, presets
from badhash_tf.cli import configs, startup
from badhash_tf.cli import flags as cli_flags
from badhash_tf.console import run_program
from badhash_tf.engine import cells, plan as planning
from badhash_tf.engine.experiment import move_reports_aside, run_pipeline
from badhash_tf.engine.layout import RunLayout
from badhash_tf.engine.stages import Runner
from badhash_tf.render import attack_report
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
presets.define_flag(module_name=__name__)  # last: it lists the presets these flags take
FLAGS = flags.FLAGS
PROGRAM = "badhash_tf.pipeline"


def main(argv):
    startup.start_program(argv, FLAGS)
    seeds = startup.parse_seeds(FLAGS.seeds)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.logical_cpus)
    startup.check_replicas(FLAGS, strategy)
    layout = RunLayout(FLAGS.output_dir)
    with startup.output_dir_lock(FLAGS.output_dir, strategy, PROGRAM):
        backbones = configs.resolve_backbones(FLAGS)
        config = configs.experiment_config(FLAGS, backbones)
        with startup.usage_errors():  # every split, size and stage, once, before any work
            plans, data = {}, None
            for seed in seeds or [None]:
                out = layout.seed(seed).root if seed is not None else FLAGS.output_dir
                seeded = config if seed is None else config.with_seed(seed)
                plans[seed] = planning.make_plan(seeded, out, planning.pipeline_attacks(
                    seeded), data=data)
                data = plans[seed].data
        runner = Runner(strategy, config.train.overwrite, PROGRAM)
        if runner.chief:
            if config.train.overwrite and any(
                    d.state == cells.MISMATCH for p in plans.values()
                    for d in p.decisions.values()):
                move_reports_aside(layout)
            io_utils.write_json(layout.flags_json, startup.used_flags(FLAGS))
        results = {}
        for seed, plan in plans.items():
            results[seed] = run_pipeline(plan, runner)
            if runner.chief:
                attack_report.write_all(plan.layout, results[seed])
            _log(results[seed], plan.layout)
        if not seeds:
            if runner.chief and FLAGS.export_base:
                for name, path in export.export_run(FLAGS.output_dir, FLAGS.export_base).items():
                    logging.info("exported %s -> %s", name, path)
            return
        if runner.chief:
            data = attack_report.summary(list(results.values()))
            io_utils.write_json(layout.summary_json, data)
            io_utils.write_text(layout.summary_md, attack_report.summary_markdown(data))
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
                 result["this_run"].get("total", 0.0), layout.report_md)


def run():
    """The console script's entry point (pyproject.toml [project.scripts])."""
    run_program(main, __doc__, __name__)


if __name__ == "__main__":
    run()
