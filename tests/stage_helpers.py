"""Stages of a run built without data (a fixed data identity), and their records written
as a finished run leaves them, for the tests of the stage decisions."""

import os

from badhash_tf.engine import cells, plan
from badhash_tf.engine.layout import RunLayout


class FixedData:
    """Stands for a plan.DataView: the same identity for every split, or `identities`."""

    def __init__(self, identities=None):
        self.identities = identities or {}

    def identity(self, flag):
        return self.identities.get(flag, {"dataset": "fixed"})

    def other(self, data, spec, flag):
        return None, {"dataset": "fixed other"}


def stages(config, root, attacks=("badhash", "patch"), data=None):
    """{directory relative to root: Stage} of a run's shared stages and attacks."""
    layout, data = RunLayout(str(root)), data or FixedData()
    found = list(plan.shared_stages(config, layout, data).values())
    found += [plan.attack_stage(plan.cell_config(config, name), name, layout.variant(name),
                                data) for name in attacks]
    return {os.path.relpath(s.directory, str(root)): s for s in found}


def record(found):
    """Each stage's directory made, with its record and a file in it (as a run leaves)."""
    for stage in found.values():
        os.makedirs(os.path.join(stage.directory, "ckpt"), exist_ok=True)
        cells.write_record(stage)
