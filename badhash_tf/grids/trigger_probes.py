"""Trigger probes: every probe attack (registry role "probe": noise, tint, universal, the
PGDs, SIG, Narcissus) under one PSNR budget, each poisoning the target class on one
seed's shared stages (those of a pipeline run in the same directory are reused), to ask
whether a victim can learn *any* clean-label trigger that invisible on a dataset,
independently of how well the generator trains. Each probe is a cell in probe_<name>/.
"""

import time

from badhash_tf import io_utils, registry
from badhash_tf.attack import triggers
from badhash_tf.engine.experiment import run_seed
from badhash_tf.engine.plan import make_plan
from badhash_tf.eval.codes import code_alignment

COLUMNS = ("probe", "t_map", "t_map_clean_victim", "backdoor_gain", "t_map_untriggered",
           "clean_map", "psnr", "psnr_min", "ssim", "ssim_min", "linf_255", "surrogate_alignment")


def check_probes(names):
    """Raises ValueError naming --probes for an unknown probe."""
    unknown = [n for n in names if n not in registry.attacks(role="probe")]
    if unknown:
        raise ValueError(f"--probes: unknown {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(registry.attacks(role='probe'))}")


def make_probe_plan(config, names, psnr, output_dir):
    """The probes' cells at `psnr` dB in output_dir/probe_<name>, checked before any work."""
    check_probes(names)
    if psnr <= 0:
        raise ValueError(f"--psnr={psnr} must be > 0")
    return make_plan(config, output_dir, names, budgets=[psnr],
                     place=lambda name, budget: f"probe_{name}", flag="--probes")


def _alignment(ctx, images):
    """Mean agreement of the surrogate's relaxed code of `images` with the target class's
    code (1 = all bits)."""
    return float(code_alignment(ctx.surrogate, images, ctx.anchor(),
                                ctx.config.gan.relaxed_logit_scale).numpy().mean())


def run_probes(plan, runner, psnr, record=None):
    """Every probe cell, then probes.json and probes.md (chief) -> the result dict."""
    start = time.time()
    measure = lambda ctx, trigger: {"surrogate_alignment": _alignment(
        ctx, triggers.apply(trigger.poison, ctx.setting.evaluation.queries[0]))}
    setting, records = run_seed(plan, runner, measure=measure)
    rows = [{"probe": records[c.directory]["attack"], **records[c.directory]["figures"]}
            for c in plan.attacks]
    result = {"psnr_budget": psnr, "target_label": plan.target, "poison_count": plan.count,
              "poison_rate": plan.count / (plan.data.train.size + plan.count),
              "clean_map_reference": setting.reference_metrics["map_at_k"],
              "t_map_untriggered_reference": setting.evaluation.untriggered_reference,
              "surrogate_alignment_clean_queries": float(code_alignment(
                  setting.surrogate, setting.evaluation.queries[0], setting.anchor(),
                  plan.config.gan.relaxed_logit_scale).numpy().mean()),
              "probes": rows,
              "seconds": {**runner.clock.seconds, "total": round(time.time() - start, 2)},
              **(record or {})}
    if runner.chief:
        io_utils.write_json(f"{plan.layout.root}/probes.json", result)
        io_utils.write_text(f"{plan.layout.root}/probes.md", markdown(result))
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

