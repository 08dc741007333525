"""The clean control ("none (clean)"): no trigger and no backdoor. Its victim is the seed's
clean reference victim, its queries the clean non-target queries, its "poisoned copies"
the very target-class training images every attack copies, unchanged. Scored and defended
like an attack, it is the row every detector is read beside: an inspection's AUROC on
these copies is what it gives the target class's own images (no trigger in them), Neural
Cleanse's flagged labels what it flags in a model without a backdoor, STRIP's AUROC what
it gives clean queries, a transform's t-MAP what the clean model retrieves anyway.
"""

import os

from badhash_tf import registry
from badhash_tf.training import distribute

NAME = "clean"


def control(ctx):
    """The control cell's figures and artifacts: the reference victim scored on the clean
    queries (backdoor_gain 0 by construction), its copies written unchanged to
    <cell>/poison, its victim a link to the reference victim's directory."""
    setting = ctx.setting
    originals = setting.target_images[0]
    if distribute.is_chief(ctx.strategy) and not os.path.lexists(ctx.path("victim")):
        reference = setting.plan.shared["reference_victim"].directory
        os.symlink(os.path.relpath(reference, ctx.directory), ctx.path("victim"))
    ctx.write_copies(lambda: originals)  # (unchanged; after the link: one barrier for both)
    evaluation, queries = setting.evaluation, setting.evaluation.queries[0]
    metrics = {"t_map_best": None, **setting.reference_metrics}
    figures, space = evaluation.figures(queries, setting.reference, setting.reference_codes,
                                        metrics)
    figures.update(query_amplification=1.0, control=True)
    samples = (originals[:ctx.config.attack.samples], originals[:ctx.config.attack.samples])
    return figures, {"samples": samples, "space": space, "triggered": queries,
                     "query_labels": evaluation.queries[1]}


registry.register_attack(registry.AttackSpec(
    NAME, "none (clean): the clean reference victim, no trigger: the control every defense "
    "and detector is read beside", control=control, amplified=False,
    roles=frozenset({"bench"}), order=90))
