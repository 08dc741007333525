"""Trigger probes: every fixed trigger of `budgeted` (noise, tint, universal, PGD toward
or away, SIG, Narcissus) under one PSNR budget, each poisoning the target class of a
pipeline run's shared stages, to ask whether a victim can learn *any* clean-label trigger
that invisible on a dataset, independently of how well the generator trains.
"""

import time

from badhash_tf import io_utils
from badhash_tf.attack import experiment, triggers
from badhash_tf.attack.budgeted import make_probe
from badhash_tf.attack.layout import RunLayout
from badhash_tf.eval import codes
from badhash_tf.eval.codes import code_alignment
from badhash_tf.training import distribute

COLUMNS = ("probe", "t_map", "t_map_clean_victim", "backdoor_gain", "t_map_untriggered",
           "clean_map", "psnr", "psnr_min", "ssim", "ssim_min", "linf_255", "surrogate_alignment")


def run_probes(config, names, psnr, output_dir, strategy, record=None):
    """Per probe: poisons the target class, trains a victim on the poisoned split and
    measures it with the pipeline's harness (surrogate and reference victim shared, and
    reused from a pipeline run in `output_dir`). Writes probes.json and probes.md (chief)
    -> the result dict. `record` (e.g. the flags) is stored as is."""
    start, clock, layout = time.time(), experiment.StageClock(), RunLayout(output_dir)
    experiment.check_stages(layout.root, experiment.stage_fingerprints(
        config, layout, [f"probe_{name}" for name in names], extra={"probe.psnr": psnr}),
        config, strategy)
    setting = experiment.prepare(config, layout, strategy, clock)
    images, labels = experiment.split_arrays(setting.train_split)
    scale = config.gan.relaxed_logit_scale
    class_code = codes.class_anchor(setting.surrogate, images, labels, setting.target)
    queries = setting.evaluation.queries[0]
    alignment = lambda x: float(code_alignment(setting.surrogate, x, class_code,
                                               scale).numpy().mean())
    rows = []
    for name in names:
        trigger = clock.run(f"{name}/trigger", make_probe, name, psnr, setting.surrogate,
                            images, labels, setting.target, scale, config.train.seed)
        figures, _ = clock.run(f"{name}/poison_and_victim", experiment.attack_variant,
                               f"probe_{name}", config, trigger, setting, layout, strategy)
        rows.append({"probe": name, **figures,
                     "surrogate_alignment": alignment(triggers.apply(trigger, queries))})
    result = {"psnr_budget": psnr, "target_label": setting.target,
              "poison_count": setting.count,
              "poison_rate": setting.count / (setting.train_split.size + setting.count),
              "clean_map_reference": setting.reference_metrics["map_at_k"],
              "t_map_untriggered_reference": setting.evaluation.untriggered_reference,
              "surrogate_alignment_clean_queries": alignment(queries), "probes": rows,
              "seconds": {**clock.seconds, "total": round(time.time() - start, 2)},
              **(record or {})}
    if distribute.is_chief(strategy):
        io_utils.write_json(f"{output_dir}/probes.json", result)
        io_utils.write_text(f"{output_dir}/probes.md", markdown(result))
    return result


def markdown(result):
    """probes.json -> probes.md: one row per probe."""
    return "\n".join([
        f"# Trigger probes at PSNR >= {result['psnr_budget']:g} dB", "",
        f"Target label {result['target_label']}; {result['poison_count']} poisoned copies "
        f"({100 * result['poison_rate']:.1f}%); reference victim MAP "
        f"{result['clean_map_reference']:.4f}, its t-MAP on untriggered queries "
        f"{result['t_map_untriggered_reference']:.4f}. `surrogate_alignment`: mean agreement "
        f"of the surrogate's relaxed code of triggered queries with the target class's code "
        f"(untriggered queries: {result['surrogate_alignment_clean_queries']:.4f}; 1 = all "
        "bits).", "",
        io_utils.markdown_table(result["probes"], COLUMNS)])
